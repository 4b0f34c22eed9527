"""Waiting in tests: for the condition itself, with a deadline, failing loudly.

A test waits for what it needs (a port that answers, a table that exists, a row that
is there), never for a proxy of it or for a fixed time. Deadlines are generous: the
suite must pass on a 2-core machine whose cores are busy with something else, and a
deadline only costs time when the test fails anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
POLL_S = 0.05


def wait_until(
    predicate: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = POLL_S,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises AssertionError naming ``what`` and the timeout when the deadline passes.
    ``what`` may be a callable, evaluated only then (e.g. to show a process's output).
    ``interval`` is the pause between polls.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {described}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T], what: str, timeout: float = DEFAULT_TIMEOUT_S
) -> T:
    """``wait_until`` inside an event loop: the loop runs while it waits."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)
    return value
