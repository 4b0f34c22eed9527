"""The shell of a daemon that works on PostgreSQL and wakes on NOTIFY (the command
sender, the rollout driver): a working connection and a LISTEN one, opened again with
backoff after an outage, and a wait that a notification or a stop ends early.

What a daemon does between waits is its own; only the connections, the retry and the
wait are shared here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from shared.backoff import Backoff

# A wait is sliced this short so that a stop is noticed within a fraction of a second.
STOP_SLICE_S = 0.5


def serve_listening(
    database_url: str,
    stop: threading.Event,
    work: Callable[[psycopg.Connection[Any], psycopg.Connection[Any]], None],
    *,
    application_name: str,
    channels: Sequence[str],
    log: logging.Logger,
    resumed: str,
) -> None:
    """Run ``work(conn, listener)`` until ``stop``; a PostgreSQL outage closes both and
    opens them again after a backoff.

    ``conn`` is for the work (autocommit off); ``listener`` (autocommit) listens on
    ``channels``. ``work`` returns once ``stop`` is set and lets ``OperationalError``
    out. The daemon's own ``log`` is used, so its lines keep its name; ``resumed`` says
    what it does again once PostgreSQL is back.
    """
    backoff = Backoff(0.5, 10.0)
    while not stop.is_set():
        try:
            with (
                psycopg.connect(
                    database_url, connect_timeout=10, application_name=application_name
                ) as conn,
                psycopg.connect(
                    database_url,
                    autocommit=True,
                    connect_timeout=10,
                    application_name=application_name,
                ) as listener,
            ):
                for channel in channels:
                    listener.execute(f"LISTEN {channel}")
                if backoff.attempt:
                    log.info("PostgreSQL is back; %s", resumed)
                backoff.reset()
                work(conn, listener)
        except psycopg.OperationalError as exc:
            delay = backoff.next_delay()
            log.warning("PostgreSQL unavailable (%s); retrying in %.1f s", first_line(exc), delay)
            stop.wait(delay)


def wait_notified(
    listener: psycopg.Connection[Any],
    stop: threading.Event,
    until: float,
    wakes: Callable[[psycopg.Notify], bool] | None = None,
) -> None:
    """Wait until the ``time.monotonic()`` time ``until``, a stop, or a notification
    that ``wakes`` says ends the wait (any one, without ``wakes``)."""
    while not stop.is_set():
        left = until - time.monotonic()
        if left <= 0:
            return
        # Read out first: ``wakes`` runs with the listener free again. One read may
        # bring several (a transaction's NOTIFYs arrive together), and ``wakes`` sees
        # each: it may act on one (a result passed on) that another one's wake would
        # otherwise drop, as a short-circuiting any() did to a cancel behind a new row.
        notified = list(listener.notifies(timeout=min(left, STOP_SLICE_S), stop_after=1))
        woken = [wakes(notify) for notify in notified] if wakes is not None else notified
        if any(woken):
            return


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (libpq's run over several)."""
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
