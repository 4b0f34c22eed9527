"""The trigger-kept terminal counts (migration 0016, shared.terminal_counts) on real
PostgreSQL: after any mix of inserts, updates, deletes, rollbacks, truncates, folds and
concurrent writers, they equal a GROUP BY over the terminals; a heartbeat's update adds
nothing."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import psycopg
import pytest

from ingest.fleet_samples import fold_terminal_counts
from shared.db import libpq_url
from shared.terminal_counts import (
    COMPACT_LOCK,
    SQL_COMPACT,
    SQL_PER_CUSTOMER,
    SQL_PER_CUSTOMER_SCANNED,
    SQL_ROWS,
)

pytestmark = pytest.mark.integration

STATUSES = ("online", "offline", "error", "unknown", "decommissioned")
Counts = dict[int, tuple[int, ...]]


def _counts(conn: psycopg.Connection[Any], sql: str) -> Counts:
    # A customer whose counts are all zero is the same as one with no row.
    return {row[0]: tuple(row[1:]) for row in conn.execute(sql) if any(row[1:])}


def _assert_counts_match(conn: psycopg.Connection[Any]) -> Counts:
    kept, scanned = _counts(conn, SQL_PER_CUSTOMER), _counts(conn, SQL_PER_CUSTOMER_SCANNED)
    assert kept == scanned
    return kept


def _fleet(conn: psycopg.Connection[Any], customers: int, terminals: int) -> list[int]:
    ids = [
        row[0]
        for row in conn.execute(
            "INSERT INTO customer (name) SELECT 'C' || n FROM generate_series(1, %s) n"
            " RETURNING id",
            (customers,),
        )
    ]
    conn.execute(
        "INSERT INTO terminal (serial, customer_id, model, status, maintenance)"
        " SELECT 'TC-N' || n, (%s::int[])[1 + n %% %s], 'TC-200',"
        " (%s::text[])[1 + n %% 5], n %% 7 = 0 FROM generate_series(1, %s) n",
        (ids, customers, list(STATUSES), terminals),
    )
    return ids


def test_counts_follow_every_kind_of_change(database_url: str) -> None:
    rng = random.Random(16)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        customers = _fleet(conn, 4, 60)
        counts = _assert_counts_match(conn)
        assert sum(c[0] for c in counts.values()) == 48  # 60 less the 12 decommissioned
        next_serial = 1000
        for step in range(120):
            ids = [row[0] for row in conn.execute("SELECT id FROM terminal")]
            kind = rng.choice(("status", "maintenance", "move", "bulk", "insert", "delete"))
            if kind == "status":
                conn.execute(
                    "UPDATE terminal SET status = %s WHERE id = %s",
                    (rng.choice(STATUSES), rng.choice(ids)),
                )
            elif kind == "maintenance":
                conn.execute(
                    "UPDATE terminal SET maintenance = NOT maintenance WHERE id = %s",
                    (rng.choice(ids),),
                )
            elif kind == "move":
                conn.execute(
                    "UPDATE terminal SET customer_id = %s, status = %s WHERE id = %s",
                    (rng.choice(customers), rng.choice(STATUSES), rng.choice(ids)),
                )
            elif kind == "bulk":
                # The sweep's shape: many terminals in one statement, some unchanged.
                conn.execute(
                    "UPDATE terminal SET status = 'offline' WHERE id = ANY(%s)",
                    (rng.sample(ids, min(10, len(ids))),),
                )
            elif kind == "insert":
                conn.execute(
                    "INSERT INTO terminal (serial, customer_id, model, status)"
                    " VALUES (%s, %s, 'TC-200', %s), (%s, %s, 'TC-200', 'online')",
                    (
                        f"TC-I{next_serial}",
                        rng.choice(customers),
                        rng.choice(STATUSES),
                        f"TC-I{next_serial + 1}",
                        rng.choice(customers),
                    ),
                )
                next_serial += 2
            else:
                conn.execute(
                    "DELETE FROM terminal WHERE id = ANY(%s)", (rng.sample(ids, min(3, len(ids))),)
                )
            _assert_counts_match(conn)
            if step % 40 == 39:
                conn.execute(SQL_COMPACT)
                counts = _assert_counts_match(conn)
                keys = conn.execute(
                    "SELECT count(*) FROM (SELECT DISTINCT customer_id, status, maintenance"
                    " FROM terminal) k"
                ).fetchone()
                assert keys is not None
                (rows,) = conn.execute(SQL_ROWS).fetchone() or (0,)
                assert rows <= keys[0], "a fold leaves one row per key at most"


def test_a_rolled_back_change_and_a_heartbeat_leave_the_counts_alone(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        _fleet(conn, 2, 10)
        conn.execute(SQL_COMPACT)
        before = _assert_counts_match(conn)
        rows = conn.execute(SQL_ROWS).fetchone()
        # A heartbeat's update (ingest's columns) and an update that rewrites the same
        # status fire nothing.
        conn.execute("UPDATE terminal SET last_heartbeat_at = now(), cpu_pct = 99.9")
        conn.execute("UPDATE terminal SET status = status, maintenance = maintenance")
        assert conn.execute(SQL_ROWS).fetchone() == rows
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("UPDATE terminal SET status = 'error'")
            conn.execute("SELECT 1 / 0")
        assert _assert_counts_match(conn) == before


def test_a_truncate_empties_the_counts(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        _fleet(conn, 2, 10)
        conn.execute("TRUNCATE terminal CASCADE")
        assert _assert_counts_match(conn) == {}
        assert conn.execute(SQL_ROWS).fetchone() == (0,)


def test_concurrent_writers_and_folders_lose_no_change(database_url: str) -> None:
    url = libpq_url(database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        customers = _fleet(conn, 5, 200)
        ids = [row[0] for row in conn.execute("SELECT id FROM terminal")]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(url) as conn:
                for _ in range(150):
                    # Batches like ingest's: several terminals in one transaction, some
                    # of them also being changed by the other writers.
                    with conn.transaction():
                        for tid in sorted(rng.sample(ids, 5)):
                            conn.execute(
                                "UPDATE terminal SET status = %s, maintenance = %s,"
                                " customer_id = %s WHERE id = %s",
                                (
                                    rng.choice(STATUSES),
                                    rng.random() < 0.2,
                                    rng.choice(customers),
                                    tid,
                                ),
                            )
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    def folder() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute(SQL_COMPACT)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    folders = [threading.Thread(target=folder) for _ in range(2)]
    for thread in writers + folders:
        thread.start()
    for thread in writers:
        thread.join(240)
    stop.set()
    for thread in folders:
        thread.join(60)
    assert not any(t.is_alive() for t in writers + folders)
    assert errors == []
    with psycopg.connect(url, autocommit=True) as conn:
        _assert_counts_match(conn)
        conn.execute(SQL_COMPACT)
        _assert_counts_match(conn)


def test_ingest_folds_the_counts_unless_another_worker_is_at_it(database_url: str) -> None:
    url = libpq_url(database_url)

    async def fold() -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await fold_terminal_counts(conn)

    with psycopg.connect(url, autocommit=True) as conn:
        _fleet(conn, 3, 30)
        conn.execute("UPDATE terminal SET status = 'error' WHERE id % 2 = 0")
        (rows,) = conn.execute(SQL_ROWS).fetchone() or (0,)
        with psycopg.connect(url) as other, other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(%s)", (COMPACT_LOCK,))
            assert asyncio.run(fold()) == 0
        assert conn.execute(SQL_ROWS).fetchone() == (rows,)
        assert asyncio.run(fold()) == rows
        assert (conn.execute(SQL_ROWS).fetchone() or (0,))[0] < rows
        _assert_counts_match(conn)
