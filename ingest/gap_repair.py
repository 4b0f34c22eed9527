"""Ask agents for the numbered messages ingest never received, and close what cannot come.

Every ``gap_check_interval_s`` one pass, in one transaction: a gap older than
``gap_grace_s`` (a worker may still be committing its numbers) and with no resend in
flight becomes a ``resend`` command for its terminal (all its gaps in one, queued for
the command sender like any other command, so it waits for an offline terminal and
is sent again without an answer). When a resend has finished, the ranges its answer
says the agent no longer holds (thinned from a full queue, or older than it keeps)
are lost; what is still missing after ``resend_attempts`` answered requests is lost
too. Lost numbers leave ``seq_gap``, are counted on the terminal and written to its
log. Only one ingest process runs this (the primary worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ingest.columns import as_columns
from ingest.counters import IngestCounters
from ingest.sequence import MAX_RANGES_PER_REQUEST, covered, subtract_ranges
from shared.command_catalog import spec_of
from shared.command_states import FINAL
from shared.messages import new_message_id
from shared.settings import IngestSettings

log = logging.getLogger(__name__)

RESEND = "resend"
REQUESTER = "ingest"

# Gaps that may be acted on: old enough, and no resend of them still live. A resend
# deleted by retention counts as finished without an answer.
SQL_DUE_GAPS = """
SELECT g.id, g.terminal_id, g.stream, g.first_seq, g.last_seq, g.attempts,
    c.status, c.result
FROM seq_gap AS g
LEFT JOIN command AS c ON c.id = g.command_id
WHERE g.found_at < %(before)s
  AND (g.command_id IS NULL
       OR c.id IS NULL
       OR (c.status = ANY(%(final)s::text[]) AND c.finished_at < %(before)s))
ORDER BY g.terminal_id, g.id
LIMIT %(limit)s
FOR UPDATE OF g SKIP LOCKED
"""
SQL_QUEUE_RESEND = """
INSERT INTO command (
    id, terminal_id, name, args, status, requested_by, requester_kind, origin,
    max_attempts, timeout_s, due_at, expires_at)
SELECT v.id, v.terminal_id, %(name)s, v.args::jsonb, 'queued', %(by)s, 'system', 'ingest',
    %(max_attempts)s, %(timeout_s)s, %(now)s, %(expires_at)s
FROM unnest(%(id)s::text[], %(terminal_id)s::int[], %(args)s::text[]) AS v(id, terminal_id, args)
JOIN terminal AS t ON t.id = v.terminal_id AND t.decommissioned_at IS NULL
RETURNING id
"""
SQL_MARK_REQUESTED = """
UPDATE seq_gap AS g SET requested_at = %s, attempts = g.attempts + 1, command_id = v.command_id
FROM unnest(%s::bigint[], %s::text[]) AS v(id, command_id)
WHERE g.id = v.id
"""
SQL_DELETE_GAPS = "DELETE FROM seq_gap WHERE id = ANY(%s::bigint[])"
SQL_INSERT_PIECES = """
INSERT INTO seq_gap (
    terminal_id, stream, first_seq, last_seq, found_at, requested_at, attempts, command_id)
SELECT g.terminal_id, g.stream, v.first_seq, v.last_seq, g.found_at, g.requested_at,
    g.attempts, g.command_id
FROM unnest(%s::bigint[], %s::int8[], %s::int8[]) AS v(gap_id, first_seq, last_seq)
JOIN seq_gap AS g ON g.id = v.gap_id
"""
SQL_COUNT_LOST = """
UPDATE terminal AS t SET seq_lost = t.seq_lost + v.lost
FROM unnest(%s::int[], %s::int8[]) AS v(id, lost) WHERE t.id = v.id
"""
SQL_LOG_LOST = """
INSERT INTO terminal_log (
    terminal_id, at, received_at, kind, severity, code, message, source_id, data)
SELECT v.terminal_id, %s, %s, 'gap', 'warning', 'messages-lost', v.message, v.source_id,
    v.data::jsonb
FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[])
    AS v(terminal_id, message, source_id, data)
ON CONFLICT (kind, source_id, at) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class DueGap:
    id: int
    terminal_id: int
    stream: str
    first: int
    last: int
    attempts: int
    command_status: str | None  # the last resend's state; None: none asked yet
    command_result: Any


@dataclass
class RepairPass:
    requested: int = 0  # resend commands queued
    lost: int = 0  # numbers given up on


def answered_missing(gap: DueGap) -> list[tuple[int, int]]:
    """The ranges the last resend's answer says the agent no longer holds (pure)."""
    result = gap.command_result
    if gap.command_status != "succeeded" or not isinstance(result, dict):
        return []
    if result.get("stream") != gap.stream:
        return []
    ranges = result.get("missing")
    if not isinstance(ranges, list):
        return []
    found: list[tuple[int, int]] = []
    for item in ranges:
        if (
            isinstance(item, list)
            and len(item) == 2
            and all(type(n) is int for n in item)
            and item[0] <= item[1]
        ):
            found.append((item[0], item[1]))
    return found


