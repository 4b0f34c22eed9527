"""The wait of the daemons that wake on NOTIFY (shared/service_loop.py), on a real
PostgreSQL: every notification it reads reaches the daemon, whichever one ends the
wait, and a stop ends it."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from shared.db import libpq_url
from shared.service_loop import wait_notified

pytestmark = pytest.mark.integration

WAKE, DONE = "tms_test_wake", "tms_test_done"


def _listening(database_url: str) -> psycopg.Connection[tuple[object, ...]]:
    listener = psycopg.connect(libpq_url(database_url), autocommit=True)
    listener.execute(f"LISTEN {WAKE}")
    listener.execute(f"LISTEN {DONE}")
    return listener


def test_a_result_behind_a_wake_in_one_transaction_is_not_dropped(database_url: str) -> None:
    # The sender's case: a new row's NOTIFY and a cancel's arrive in one read. The wake
    # ends the wait; the result after it must still be passed on, at once or in the next
    # wait, never consumed and forgotten.
    seen: list[tuple[str, str]] = []

    def wakes(notify: psycopg.Notify) -> bool:
        seen.append((notify.channel, notify.payload))
        return notify.channel == WAKE

    with _listening(database_url) as listener, psycopg.connect(libpq_url(database_url)) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_notify(%s, 'new'), pg_notify(%s, 'c-1')", (WAKE, DONE))
        stop = threading.Event()
        started = time.monotonic()
        wait_notified(listener, stop, started + 30.0, wakes)
        assert time.monotonic() - started < 10.0, "the wake did not end the wait"
        # Anything the first read left unread comes with the next wait.
        wait_notified(listener, stop, time.monotonic() + 1.0, wakes)
    assert seen == [(WAKE, "new"), (DONE, "c-1")]


def test_a_result_alone_is_passed_on_and_the_wait_goes_on(database_url: str) -> None:
    seen: list[str] = []

    def wakes(notify: psycopg.Notify) -> bool:
        seen.append(notify.payload)
        return notify.channel == WAKE

    with (
        _listening(database_url) as listener,
        psycopg.connect(libpq_url(database_url), autocommit=True) as conn,
    ):
        conn.execute("SELECT pg_notify(%s, 'c-2')", (DONE,))
        started = time.monotonic()
        wait_notified(listener, threading.Event(), started + 1.5, wakes)
        # A result does not end the wait; the deadline does.
        assert time.monotonic() - started >= 1.5
    assert seen == ["c-2"]


def test_any_notification_ends_a_wait_without_a_filter(database_url: str) -> None:
    with (
        _listening(database_url) as listener,
        psycopg.connect(libpq_url(database_url), autocommit=True) as conn,
    ):
        conn.execute("SELECT pg_notify(%s, '')", (DONE,))
        started = time.monotonic()
        wait_notified(listener, threading.Event(), started + 30.0)
        assert time.monotonic() - started < 10.0


def test_a_stop_ends_the_wait_within_a_slice(database_url: str) -> None:
    stop = threading.Event()
    with _listening(database_url) as listener:
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        started = time.monotonic()
        wait_notified(listener, stop, started + 60.0)
        timer.join()
        assert time.monotonic() - started < 10.0
