"""The MediPim v4 query grammar: validation (422 violations), filtering, sorting, paging.

A filter is a JSON object; ``and``/``or`` take a list of filters (or one), ``not`` takes a filter (a
list means "none of them"). Leaves take a scalar or a non-empty list meaning "any of". Time leaves
(``updatedSince``, ``createdAt``) take a unix timestamp meaning "at or after" or
``{"from": ts, "until": ts}``, both ends inclusive. Several keys in one object are ANDed.
Parsing yields a predicate factory so a request is validated once, before any bytes are sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from catalogsync.dev.simulator.catalog import Snapshot
from catalogsync.dev.simulator.generator import STATUS_CODES

T = TypeVar("T")
Predicate = Callable[[T], bool]
Compiled = Callable[[Snapshot], Predicate[int]]
"""A validated product filter, waiting for the snapshot to run against."""

MAX_CODES = 1000
PAGE_SIZES = (10, 50, 100, 250)
QUERY_CAP = 10_000

CODE_FILTERS = (
    "eanGtin8", "eanGtin12", "eanGtin13", "eanGtin14", "artgId", "pbs", "fred", "zCode",
    "snomedMp", "snomedMpp", "snomedMpuu", "snomedTp", "snomedTpp", "snomedTpuu", "snomedCtpp",
)  # fmt: skip
RELATION_FILTERS = {
    "brand": "brand",
    "organization": "organization",
    "publicCategory": "publicCategory",
    "productFamily": "productFamily",
    "activeIngredient": "activeIngredient",
}
UNSIMULATED_FILTERS = frozenset(
    {
        "search", "hasContent", "conservation", "allowedSpecies", "atcCategory", "gs1Category",
        "narcotic", "biocide", "attributes", "notApplicableField", "officialDeletionAt", "hsCode",
    }
)  # fmt: skip
"""Documented for AU products but not simulated: rejected so a test never silently ignores one."""
SORTINGS = ("id", "createdAt", "touchedAt", "status")
UNSIMULATED_SORTINGS = frozenset({"name", "pbs", "statusTouchedAt"})


@dataclass(frozen=True)
class Violation:
    propertyPath: str
    message: str


class InvalidRequest(Exception):
    """The body parsed as JSON but breaks the grammar: answered with 422 and ``violations``."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__("; ".join(f"{v.propertyPath}: {v.message}" for v in violations))
        self.violations = list(violations)


@dataclass(frozen=True)
class ProductQuery:
    filter: Compiled
    sort_key: str
    descending: bool
    page: tuple[int, int] | None
    """(page number, page size) for products/query."""

    def select(self, snapshot: Snapshot) -> list[int]:
        """Positions of matching records in the requested order (ties broken by id ascending)."""
        predicate = self.filter(snapshot)
        positions = [p for p in range(snapshot.count) if predicate(p)]
        if self.sort_key == "id":
            return positions[::-1] if self.descending else positions
        column: Sequence[int] = {
            "createdAt": snapshot.created,
            "touchedAt": snapshot.updated,
            "status": snapshot.status,
        }[self.sort_key]
        return sorted(positions, key=column.__getitem__, reverse=self.descending)


def parse_product_query(body: Any, *, paged: bool) -> ProductQuery:
    """Validate a products/stream (``paged=False``) or products/query body."""
    violations: list[Violation] = []
    if not isinstance(body, dict):
        raise InvalidRequest([Violation("", "the body must be a JSON object")])
    allowed = {"filter", "sorting", "page"} if paged else {"filter", "sorting"}
    violations.extend(Violation(k, "unknown field") for k in body if k not in allowed)
    compiled: Compiled = _always
    if "filter" not in body:
        violations.append(Violation("filter", "this field is required"))
    else:
        compiled = _compile(body["filter"], "filter", violations, _product_leaf)
    sort_key, descending = "id", False
    if "sorting" not in body:
        violations.append(Violation("sorting", "this field is required"))
    else:
        sort_key, descending = _sorting(body["sorting"], violations)
    page = None
    if paged:
        page = parse_page(body.get("page"), violations, required=True)
    if violations:
        raise InvalidRequest(violations)
    return ProductQuery(compiled, sort_key, descending, page)


def parse_page(
    value: Any, violations: list[Violation], *, required: bool
) -> tuple[int, int] | None:
    if value is None:
        if required:
            violations.append(Violation("page", "this field is required"))
        return None
    if not isinstance(value, dict):
        violations.append(Violation("page", 'expected {"no": <int>, "size": <int>}'))
        return None
    violations.extend(
        Violation(f"page.{k}", "unknown field") for k in value if k not in {"no", "size"}
    )
    number, size = value.get("no", 0), value.get("size", 100)
    if not _is_int(number) or number < 0:
        violations.append(Violation("page.no", "must be an integer >= 0"))
    if size not in PAGE_SIZES or not _is_int(size):
        violations.append(
            Violation("page.size", f"must be one of {', '.join(map(str, PAGE_SIZES))}")
        )
    return (number, size) if _is_int(number) and _is_int(size) else None


