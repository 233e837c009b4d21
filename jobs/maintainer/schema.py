"""The database objects the maintainer owns, and the migrations that create or upgrade them.

Identifiers cannot be bind parameters, so every table name reaches SQL text through
:class:`Tables`, which accepts only what ``validate_table_name`` accepts and quotes it anyway.
Migrations are numbered SQL files in ``migrations/``, each applied once per target table, in its
own transaction, under a transaction-level advisory lock so that two maintainers starting together
cannot apply the same one twice. Every statement is also written to be harmless when repeated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

from catalogsync.common.tables import Tables, quote_ident

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
LOCK_CLASS = 0x63_73_79_6E
"""First key of every advisory lock the maintainer takes (``csyn``); the second names the table."""
MIGRATION_LOCK = 0
SUPABASE_ROLES = ("service_role", "authenticated")
POLICY = "catalogsync_service_role_all"


def migration_files() -> list[tuple[int, str, Path]]:
    """The migrations in order; two files with one number are a bug, since the second would be
    recorded as applied without ever running."""
    found: list[tuple[int, str, Path]] = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        number, _, title = path.stem.partition("_")
        found.append((int(number), title, path))
    numbers = [number for number, _, _ in found]
    duplicated = sorted({number for number in numbers if numbers.count(number) > 1})
    if duplicated:
        raise RuntimeError(f"migrations share a number: {duplicated}")
    return found


SYNC_COLUMNS = ("content_hash", "deleted_at")
"""Columns of the project's own that the maintainer reads back (added by migration 002)."""


async def table_exists(conn: asyncpg.Connection, tables: Tables) -> bool:
    found = await conn.fetchval("SELECT to_regclass($1)", tables.products)
    return found is not None


async def has_sync_columns(conn: asyncpg.Connection, tables: Tables) -> bool:
    """Whether the table has been upgraded; a dry run may meet one still in the original shape."""
    found = await conn.fetchval(
        """SELECT count(*) FROM pg_attribute
           WHERE attrelid = $1::regclass AND attname = ANY($2::text[]) AND NOT attisdropped""",
        tables.products,
        list(SYNC_COLUMNS),
    )
    return bool(found == len(SYNC_COLUMNS))


async def ensure_schema(conn: asyncpg.Connection, tables: Tables) -> None:
    """Create the schema only when it is missing.

    PostgreSQL checks the database's CREATE privilege before it looks whether the schema exists,
    so even ``CREATE SCHEMA IF NOT EXISTS`` fails for a least-privilege user whose schema is there.
    """
    schema = quote_ident(tables.schema)
    if await conn.fetchval("SELECT to_regnamespace($1)", schema) is None:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")


async def migrate(conn: asyncpg.Connection, tables: Tables) -> list[int]:
    """Apply the migrations ``tables`` has not had yet; returns the numbers applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, MIGRATION_LOCK)
        await ensure_schema(conn, tables)
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {tables.migrations} (
                    table_name text NOT NULL,
                    version integer NOT NULL,
                    title text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (table_name, version))"""
        )
    for version, title, path in migration_files():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, MIGRATION_LOCK)
            done = await conn.fetchval(
                f"SELECT true FROM {tables.migrations} WHERE table_name = $1 AND version = $2",
                tables.qualified,
                version,
            )
            if done:
                continue
            await conn.execute(tables.render(path.read_text()))
            await conn.execute(
                f"INSERT INTO {tables.migrations} (table_name, version, title) VALUES ($1, $2, $3)",
                tables.qualified,
                version,
                title,
            )
            applied.append(version)
            log.info("applied migration %03d %s to %s", version, title, tables.qualified)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, MIGRATION_LOCK)
        await ensure_row_level_security(conn, tables)
    return applied


async def on_supabase(conn: asyncpg.Connection) -> bool:
    """Supabase is recognised by its API roles; elsewhere row-level security is left alone."""
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", list(SUPABASE_ROLES)
    )
    return bool(count == len(SUPABASE_ROLES))


async def ensure_row_level_security(conn: asyncpg.Connection, tables: Tables) -> bool:
    """On Supabase, keep every table behind RLS with one policy that admits the service role.

    Supabase exposes tables of ``public`` through its REST API to the ``anon`` and
    ``authenticated`` roles; with RLS on and only a ``service_role`` policy, they see nothing.
    """
    if not await on_supabase(conn):
        return False
    for table in (tables.products, tables.runs, tables.chunks, tables.rejects, tables.changes):
        await conn.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        has_policy = await conn.fetchval(
            """SELECT true FROM pg_policy p JOIN pg_roles r ON r.oid = ANY(p.polroles)
               WHERE p.polrelid = $1::regclass AND r.rolname = 'service_role' LIMIT 1""",
            table,
        )
        if not has_policy:
            await conn.execute(
                f"CREATE POLICY {quote_ident(POLICY)} ON {table} "
                "FOR ALL TO service_role USING (true) WITH CHECK (true)"
            )
    return True
