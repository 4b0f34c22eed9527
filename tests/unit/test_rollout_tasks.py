"""A terminal's update task: its states, what a cancel does, and retries with backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollouts.errors import PolicyError
from rollouts.tasks import (
    FAILURES,
    FINAL,
    IN_FLIGHT,
    MOVES,
    FailureOutcome,
    RetryPolicy,
    TaskState,
    after_failure,
    may_move,
    on_cancel,
)

T0 = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)


def test_every_state_is_queued_in_flight_or_final() -> None:
    assert set(TaskState) == {TaskState.QUEUED} | IN_FLIGHT | FINAL
    assert not IN_FLIGHT & FINAL
    assert FAILURES <= FINAL


def test_nothing_leaves_a_final_state() -> None:
    for state in FINAL:
        assert MOVES[state] == frozenset()


def test_the_happy_path_is_allowed_step_by_step() -> None:
    path = [
        TaskState.QUEUED,
        TaskState.DOWNLOADING,
        TaskState.DOWNLOADED,
        TaskState.VERIFIED,
        TaskState.WAITING_WINDOW,
        TaskState.INSTALLING,
        TaskState.REBOOTING,
        TaskState.SUCCEEDED,
    ]
    assert all(may_move(a, b) for a, b in zip(path, path[1:], strict=False))
    assert may_move(TaskState.VERIFIED, TaskState.INSTALLING)  # the window is open


@pytest.mark.parametrize(
    ("current", "to"),
    [
        (TaskState.QUEUED, TaskState.INSTALLING),  # never without a verified image
        (TaskState.DOWNLOADED, TaskState.INSTALLING),
        (TaskState.INSTALLING, TaskState.CANCELLED),  # a cancel lets an install finish
        (TaskState.REBOOTING, TaskState.QUEUED),  # a failed boot is not retried
        (TaskState.WAITING_WINDOW, TaskState.QUEUED),
        (TaskState.SUCCEEDED, TaskState.QUEUED),
    ],
)
def test_moves_that_are_refused(current: TaskState, to: TaskState) -> None:
    assert not may_move(current, to)


@pytest.mark.parametrize(
    ("state", "after"),
    [
        (TaskState.QUEUED, TaskState.SKIPPED),
        (TaskState.DOWNLOADING, TaskState.CANCELLED),
        (TaskState.DOWNLOADED, TaskState.CANCELLED),
        (TaskState.VERIFIED, TaskState.CANCELLED),
        (TaskState.WAITING_WINDOW, TaskState.CANCELLED),
        (TaskState.INSTALLING, None),  # the TC-200 is being written: let it finish
        (TaskState.REBOOTING, None),
        (TaskState.SUCCEEDED, None),
        (TaskState.FAILED, None),
    ],
)
def test_a_cancel_leaves_not_started_terminals_alone_and_lets_installs_finish(
    state: TaskState, after: TaskState | None
) -> None:
    assert on_cancel(state) == after
    if after is not None:
        assert may_move(state, after)


RETRY = RetryPolicy(
    max_attempts=4, first_delay=timedelta(minutes=5), max_delay=timedelta(minutes=30)
)


def test_retry_delays_double_up_to_the_cap() -> None:
    assert [RETRY.delay_after(n) for n in (1, 2, 3, 4, 5)] == [
        timedelta(minutes=5),
        timedelta(minutes=10),
        timedelta(minutes=20),
        timedelta(minutes=30),
        timedelta(minutes=30),
    ]
    assert RETRY.delay_after(10_000) == timedelta(minutes=30)


def test_retry_at_gives_up_after_the_last_attempt() -> None:
    assert RETRY.retry_at(1, T0) == T0 + timedelta(minutes=5)
    assert RETRY.retry_at(3, T0) == T0 + timedelta(minutes=20)
    assert RETRY.retry_at(4, T0) is None
    assert RetryPolicy(max_attempts=1).retry_at(1, T0) is None


@given(st.integers(1, 200))
def test_retry_delays_never_shrink_and_stay_capped(attempt: int) -> None:
    assert RETRY.delay_after(attempt) <= RETRY.delay_after(attempt + 1) <= RETRY.max_delay


@pytest.mark.parametrize(
    "failed_in",
    [TaskState.DOWNLOADING, TaskState.DOWNLOADED, TaskState.VERIFIED, TaskState.INSTALLING],
)
def test_a_failure_before_the_new_image_runs_is_retried(failed_in: TaskState) -> None:
    outcome = after_failure(failed_in, 1, T0, RETRY)
    assert outcome == FailureOutcome(TaskState.QUEUED, T0 + timedelta(minutes=5))
    assert may_move(failed_in, outcome.state)
    assert after_failure(failed_in, 4, T0, RETRY) == FailureOutcome(TaskState.FAILED)


def test_a_rolled_back_terminal_is_never_retried() -> None:
    for state in (TaskState.INSTALLING, TaskState.REBOOTING):
        outcome = after_failure(state, 1, T0, RETRY, rolled_back=True)
        assert outcome == FailureOutcome(TaskState.ROLLED_BACK)
        assert may_move(state, outcome.state)


def test_a_terminal_that_rebooted_and_did_not_come_up_stays_failed() -> None:
    outcome = after_failure(TaskState.REBOOTING, 1, T0, RETRY)
    assert outcome == FailureOutcome(TaskState.FAILED)
    assert may_move(TaskState.REBOOTING, TaskState.FAILED)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"first_delay": timedelta(hours=3), "max_delay": timedelta(hours=2)},
        {"first_delay": timedelta(seconds=-1)},
        {"factor": 0.5},
    ],
)
def test_a_retry_policy_checks_itself(kwargs: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
