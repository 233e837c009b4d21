"""What makes a MediPim stream complete and well formed, decided line by line.

Pure code, no I/O: the stream module feeds it the lines as they arrive and it keeps the counts.
A MediPim stream is one ``{"meta": {"total": T, "index": i}, "result": {"id": ...}}`` per line,
``i`` running from 0 to ``T - 1``. The stream has no end marker and no resume cursor, so the only
proof that nothing is missing is that the indexes are contiguous and the last one is ``T - 1``.

Which failures are worth a retry follows from where they come from: a cut connection or an error
line written by the server mid-stream may go away on a second request (transient); a line that is
not a product, or indexes that skip, is the source's data (exit code 3, a person has to look).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from catalogsync.common.errors import InvalidDataError, TransientError
from catalogsync.common.jsonobject import load_object
from catalogsync.common.lines import Line, LongLine
from catalogsync.common.storage import ObjectInfo

EXCERPT = 120
"""Bytes of an offending line quoted in an error (and all that is kept of a line over the limit)."""


class IncompleteStreamError(TransientError):
    """The stream ended before ``meta.total`` lines arrived."""

    reason = "IncompleteStream"


class StreamErrorLine(TransientError):
    """MediPim wrote an ``{"error": ...}`` line into the stream instead of the next product."""

    reason = "StreamError"


def _excerpt(line: bytes) -> str:
    text = line[:EXCERPT].decode("utf-8", "replace")
    return text + ("..." if len(line) > EXCERPT else "")


def _count(value: Any) -> int | None:
    """A non-negative JSON integer (``True`` is not one), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


@dataclass
class StreamAccount:
    """The running account of one stream attempt: feed every line, then call :meth:`finish`."""

    records: int = 0
    total: int | None = None
    lines: int = 0
    last_id: str | None = None

    def feed(self, line: Line) -> None:
        """Checks one line (without its ``\\n``); raises on the first problem."""
        self.lines += 1
        if isinstance(line, LongLine):
            raise self._too_long(line, ended=True)
        if not line.strip():
            return  # a blank line carries nothing; keep-alive newlines are harmless
        try:
            doc = load_object(line)
        except ValueError as exc:
            raise self._invalid(line, f"is {exc}") from None
        if "error" in doc:
            raise StreamErrorLine(
                f"MediPim reported an error in the stream at line {self.lines} after "
                f"{self.records} products: {_excerpt(line)}"
            )
        meta, result = doc.get("meta"), doc.get("result")
        if not isinstance(meta, dict) or not isinstance(result, dict):
            raise self._invalid(line, 'lacks the "meta" and "result" objects')
        index, total = _count(meta.get("index")), _count(meta.get("total"))
        if index is None or total is None:
            raise self._invalid(line, "lacks integer meta.index and meta.total")
        product_id = result.get("id")
        if not isinstance(product_id, str) or not product_id:
            raise self._invalid(line, "lacks a string result.id")
        if self.total is None:
            self.total = total
        elif total != self.total:
            raise self._invalid(line, f"says meta.total={total} after {self.total}")
        if index != self.records or index >= total:
            raise self._invalid(
                line, f"has meta.index={index} where {self.records} (of {total}) was due"
            )
        self.records += 1
        self.last_id = product_id

    def check_partial(self, overflow: LongLine | None) -> None:
        """Refuses a line that has grown past the limit without a newline, without waiting for one.

        ``overflow`` is the splitter's unfinished line once it is over the limit (else ``None``).
        """
        if overflow is not None:
            self.lines += 1
            raise self._too_long(overflow, ended=False)

    def finish(self, tail: Line | None) -> None:
        """Ends the stream; ``tail`` is whatever followed the last newline.

        A complete final line without its newline is accepted; a cut one means the connection
        dropped mid-line, which is a truncation, not bad data.
        """
        if isinstance(tail, LongLine):
            self.lines += 1
            raise self._too_long(tail, ended=True)
        if tail is not None and tail.strip():
            try:
                orjson.loads(tail)
            except orjson.JSONDecodeError:
                raise IncompleteStreamError(
                    f"the stream broke off in the middle of line {self.lines + 1} after "
                    f"{self.records} of {self._total_text()} products"
                ) from None
            self.feed(tail)
        if self.total is None:
            raise IncompleteStreamError(
                "MediPim answered 200 but sent no products (an empty catalog is a 204)"
            )
        if self.records != self.total:
            raise IncompleteStreamError(
                f"the stream ended after {self.records} of {self.total} products "
                f"(last meta.index {self.records - 1}, meta.total {self.total})"
            )

    def _total_text(self) -> str:
        return "?" if self.total is None else str(self.total)

    def _too_long(self, line: LongLine, *, ended: bool) -> InvalidDataError:
        return InvalidDataError(
            f"MediPim stream line {self.lines} (where meta.index {self.records} was due) "
            f"{line.problem(ended=ended)}: {_excerpt(line.head[:EXCERPT])}...",
            reason="InvalidData",
        )

    def _invalid(self, line: bytes, problem: str) -> InvalidDataError:
        return InvalidDataError(
            f"MediPim stream line {self.lines} {problem}: {_excerpt(line)}", reason="InvalidData"
        )


EmptyCatalogAction = Literal["publish", "keep"]


def empty_catalog_action(latest: ObjectInfo | None, publish_empty: bool) -> EmptyCatalogAction:
    """What a 204 (no products match) does to ``latest.ndjson``.

    An empty answer is more often a wrong filter or a key that lost its subscription than a
    catalog that really emptied, so it replaces a non-empty catalog only when asked to.
    """
    if publish_empty or latest is None or latest.size == 0:
        return "publish"
    return "keep"


def shrink_problem(published: int | None, records: int, *, max_fraction: float) -> str | None:
    """Why a complete catalog of ``records`` products must not replace one of ``published``.

    A catalog that lost more than ``max_fraction`` of its products since the last one is far more
    often a changed filter, a key that lost part of its scope or a MediPim incident than a real
    shrink: publishing it would make every reader of ``latest.ndjson`` see the smaller catalog.
    ``None`` when it may be published (a first catalog, or one that did not shrink that much).
    """
    if not published or records >= published * (1 - max_fraction):
        return None
    return (
        f"the catalog has {records} products, {1 - records / published:.1%} fewer than the "
        f"{published} of the published one (more than FETCHER_MAX_SHRINK_FRACTION "
        f"{max_fraction:.0%})"
    )