def page_slice(total: int, page: tuple[int, int]) -> tuple[int, int]:
    """Start and stop of a page, silently capped at the first 10,000 results like MediPim."""
    number, size = page
    start = min(number * size, QUERY_CAP, total)
    return start, min(start + size, QUERY_CAP, total)


def _sorting(value: Any, violations: list[Violation]) -> tuple[str, bool]:
    if not isinstance(value, dict) or len(value) != 1:
        violations.append(Violation("sorting", 'expected exactly one key, e.g. {"id": "ASC"}'))
        return "id", False
    ((key, direction),) = value.items()
    if key in UNSIMULATED_SORTINGS:
        violations.append(Violation(f"sorting.{key}", "valid for MediPim, not simulated"))
    elif key not in SORTINGS:
        violations.append(Violation(f"sorting.{key}", f"unknown sorting; use one of {SORTINGS}"))
    if direction not in ("ASC", "DESC"):
        violations.append(Violation(f"sorting.{key}", 'must be "ASC" or "DESC"'))
    return key, direction == "DESC"


# -- generic combinators ----------------------------------------------------------------------

Leaf = Callable[[str, Any, str, list[Violation]], "Callable[[Any], Predicate[Any]] | None"]


def _always(_: Any) -> Predicate[Any]:
    return lambda _item: True


def _compile(
    value: Any, path: str, violations: list[Violation], leaf: Leaf
) -> Callable[[Any], Predicate[Any]]:
    if not isinstance(value, dict):
        violations.append(Violation(path, "a filter must be a JSON object"))
        return _always
    parts: list[Callable[[Any], Predicate[Any]]] = []
    for key, arg in value.items():
        where = f"{path}.{key}"
        if key in ("and", "or"):
            items = arg if isinstance(arg, list) else [arg]
            if not items:
                violations.append(Violation(where, "needs at least one filter"))
            subs = [
                _compile(item, f"{where}[{i}]", violations, leaf) for i, item in enumerate(items)
            ]
            parts.append(_all(subs) if key == "and" else _any(subs))
        elif key == "not":
            items = arg if isinstance(arg, list) else [arg]
            subs = [
                _compile(item, f"{where}[{i}]", violations, leaf) for i, item in enumerate(items)
            ]
            parts.append(_none(subs))
        else:
            compiled = leaf(key, arg, where, violations)
            if compiled is not None:
                parts.append(compiled)
    return _all(parts)


def _all(subs: list[Callable[[T], Predicate[Any]]]) -> Callable[[T], Predicate[Any]]:
    if len(subs) == 1:
        return subs[0]

    def bind(source: T) -> Predicate[Any]:
        preds = [sub(source) for sub in subs]
        return lambda item: all(p(item) for p in preds)

    return bind


def _any(subs: list[Callable[[T], Predicate[Any]]]) -> Callable[[T], Predicate[Any]]:
    def bind(source: T) -> Predicate[Any]:
        preds = [sub(source) for sub in subs]
        return lambda item: any(p(item) for p in preds)

    return bind


def _none(subs: list[Callable[[T], Predicate[Any]]]) -> Callable[[T], Predicate[Any]]:
    matches_any = _any(subs)

    def bind(source: T) -> Predicate[Any]:
        pred = matches_any(source)
        return lambda item: not pred(item)

    return bind


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _values(
    arg: Any, where: str, violations: list[Violation], check: Callable[[Any], bool], what: str
) -> list[Any]:
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        violations.append(Violation(where, f"expected {what} or a non-empty list of them"))
    elif len(items) > MAX_CODES:
        violations.append(Violation(where, f"at most {MAX_CODES} values per request; split it"))
    bad = [item for item in items if not check(item)]
    if bad:
        violations.append(Violation(where, f"expected {what}, got {bad[0]!r}"))
    return items


def _time_range(arg: Any, where: str, violations: list[Violation]) -> tuple[int, int]:
    if _is_int(arg):
        return int(arg), 2**63
    if isinstance(arg, dict) and arg and set(arg) <= {"from", "until"}:
        low, high = arg.get("from", 0), arg.get("until", 2**63)
        if _is_int(low) and _is_int(high):
            return int(low), int(high)
    violations.append(Violation(where, 'expected a unix timestamp or {"from": ts, "until": ts}'))
    return 0, 2**63


# -- products ---------------------------------------------------------------------------------


