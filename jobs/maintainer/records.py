"""From one NDJSON line of a MediPim stream to the values of one products row. Pure functions.

Two speeds. Most lines of a re-sync are unchanged, and for those only the product id and the
content hash are needed, so :func:`scan` gets both from the bytes without decoding the JSON: the
line is the wrapper ``{"meta":{"total":T,"index":I},"result":{...}}``, the product's first key is
its ``id``, and the hash covers the ``result`` bytes with the ``"embedUrl":"..."`` pair cut out
(``meta.embedUrl``, a pre-signed URL that changes on every download). Only new or changed
products are then decoded and mapped by :func:`to_row`. A line in any other layout (keys
reordered, extra spaces, more than one ``embedUrl`` key) is decoded at once and hashed over its
canonical form (sorted keys, ``meta.embedUrl`` left out); the two forms give different hashes for
the same product, which at worst rewrites it once, never misses a change. Nothing but
``meta.embedUrl`` is ever left out: a single ``embedUrl`` that turns out, once decoded, to be
somewhere else gets the canonical hash (see :func:`to_row`).

Mapping is lenient, because the feed's types drift from its documentation: names arrive localized
(``{"en": ...}``) or plain, codes as strings, numbers or arrays, fields go missing. Only a line
that is not JSON, has no ``result`` object or no string ``result.id`` is invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import xxhash

from catalogsync.common.jsonobject import load_object

WRAPPER = re.compile(
    rb'\{\s*"meta"\s*:\s*\{\s*"total"\s*:\s*(\d+)\s*,\s*"index"\s*:\s*(\d+)\s*\}\s*,\s*"result"\s*:\s*'
)
FIRST_ID = re.compile(rb'\{\s*"id"\s*:\s*"([^"\\]{1,200})"')
EMBED_URL = re.compile(rb'"embedUrl"\s*:\s*"[^"\\]*(?:\\.[^"\\]*)*"')
EMBED_KEY = b'"embedUrl"'
CLOSE = ord("}")

COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "status",
    "organization",
    "brand",
    "eanGtin13",
    "eanGtin14",
    "artgId",
    "pbs",
    "snomedMpp",
    "snomedTpp",
    "gs1Category",
    "createdAt",
    "metaUpdatedAt",
    "raw",
    "content_hash",
)
"""The mapped columns, in the order of the tuples :func:`to_row` returns."""


class InvalidLine(ValueError):
    """A line that cannot become a product row; the message goes to the rejects table."""


@dataclass(slots=True)
class Scanned:
    """What a line's bytes tell without decoding it, or its decoded product when they could not."""

    id: str
    hash: bytes
    line: bytes
    start: int
    stop: int
    total: int | None = None
    cut: bool = False
    """Whether ``hash`` left an ``"embedUrl":"..."`` pair out without knowing it was meta's."""
    index: int | None = None
    product: dict[str, Any] | None = None

    @property
    def body(self) -> memoryview:
        """The ``result`` object's JSON text, byte for byte as received (stored as ``raw``).

        A view, not a copy: a chunk's rows point into its lines until they are written.
        """
        return memoryview(self.line)[self.start : self.stop]


