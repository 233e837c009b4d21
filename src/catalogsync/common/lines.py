"""Cutting NDJSON into lines as it arrives, with a ceiling on how long one line may grow.

Both jobs read MediPim's NDJSON in whatever pieces the network or storage hands over. A line that
spans several pieces is held as the list of those pieces and joined once, when its newline
arrives, so a long line costs one copy rather than one per piece. A line past ``MAX_LINE_BYTES``
is not a product (real ones are a few kilobytes): from then on only its first bytes and its length
are kept, so memory stays bounded whatever the input, and the caller decides what the line means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

MAX_LINE_BYTES = 16 * 1024 * 1024
"""The longest line either job accepts (16 MiB); a longer one is bad data, never buffered whole."""


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line longer than the limit: its length and first bytes, the rest dropped on arrival."""

    size: int
    head: bytes
    limit: int = MAX_LINE_BYTES

    def problem(self, *, ended: bool = True) -> str:
        """What is wrong with the line, naming its size and the limit."""
        size = f"is {self.size} bytes" if ended else f"has passed {self.size} bytes unterminated"
        return f"{size}, over the line limit of {self.limit} bytes ({self.limit / 2**20:g} MiB)"


Line = bytes | LongLine


def _head(pieces: list[bytes], keep: int) -> bytes:
    taken = bytearray()
    for piece in pieces:
        if len(taken) >= keep:
            break
        taken += piece[: keep - len(taken)]
    return bytes(taken)


class LineSplitter:
    """Feed it byte blocks, get back the lines they complete (without their ``\\n``).

    A line over ``limit`` bytes comes back as a :class:`LongLine` holding its first ``keep`` bytes.
    """

    def __init__(self, *, keep: int, limit: int = MAX_LINE_BYTES) -> None:
        self.keep = min(keep, limit)
        self.limit = limit
        self._pieces: list[bytes] = []
        self._size = 0
        self._head: bytes | None = None
        """The first ``keep`` bytes of the unfinished line once it has passed the limit."""

    @property
    def overflow(self) -> LongLine | None:
        """The unfinished line, once it has passed the limit (before its newline arrives)."""
        if self._head is None:
            return None
        return LongLine(self._size, self._head, self.limit)

    def feed(self, data: bytes) -> list[Line]:
        """The lines that ``data`` completes, in order."""
        lines = cast(list[Line], data.split(b"\n"))
        tail = cast(bytes, lines.pop())
        if lines:
            lines[0] = self._end(cast(bytes, lines[0]))
            if len(data) > self.limit:  # only then can a line inside ``data`` be too long
                for i in range(1, len(lines)):
                    lines[i] = self._checked(cast(bytes, lines[i]))
        self._add(tail)
        return lines

    def end(self) -> Line | None:
        """The last line when the input does not end with a newline, else ``None``."""
        return self._end(b"") if self._size else None

    def _checked(self, line: bytes) -> Line:
        if len(line) > self.limit:
            return LongLine(len(line), line[: self.keep], self.limit)
        return line

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        if self._head is not None:
            return
        self._pieces.append(piece)
        if self._size > self.limit:
            self._head = _head(self._pieces, self.keep)
            self._pieces = []

    def _end(self, last: bytes) -> Line:
        if not self._size:
            return self._checked(last)
        self._add(last)
        size, head, pieces = self._size, self._head, self._pieces
        self._size, self._head, self._pieces = 0, None, []
        if head is not None:
            return LongLine(size, head, self.limit)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