def _product_leaf(
    key: str, arg: Any, where: str, violations: list[Violation]
) -> Callable[[Snapshot], Predicate[int]] | None:
    if key == "status":
        names = _values(arg, where, violations, lambda v: v in STATUS_CODES, "a product status")
        statuses = frozenset(STATUS_CODES.get(n, -1) for n in names)
        return lambda s: lambda p: s.status[p] in statuses
    if key == "id":
        wanted = frozenset(_values(arg, where, violations, lambda v: isinstance(v, str), "an id"))
        return lambda s: lambda p: s.ids[p] in wanted
    if key in ("updatedSince", "createdAt"):
        low, high = _time_range(arg, where, violations)

        def bind_time(s: Snapshot) -> Predicate[int]:
            column = s.updated if key == "updatedSince" else s.created
            return lambda p: low <= column[p] <= high

        return bind_time
    if key == "ean":
        codes = _codes(arg, where, violations)
        return lambda s: lambda p: any(_same_code(e, codes) for e in s.facts[p]["ean"])
    if key in CODE_FILTERS or key == "gtin":
        field = "eanGtin14" if key == "gtin" else key
        codes = _codes(arg, where, violations)
        return lambda s: lambda p: _same_code(s.facts[p]["codes"].get(field), codes)
    if key in RELATION_FILTERS:
        ids = frozenset(_values(arg, where, violations, _is_int, "an integer id"))
        return lambda s: lambda p: not ids.isdisjoint(s.facts[p][RELATION_FILTERS[key]])
    if key == "minimumContent":
        if not isinstance(arg, bool):
            violations.append(Violation(where, "expected true or false"))
        return lambda s: lambda p: s.facts[p]["minimumContent"] is arg
    if key in UNSIMULATED_FILTERS:
        violations.append(Violation(where, "valid for MediPim, not simulated"))
    else:
        violations.append(Violation(where, "unknown filter"))
    return None


def _codes(arg: Any, where: str, violations: list[Violation]) -> frozenset[str]:
    """Codes compare as digit strings without leading zeros: MediPim documents them as integers."""
    values = _values(
        arg, where, violations, lambda v: isinstance(v, str) or _is_int(v), "a code (string)"
    )
    return frozenset(str(v).lstrip("0") or "0" for v in values)


def _same_code(code: str | None, wanted: frozenset[str]) -> bool:
    return code is not None and (code.lstrip("0") or "0") in wanted


# -- brands, organizations, categories, families, ingredients ---------------------------------


def parse_entity_query(
    body: Any, fields: frozenset[str], sortings: frozenset[str]
) -> tuple[Callable[[list[dict[str, Any]]], list[dict[str, Any]]], tuple[int, int] | None]:
    """Validate a body for one of the small endpoints; optional filter, sorting and page."""
    if not isinstance(body, dict):
        raise InvalidRequest([Violation("", "the body must be a JSON object")])
    violations = [
        Violation(k, "unknown field") for k in body if k not in {"filter", "sorting", "page"}
    ]

    def leaf(
        key: str, arg: Any, where: str, found: list[Violation]
    ) -> Callable[[Any], Predicate[Any]] | None:
        if key not in fields:
            found.append(Violation(where, f"unknown filter; use one of {sorted(fields)}"))
            return None
        if key == "search":
            query = arg.get("query") if isinstance(arg, dict) else arg
            if not isinstance(query, str):
                found.append(Violation(where, 'expected a string or {"query": str}'))
            text = str(query).lower()
            return lambda _: lambda e: text in _name(e).lower()
        values = frozenset(
            _values(arg, where, found, lambda v: isinstance(v, str | int), "an id or value")
        )
        return lambda _: lambda e: e.get(key) in values

    compiled = _compile(body.get("filter", {}), "filter", violations, leaf)
    key, descending = "id", False
    if "sorting" in body:
        value = body["sorting"]
        if not isinstance(value, dict) or len(value) != 1:
            violations.append(Violation("sorting", 'expected exactly one key, e.g. {"id": "ASC"}'))
        else:
            ((key, direction),) = value.items()
            if key not in sortings or direction not in ("ASC", "DESC"):
                violations.append(
                    Violation(f"sorting.{key}", f"use one of {sorted(sortings)} with ASC or DESC")
                )
            descending = direction == "DESC"
    page = parse_page(body.get("page"), violations, required=False)
    if violations:
        raise InvalidRequest(violations)

    def run(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        predicate = compiled(None)
        kept = [e for e in entities if predicate(e)]
        sort_key: Callable[[dict[str, Any]], Any] = _name if key == "name" else lambda e: e["id"]
        return sorted(kept, key=sort_key, reverse=descending)

    return run, page


def _name(entity: dict[str, Any]) -> str:
    name = entity.get("name")
    return name.get("en", "") if isinstance(name, dict) else str(name or "")
