"""Cutting the stream into numbered chunks and deciding what each chunk changes. Pure, no I/O.

Chunk ``k`` holds lines ``k*size+1 .. (k+1)*size`` of the object (blank lines count as lines but
carry nothing), so a chunk's number and contents follow from the object and the chunk size alone:
that is what lets a restarted run skip exactly the chunks that were committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from catalogsync.common.lines import Line, LineSplitter, LongLine
from catalogsync.maintainer.records import InvalidLine, Scanned, scan, to_row

REJECT_RAW_LIMIT = 1 << 20
"""Longest raw text kept for a rejected line (a runaway line is truncated, not stored whole).

A line over ``MAX_LINE_BYTES`` is never held whole: only this much of it is kept as it arrives.
"""

Reject = tuple[int, str, str]
"""(line number, error, raw text)."""

Position = tuple[int, int | None, int | None, bool]
"""(line number, ``meta.index``, ``meta.total``, whether the line could be read at all)."""


@dataclass
class RawChunk:
    number: int
    first_line: int
    last_line: int
    lines: list[tuple[int, bytes]]
    """Non-blank lines with their 1-based line numbers."""
    long_lines: list[tuple[int, LongLine]] = field(default_factory=list)
    """Lines over ``MAX_LINE_BYTES`` (what is left of them), with their line numbers."""


@dataclass
class Prepared:
    """A chunk after :func:`prepare`: one scanned record per product id (the last line wins)."""

    number: int
    first_line: int
    last_line: int
    processed: int
    records: dict[str, tuple[int, Scanned]]
    rejects: list[Reject]
    duplicates: int
    total: int | None = None
    last_index: int | None = None
    positions: list[Position] = field(default_factory=list)
    """Where every non-blank line says it stands in the catalog, in line order."""
    earlier: set[str] = field(default_factory=set)
    """Ids this chunk shares with earlier chunks: applied after them, counted as duplicates."""


@dataclass
class Plan:
    """What a chunk does to the table."""

    new_rows: list[tuple[Any, ...]]
    changed_rows: list[tuple[Any, ...]]
    counts: dict[str, int]
    rejects: list[Reject]


async def read_lines(source: AsyncIterator[bytes]) -> AsyncIterator[list[Line]]:
    """The lines of ``source``, a read's worth at a time; one over the limit as a ``LongLine``."""
    splitter = LineSplitter(keep=REJECT_RAW_LIMIT)
    async for data in source:
        yield splitter.feed(data)
    last = splitter.end()
    if last is not None:
        yield [last]


async def split_chunks(source: AsyncIterator[bytes], size: int) -> AsyncIterator[RawChunk]:
    """Number the lines of ``source`` and group them ``size`` line numbers at a time."""
    line_no = 0
    lines: list[tuple[int, bytes]] = []
    long_lines: list[tuple[int, LongLine]] = []
    async for found in read_lines(source):
        for line in found:
            if line_no and line_no % size == 0:
                number = line_no // size - 1
                yield RawChunk(number, number * size + 1, line_no, lines, long_lines)
                lines, long_lines = [], []
            line_no += 1
            if isinstance(line, LongLine):
                long_lines.append((line_no, line))
            elif line.strip():
                lines.append((line_no, line))
    if line_no:
        number = (line_no - 1) // size
        yield RawChunk(number, number * size + 1, line_no, lines, long_lines)


def reject_text(line: bytes | memoryview) -> str:
    return bytes(line[:REJECT_RAW_LIMIT]).decode(errors="replace").replace("\x00", "\ufffd")


