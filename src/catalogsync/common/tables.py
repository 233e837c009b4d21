"""Table names as they reach SQL: the products table and the bookkeeping tables beside it.

Identifiers cannot be bind parameters, so every table name reaches SQL text through
:class:`Tables`, which accepts only what ``validate_table_name`` accepts and quotes it anyway.
Shared by the maintainer, which owns these tables, and the fetcher, which reads an incremental
run's watermark from the runs table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from catalogsync.common.config import IDENTIFIER, validate_table_name
from catalogsync.common.errors import PermanentError


def quote_ident(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise PermanentError(f"{name!r} is not an identifier this project will put into SQL")
    return f'"{name}"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def split_table(value: str) -> tuple[str, str]:
    """``schema``, ``table`` of a configured name, rejecting anything but plain identifiers."""
    try:
        qualified = validate_table_name(value)
    except ValueError as exc:
        raise PermanentError(str(exc), reason="InvalidConfiguration") from None
    schema, name = qualified.split(".")
    return schema, name


@dataclass(frozen=True)
class Tables:
    """The quoted names of the products table and its bookkeeping tables."""

    schema: str
    name: str

    @classmethod
    def for_table(cls, value: str) -> Tables:
        schema, name = split_table(value)
        return cls(schema, name)

    @property
    def qualified(self) -> str:
        """Unquoted ``schema.table``: the key of this table in the bookkeeping tables."""
        return f"{self.schema}.{self.name}"

    @property
    def products(self) -> str:
        return self.bookkeeping(self.name)

    def bookkeeping(self, name: str) -> str:
        """``"schema"."name"``: the one way a table name enters SQL."""
        return f"{quote_ident(self.schema)}.{quote_ident(name)}"

    @property
    def runs(self) -> str:
        return self.bookkeeping("catalogsync_runs")

    @property
    def chunks(self) -> str:
        return self.bookkeeping("catalogsync_chunks")

    @property
    def rejects(self) -> str:
        return self.bookkeeping("catalogsync_rejects")

    @property
    def changes(self) -> str:
        return self.bookkeeping("catalogsync_changes")

    @property
    def migrations(self) -> str:
        return self.bookkeeping("catalogsync_migrations")

    def render(self, sql: str) -> str:
        """Fill a migration's ``{{placeholders}}``; an unknown placeholder is a bug, not SQL."""
        values = {
            "schema": quote_ident(self.schema),
            "table": self.products,
            "table_literal": quote_literal(self.products),
            "index_prefix": quote_literal(self.name[:40] + "_"),
        }

        def fill(match: re.Match[str]) -> str:
            return values[match.group(1)]

        return re.sub(r"\{\{(\w+)\}\}", fill, sql)
