"""Message sequence numbers: which numbers of a terminal's stream are missing (pure).

Every agent numbers what it publishes through its queue, 1, 2, 3, ... per stream, and
keeps what it sent for a while (agent/outbox.py). A broker that acknowledged a message
and then crashed before anyone received it leaves a hole in those numbers; ingest finds
it here and asks the agent to send the range again (ingest/gap_repair.py), so that a
crash of the broker loses nothing the agent still holds.

A stream is named so that a later one sorts after an earlier one (agent/outbox.py,
``new_stream``): numbers of an older stream only fill that stream's gaps, and a newer
stream starts again from nothing. Arrivals are taken in number order, so two ingest
workers committing the same terminal's messages in either order find the same gaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# What one resend command may ask for: ranges of one stream.
MAX_RANGES_PER_REQUEST = 50


@dataclass(frozen=True, slots=True)
class StreamMark:
    """The newest stream of a terminal and the highest number of it written."""

    stream: str
    high: int


@dataclass(frozen=True, slots=True)
class Gap:
    stream: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(slots=True)
class Tracked:
    """What a batch's numbers change for one terminal."""

    mark: StreamMark | None
    gaps: list[Gap] = field(default_factory=list)  # newly missing ranges
    fills: list[tuple[str, int]] = field(default_factory=list)  # numbers at or below the mark

    @property
    def missing(self) -> int:
        return sum(gap.size for gap in self.gaps)


def track(mark: StreamMark | None, arrivals: Iterable[tuple[str, int]]) -> Tracked:
    """Fold ``(stream, seq)`` arrivals over a terminal's mark.

    A number above the mark raises it, and the numbers jumped over become a gap; a number
    at or below it (a resend, a redelivery, or a message another worker committed later)
    is a fill, which closes a gap if it was missing.
    """
    tracked = Tracked(mark)
    for stream, seq in sorted(set(arrivals)):
        current = tracked.mark
        if current is None or stream > current.stream:
            current = StreamMark(stream, 0)  # a new stream numbers from 1
        elif stream < current.stream:
            tracked.fills.append((stream, seq))
            continue
        if seq > current.high:
            if seq > current.high + 1:
                tracked.gaps.append(Gap(stream, current.high + 1, seq - 1))
            tracked.mark = StreamMark(stream, seq)
        else:
            tracked.mark = current
            tracked.fills.append((stream, seq))
    return tracked


def subtract(first: int, last: int, numbers: Sequence[int]) -> list[tuple[int, int]]:
    """The range ``first..last`` without ``numbers`` (sorted), as ranges in order."""
    pieces: list[tuple[int, int]] = []
    start = first
    for number in numbers:
        if number < start or number > last:
            continue
        if number > start:
            pieces.append((start, number - 1))
        start = number + 1
    if start <= last:
        pieces.append((start, last))
    return pieces


def subtract_ranges(
    first: int, last: int, ranges: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The range ``first..last`` without any of ``ranges`` (inclusive pairs)."""
    pieces = [(first, last)]
    for lo, hi in sorted(ranges):
        kept: list[tuple[int, int]] = []
        for a, b in pieces:
            if hi < a or lo > b:
                kept.append((a, b))
                continue
            if a < lo:
                kept.append((a, lo - 1))
            if hi < b:
                kept.append((hi + 1, b))
        pieces = kept
    return pieces


def covered(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(last - first + 1 for first, last in ranges)