@dataclass
class IndexSequence:
    """Whether the lines' ``meta.index`` run 0, 1, … ``meta.total - 1``, one per line, in order.

    A MediPim stream numbers its lines, and nothing else proves a catalog whole: the last line's
    ``meta.index + 1 == meta.total`` holds as well for a file with lines cut out of its middle.
    Feed every non-blank line in file order. An unreadable (invalid) line may have held the next
    index or none, so the next readable line may skip one index per unreadable line before it;
    such a run deletes nothing anyway, because of the invalid line itself.
    """

    due: int = 0
    total: int | None = None
    problem: str | None = None
    slack: int = 0
    """Unreadable lines since the last readable one."""

    def feed(self, line: int, index: int | None, total: int | None, readable: bool = True) -> None:
        if self.problem is not None:
            return
        if not readable:
            self.slack += 1
            return
        if index is None or total is None:
            self.problem = f"line {line} has no meta.index and meta.total"
        elif self.total is not None and total != self.total:
            self.problem = f"line {line} says meta.total {total} after {self.total}"
        elif not self.due <= index <= self.due + self.slack:
            self.problem = f"line {line} has meta.index {index} where {self.due} was due"
        else:
            self.total = total
            self.due = index + 1
            self.slack = 0

    def incomplete_because(self) -> str | None:
        """Why the lines fed are not a whole catalog, or ``None`` when they are."""
        if self.problem is not None:
            return self.problem
        if self.total is None:
            return "the object holds no products with meta.index and meta.total"
        if not self.due <= self.total <= self.due + self.slack:
            return f"the object ends after meta.index {self.due - 1} of meta.total {self.total}"
        return None


def prepare(chunk: RawChunk) -> Prepared:
    """Scan every line: ids, hashes, invalid lines, duplicates within the chunk."""
    records: dict[str, tuple[int, Scanned]] = {}
    rejects: list[Reject] = []
    duplicates = 0
    total: int | None = None
    last_index: int | None = None
    positions: list[Position] = []
    for line_no, long_line in chunk.long_lines:
        error = f"the line {long_line.problem()}; raw holds its first {REJECT_RAW_LIMIT} bytes"
        rejects.append((line_no, error, reject_text(long_line.head)))
        positions.append((line_no, None, None, False))
    for line_no, line in chunk.lines:
        try:
            scanned = scan(line)
        except InvalidLine as exc:
            rejects.append((line_no, str(exc), reject_text(line)))
            positions.append((line_no, None, None, False))
            continue
        positions.append((line_no, scanned.index, scanned.total, True))
        if scanned.total is not None:
            total = scanned.total
        if scanned.index is not None and (last_index is None or scanned.index > last_index):
            last_index = scanned.index
        if scanned.id in records:
            duplicates += 1
            del records[scanned.id]  # keep dict order = order of the winning lines
        records[scanned.id] = (line_no, scanned)
    return Prepared(
        number=chunk.number,
        first_line=chunk.first_line,
        last_line=chunk.last_line,
        processed=len(chunk.lines) + len(chunk.long_lines),
        records=records,
        rejects=rejects,
        duplicates=duplicates,
        total=total,
        last_index=last_index,
        positions=sorted(positions),
    )


def plan(prepared: Prepared, stored: dict[str, tuple[bytes | None, bool]]) -> Plan:
    """Classify the chunk's products against what the table holds and build the rows to write.

    A product is new when its id is not stored, changed when its hash differs or it was
    soft-deleted (it came back), and skipped otherwise. Lines that turn out not to be products
    once decoded join the rejects.
    """
    counts = {
        "processed": prepared.processed,
        "inserted": 0,
        "updated": 0,
        "skipped": 0,
        "duplicates": prepared.duplicates,
        "invalid": len(prepared.rejects),
        "undeleted": 0,
        "nul_replaced": 0,
    }
    rejects = list(prepared.rejects)
    new_rows: list[tuple[Any, ...]] = []
    changed_rows: list[tuple[Any, ...]] = []
    for product_id, (line_no, scanned) in prepared.records.items():
        known = stored.get(product_id)
        if known is not None and known[0] == scanned.hash and not known[1]:
            outcome = "skipped"
        else:
            try:
                row, replaced = to_row(scanned)
            except InvalidLine as exc:
                rejects.append((line_no, str(exc), reject_text(scanned.body)))
                counts["invalid"] += 1
                continue
            if replaced:
                counts["nul_replaced"] += 1
            if known is None:
                new_rows.append(row)
                outcome = "inserted"
            else:
                changed_rows.append(row)
                outcome = "updated"
                if known[1] and product_id not in prepared.earlier:
                    counts["undeleted"] += 1
        counts["duplicates" if product_id in prepared.earlier else outcome] += 1
    rejects.sort()
    return Plan(new_rows, changed_rows, counts, rejects)