def plan_gap(gap: DueGap, max_attempts: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(ranges still to ask for, ranges lost) for one due gap (pure)."""
    left = subtract_ranges(gap.first, gap.last, answered_missing(gap))
    lost = subtract_ranges(gap.first, gap.last, left)
    if left and gap.attempts >= max_attempts:
        return [], [(gap.first, gap.last)]
    return left, lost


async def repair_once(
    pool: AsyncConnectionPool, settings: IngestSettings, now: datetime | None = None
) -> RepairPass:
    now = now or datetime.now(UTC)
    before = now - timedelta(seconds=settings.gap_grace_s)
    done = RepairPass()
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            SQL_DUE_GAPS,
            {"before": before, "final": sorted(s.value for s in FINAL), "limit": 5000},
        )
        gaps = [DueGap(*row) for row in await cursor.fetchall()]
        if not gaps:
            return done
        asks: dict[tuple[int, str], list[tuple[int, tuple[int, int]]]] = defaultdict(list)
        deleted: list[int] = []
        pieces: list[tuple[int, int, int]] = []
        lost_by_terminal: dict[int, int] = defaultdict(int)
        lost_logs: list[tuple[int, str, str, str]] = []
        for gap in gaps:
            left, lost = plan_gap(gap, settings.resend_attempts)
            if lost:
                count = covered(lost)
                lost_by_terminal[gap.terminal_id] += count
                done.lost += count
                deleted.append(gap.id)
                pieces.extend((gap.id, a, b) for a, b in left)
                lost_logs.append(_lost_log(gap, lost, count))
                continue  # what is left of it is a new row, asked for next pass
            for piece in left:
                asks[(gap.terminal_id, gap.stream)].append((gap.id, piece))
        if pieces:
            await conn.execute(SQL_INSERT_PIECES, as_columns(pieces, 3))
        if deleted:
            await conn.execute(SQL_DELETE_GAPS, (deleted,))
        if lost_by_terminal:
            await conn.execute(SQL_COUNT_LOST, as_columns(lost_by_terminal.items(), 2))
            await conn.execute(SQL_LOG_LOST, (now, now, *as_columns(lost_logs, 4)))
        done.requested = await _ask(conn, asks, settings, now)
    return done


def _lost_log(gap: DueGap, lost: list[tuple[int, int]], count: int) -> tuple[int, str, str, str]:
    spans = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in lost[:10])
    message = (
        f"{count} numbered message(s) lost ({spans} of stream {gap.stream}):"
        " the agent no longer holds them"
        if gap.command_status == "succeeded"
        else f"{count} numbered message(s) lost ({spans} of stream {gap.stream}):"
        f" not received after {gap.attempts} resend request(s)"
    )
    data = json.dumps({"stream": gap.stream, "ranges": lost, "count": count})
    return (gap.terminal_id, message[:2000], f"gap-{gap.id}", data)


async def _ask(
    conn: psycopg.AsyncConnection[Any],
    asks: dict[tuple[int, str], list[tuple[int, tuple[int, int]]]],
    settings: IngestSettings,
    now: datetime,
) -> int:
    """One resend command per terminal and stream; the gaps remember it."""
    spec = spec_of(RESEND)
    commands: list[tuple[str, int, str]] = []
    marks: list[tuple[int, str]] = []
    for (terminal_id, stream), items in asks.items():
        items = items[:MAX_RANGES_PER_REQUEST]  # the rest next pass
        command_id = new_message_id()
        args = {"stream": stream, "ranges": [list(piece) for _, piece in items]}
        commands.append((command_id, terminal_id, json.dumps(args)))
        marks.extend((gap_id, command_id) for gap_id, _ in items)
    if not commands:
        return 0
    ids, terminal_ids, arg_texts = as_columns(commands, 3)
    cursor = await conn.execute(
        SQL_QUEUE_RESEND,
        {
            "id": ids,
            "terminal_id": terminal_ids,
            "args": arg_texts,
            "name": RESEND,
            "by": REQUESTER,
            "max_attempts": spec.max_attempts,
            "timeout_s": spec.timeout_s,
            "now": now,
            "expires_at": now + timedelta(seconds=settings.resend_expires_s),
        },
    )
    queued = {row[0] for row in await cursor.fetchall()}
    marks = [(gap_id, command_id) for gap_id, command_id in marks if command_id in queued]
    if marks:
        await conn.execute(SQL_MARK_REQUESTED, (now, *as_columns(marks, 2)))
    return len(queued)


async def gap_repair_loop(
    pool: AsyncConnectionPool,
    settings: IngestSettings,
    counters: IngestCounters,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        try:
            done = await repair_once(pool, settings)
            counters.seq_resends += done.requested
            counters.seq_lost += done.lost
            if done.requested or done.lost:
                log.info(
                    "gap repair: %d resend command(s) queued, %d message(s) given up",
                    done.requested,
                    done.lost,
                )
        except (psycopg.Error, OSError) as exc:
            log.warning("gap repair pass failed (%s); trying again", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.gap_check_interval_s)
