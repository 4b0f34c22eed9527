"""Keep each terminal's message numbering in PostgreSQL, inside the batch's transaction.

The batch writer has already locked the terminal rows (in id order, with the status
columns it needs), so two workers writing the same terminal's numbers take turns and
find the same gaps whichever commits first (ingest.sequence). New gaps become rows of
``seq_gap``; numbers that fill a gap shrink or split its row, and the terminal's
counters say how many were found missing and how many came back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingest.columns import as_columns
from ingest.sequence import StreamMark, subtract, track

SQL_LOCKED_GAPS = """
SELECT id, terminal_id, stream, first_seq, last_seq, found_at, requested_at, attempts, command_id
FROM seq_gap WHERE terminal_id = ANY(%s::int[]) ORDER BY id FOR UPDATE
"""
SQL_DELETE_GAPS = "DELETE FROM seq_gap WHERE id = ANY(%s::bigint[])"
SQL_INSERT_GAPS = """
INSERT INTO seq_gap (
    terminal_id, stream, first_seq, last_seq, found_at, requested_at, attempts, command_id)
SELECT * FROM unnest(
    %s::int[], %s::text[], %s::int8[], %s::int8[], %s::timestamptz[], %s::timestamptz[],
    %s::int[], %s::text[])
"""
SQL_UPDATE_MARKS = """
UPDATE terminal AS t SET
    seq_stream = v.stream, seq_high = v.high,
    seq_gaps_found = t.seq_gaps_found + v.gaps, seq_missing = t.seq_missing + v.missing,
    seq_recovered = t.seq_recovered + v.recovered
FROM unnest(%s::int[], %s::text[], %s::int8[], %s::int8[], %s::int8[], %s::int8[])
    AS v(id, stream, high, gaps, missing, recovered)
WHERE t.id = v.id
"""


@dataclass
class SequenceOutcome:
    gaps_found: int = 0
    missing: int = 0  # numbers in the gaps found
    recovered: int = 0  # numbers that filled a gap
    gaps_closed: int = 0  # gap rows whose every number came back

    def add(self, other: SequenceOutcome) -> None:
        self.gaps_found += other.gaps_found
        self.missing += other.missing
        self.recovered += other.recovered
        self.gaps_closed += other.gaps_closed


def arrivals_by_terminal(
    sequenced: Iterable[tuple[str, str, int]], ids: dict[str, int]
) -> dict[int, list[tuple[str, int]]]:
    found: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for serial, stream, seq in sequenced:
        terminal_id = ids.get(serial)
        if terminal_id is not None:
            found[terminal_id].append((stream, seq))
    return found


async def record_sequences(
    conn: psycopg.AsyncConnection[Any],
    arrivals: dict[int, list[tuple[str, int]]],
    marks: dict[int, StreamMark | None],
    now: datetime,
) -> SequenceOutcome:
    """Advance the locked terminals' marks, write the new gaps, fill the old ones."""
    outcome = SequenceOutcome()
    updates: list[tuple[int, str, int, int, int]] = []
    new_gaps: list[tuple[Any, ...]] = []
    fills: dict[int, list[tuple[str, int]]] = {}
    for terminal_id, numbers in arrivals.items():
        tracked = track(marks.get(terminal_id), numbers)
        if tracked.fills:
            fills[terminal_id] = tracked.fills
        if tracked.mark is None:
            continue
        updates.append(
            (
                terminal_id,
                tracked.mark.stream,
                tracked.mark.high,
                len(tracked.gaps),
                tracked.missing,
            )
        )
        for gap in tracked.gaps:
            new_gaps.append((terminal_id, gap.stream, gap.first, gap.last, now, None, 0, None))
        outcome.gaps_found += len(tracked.gaps)
        outcome.missing += tracked.missing
    recovered = await _fill(conn, fills, outcome) if fills else {}
    # Every terminal with a fill has a mark (its first number set one), so is here.
    rows = [(*u, recovered.get(u[0], 0)) for u in updates]
    if rows:
        await conn.execute(SQL_UPDATE_MARKS, as_columns(rows, 6))
    if new_gaps:
        await conn.execute(SQL_INSERT_GAPS, as_columns(new_gaps, 8))
    return outcome


async def _fill(
    conn: psycopg.AsyncConnection[Any],
    fills: dict[int, list[tuple[str, int]]],
    outcome: SequenceOutcome,
) -> dict[int, int]:
    """Take the filled numbers out of their gaps; the numbers recovered per terminal."""
    cursor = await conn.execute(SQL_LOCKED_GAPS, (sorted(fills),))
    by_stream: dict[tuple[int, str], list[int]] = defaultdict(list)
    for terminal_id, filled in fills.items():
        for stream, seq in filled:
            by_stream[(terminal_id, stream)].append(seq)
    for in_order in by_stream.values():
        in_order.sort()
    recovered: dict[int, int] = defaultdict(int)
    deleted: list[int] = []
    pieces: list[tuple[Any, ...]] = []
    for (
        gap_id,
        terminal_id,
        stream,
        first,
        last,
        found_at,
        requested_at,
        attempts,
        command,
    ) in await cursor.fetchall():
        numbers = by_stream.get((terminal_id, stream))
        if not numbers:
            continue
        left = subtract(first, last, numbers)
        got = (last - first + 1) - sum(b - a + 1 for a, b in left)
        if not got:
            continue
        recovered[terminal_id] += got
        outcome.recovered += got
        deleted.append(gap_id)
        if not left:
            outcome.gaps_closed += 1
        for a, b in left:
            pieces.append((terminal_id, stream, a, b, found_at, requested_at, attempts, command))
    if deleted:
        await conn.execute(SQL_DELETE_GAPS, (deleted,))
    if pieces:
        await conn.execute(SQL_INSERT_GAPS, as_columns(pieces, 8))
    return dict(recovered)