def digest(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


def content_hash(line: bytes, start: int, stop: int, pair: re.Match[bytes] | None) -> bytes:
    """xxh3-128 of ``line[start:stop]`` with ``pair`` cut out, through a memoryview (no copy)."""
    view = memoryview(line)
    if pair is None:
        return xxhash.xxh3_128_digest(view[start:stop])
    state = xxhash.xxh3_128(view[start : pair.start()])
    state.update(view[pair.end() : stop])
    return state.digest()


def canonical_hash(product: dict[str, Any]) -> bytes:
    """The hash of a decoded product: sorted keys, ``meta.embedUrl`` left out."""
    meta = product.get("meta")
    if isinstance(meta, dict) and "embedUrl" in meta:
        product = {**product, "meta": {k: v for k, v in meta.items() if k != "embedUrl"}}
    return digest(orjson.dumps(product, option=orjson.OPT_SORT_KEYS))


def has_embed_url(product: dict[str, Any]) -> bool:
    meta = product.get("meta")
    return isinstance(meta, dict) and isinstance(meta.get("embedUrl"), str)


def scan(line: bytes) -> Scanned:
    """The id and content hash of a line, decoding the JSON only when the layout is unusual.

    Raises :class:`InvalidLine` when the line cannot be a product.
    """
    wrapper = WRAPPER.match(line)
    if wrapper is not None:
        start = wrapper.end()
        stop = len(line.rstrip()) - 1
        if stop > start and line[stop] == CLOSE:
            first = FIRST_ID.match(line, start)
            # The key is looked for from the end, where MediPim puts the product's ``meta``; a
            # second one elsewhere would leave it unknown which pair is meta's.
            at = line.rfind(EMBED_KEY, start, stop)
            if first is not None and (at < 0 or line.find(EMBED_KEY, start, at) < 0):
                pair = EMBED_URL.match(line, at, stop) if at >= 0 else None
                return Scanned(
                    id=first.group(1).decode(),
                    hash=content_hash(line, start, stop, pair),
                    line=line,
                    start=start,
                    stop=stop,
                    total=int(wrapper.group(1)),
                    index=int(wrapper.group(2)),
                    cut=pair is not None,
                )
    return scan_decoded(line)


def scan_decoded(line: bytes) -> Scanned:
    """The slow path of :func:`scan`: decode, validate, hash the canonical form."""
    product, total, index = decode(line)
    body = orjson.dumps(product)
    return Scanned(
        id=product["id"],
        hash=canonical_hash(product),
        line=body,
        start=0,
        stop=len(body),
        total=total,
        index=index,
        product=product,
    )


def decode(line: bytes) -> tuple[dict[str, Any], int | None, int | None]:
    """The product of a line, with the wrapper's ``meta.total`` and ``meta.index`` if present."""
    try:
        document = load_object(line)
    except ValueError as exc:
        raise InvalidLine(str(exc)) from None
    product = document.get("result")
    if not isinstance(product, dict):
        raise InvalidLine("no 'result' object")
    product_id = product.get("id")
    if not isinstance(product_id, str) or not product_id:
        raise InvalidLine(f"'result.id' must be a non-empty string, not {product_id!r:.40}")
    if NUL in product_id:
        raise InvalidLine(f"'result.id' {product_id!r:.40} contains U+0000, which no id may hold")
    wrapper = document.get("meta")
    total = index = None
    if isinstance(wrapper, dict):
        total = wrapper.get("total") if isinstance(wrapper.get("total"), int) else None
        index = wrapper.get("index") if isinstance(wrapper.get("index"), int) else None
    return product, total, index


NUL = "\x00"
NUL_REPLACEMENT = "\ufffd"
NUL_ESCAPE = b"\\u0000"
"""How a U+0000 must appear in JSON text (a raw NUL byte is invalid there). The text of a literal
backslash followed by ``u0000`` contains these bytes too, so finding them only says "maybe"."""


def replace_nul(value: Any) -> tuple[Any, int]:
    """``value`` with every U+0000 in its strings and keys turned into U+FFFD, and how many.

    PostgreSQL's ``text`` and ``jsonb`` cannot store U+0000. This works on decoded strings, so a
    literal backslash-u0000 in the text stays as it is.
    """
    if isinstance(value, str):
        count = value.count(NUL)
        return (value.replace(NUL, NUL_REPLACEMENT), count) if count else (value, 0)
    if isinstance(value, list):
        total = 0
        items = []
        for item in value:
            cleaned, count = replace_nul(item)
            items.append(cleaned)
            total += count
        return (items, total) if total else (value, 0)
    if isinstance(value, dict):
        total = 0
        pairs = {}
        for key, item in value.items():
            cleaned_key, key_count = replace_nul(key)
            cleaned, count = replace_nul(item)
            pairs[cleaned_key] = cleaned
            total += key_count + count
        return (pairs, total) if total else (value, 0)
    return value, 0


def to_row(scanned: Scanned) -> tuple[tuple[Any, ...], int]:
    """The :data:`COLUMNS` values of a scanned line, and how many U+0000 it had replaced.

    The body is decoded if not done yet. ``raw`` is the JSON text as a bytes-like object, for the
    binary ``jsonb`` codec the loader installs: the bytes as received, unless a string held
    U+0000 (see :func:`replace_nul`). If the fast scan left out an ``embedUrl`` that is not the
    product's ``meta.embedUrl``, the row gets the canonical hash: such a product is rewritten on
    every run (its fast hash never matches), but a change in that field is never missed. The
    hash is always that of the product as received, so a product with U+0000 is still skipped
    when it has not changed.
    """
    product = scanned.product
    body = scanned.body
    content = scanned.hash
    if product is None:
        try:
            product = load_object(body)
        except ValueError as exc:
            raise InvalidLine(f"'result' is {exc}") from None
        if scanned.cut and not has_embed_url(product):
            content = canonical_hash(product)
    raw: bytes | memoryview = body
    replaced = 0
    if scanned.line.find(NUL_ESCAPE, scanned.start, scanned.stop) >= 0:
        product, replaced = replace_nul(product)
        if replaced:
            raw = orjson.dumps(product)
    meta = product.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    row = (
        scanned.id,
        text(product.get("name")),
        text(product.get("status")),
        first_name(product.get("organizations")),
        first_name(product.get("brands")),
        code(product.get("eanGtin13"), 13),
        code(product.get("eanGtin14"), 14),
        code(product.get("artgId")),
        code(product.get("pbs")),
        code(product.get("snomedMpp")),
        code(product.get("snomedTpp")),
        gs1_category(product.get("gs1Category")),
        timestamp(meta.get("createdAt")),
        timestamp(meta.get("updatedAt")),
        raw,
        content,
    )
    return row, replaced


def text(value: Any) -> str | None:
    """A plain string from a plain or localized value (English first, else any locale)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("en", "en_AU", "en-AU"):
            localized = value.get(key)
            if isinstance(localized, str):
                return localized
        for item in value.values():
            if isinstance(item, str):
                return item
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def first_name(value: Any) -> str | None:
    """``brands[0].name`` / ``organizations[0].name``, as the original table had them."""
    if isinstance(value, list):
        for item in value:
            name = text(item.get("name")) if isinstance(item, dict) else text(item)
            if name:
                return name
        return None
    if isinstance(value, dict):
        return text(value.get("name"))
    return text(value)


def code(value: Any, digits: int | None = None) -> str | None:
    """A code as text: strings kept (leading zeros and all), numbers zero-padded, lists' first."""
    if isinstance(value, list):
        return next((c for c in (code(item, digits) for item in value) if c), None)
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value).zfill(digits) if digits else str(value)
    if isinstance(value, float) and value.is_integer():
        return code(int(value), digits)
    return None


def gs1_category(value: Any) -> str | None:
    if isinstance(value, dict):
        return code(value.get("code"))
    return code(value)


def timestamp(value: Any) -> datetime | None:
    """A unix timestamp (seconds; milliseconds are recognised) as an aware datetime."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value > 100_000_000_000:
        value = value / 1000
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
