"""One terminal's part in a rollout as pure rules: its states, the moves between them,
what a cancel does to it, and when a failed attempt is tried again.

queued -> downloading -> downloaded -> verified -> [waiting_window] -> installing ->
rebooting -> succeeded; failed / rolled_back on the way; skipped / cancelled when the
rollout is cancelled (or the terminal stops qualifying) before its install begins.

A failed attempt with attempts left goes back to queued, with a time before which it
is not started again (``RetryPolicy.retry_at``); ``failed`` is the final state after
the last attempt, or at once for a terminal that rebooted and neither reported the new
version nor rolled back (its state is unknown: a person should look at it).
``rolled_back`` is final at once and never retried: the image did not boot on that
terminal, and trying again would take a store's till down a second time for an image
that already failed on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rollouts.errors import PolicyError


class TaskState(StrEnum):
    QUEUED = "queued"  # targeted, not started (or waiting to retry)
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    VERIFIED = "verified"  # size, SHA-256 and signature checked on the store PC
    WAITING_WINDOW = "waiting_window"  # verified, the store's window is closed
    INSTALLING = "installing"  # the USB transfer to the TC-200 has begun
    REBOOTING = "rebooting"
    SUCCEEDED = "succeeded"  # came up reporting the new version
    FAILED = "failed"  # after the last attempt
    ROLLED_BACK = "rolled_back"  # the new image did not come up; the old one runs
    CANCELLED = "cancelled"  # its download or wait was stopped by a cancel
    SKIPPED = "skipped"  # never started: the rollout was cancelled, or it left the target


FINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.ROLLED_BACK,
        TaskState.CANCELLED,
        TaskState.SKIPPED,
    }
)
# Started and not final: what a wave's concurrency limit counts. A terminal waiting for
# its window holds its place, so ``max_concurrent`` also bounds the installs that can
# begin together when many stores' windows open at the same hour.
IN_FLIGHT = frozenset(
    {
        TaskState.DOWNLOADING,
        TaskState.DOWNLOADED,
        TaskState.VERIFIED,
        TaskState.WAITING_WINDOW,
        TaskState.INSTALLING,
        TaskState.REBOOTING,
    }
)
# The error threshold counts these.
FAILURES = frozenset({TaskState.FAILED, TaskState.ROLLED_BACK})
# Once the TC-200 is being written, stopping halfway could leave it without a bootable
# image: a cancel lets these finish.
TOUCHING_DEVICE = frozenset({TaskState.INSTALLING, TaskState.REBOOTING})

# A failure in these may be tried again: the TC-200 still runs its old image (a transfer
# that fails before its commit leaves it untouched).
RETRYABLE = frozenset(
    {TaskState.DOWNLOADING, TaskState.DOWNLOADED, TaskState.VERIFIED, TaskState.INSTALLING}
)
_RETRY = frozenset({TaskState.QUEUED, TaskState.FAILED})
MOVES: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.DOWNLOADING, TaskState.SKIPPED}),
    TaskState.DOWNLOADING: frozenset(
        {TaskState.DOWNLOADING, TaskState.DOWNLOADED, TaskState.CANCELLED} | _RETRY
    ),
    TaskState.DOWNLOADED: frozenset({TaskState.VERIFIED, TaskState.CANCELLED} | _RETRY),
    TaskState.VERIFIED: frozenset(
        {TaskState.WAITING_WINDOW, TaskState.INSTALLING, TaskState.CANCELLED} | _RETRY
    ),
    TaskState.WAITING_WINDOW: frozenset({TaskState.INSTALLING, TaskState.CANCELLED}),
    TaskState.INSTALLING: frozenset(
        {TaskState.REBOOTING, TaskState.ROLLED_BACK} | _RETRY  # a transfer that failed
    ),
    TaskState.REBOOTING: frozenset({TaskState.SUCCEEDED, TaskState.ROLLED_BACK, TaskState.FAILED}),
    **{state: frozenset() for state in FINAL},
}


def may_move(current: TaskState, to: TaskState) -> bool:
    return to in MOVES[current]


def on_cancel(state: TaskState) -> TaskState | None:
    """The state a rollout's cancel moves a task to; None to let it run on (or it is final)."""
    if state is TaskState.QUEUED:
        return TaskState.SKIPPED
    if state in IN_FLIGHT and state not in TOUCHING_DEVICE:
        return TaskState.CANCELLED
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per terminal and the capped exponential delay between them.

    No jitter, unlike ``shared.backoff.Backoff`` (stateful, random, for reconnects):
    retries are started through the rollout's rate limit, which already spreads them,
    and a fixed time can be stored in the task's row and shown in the console.
    """

    max_attempts: int = 3
    first_delay: timedelta = timedelta(minutes=5)
    max_delay: timedelta = timedelta(hours=2)
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise PolicyError("attempts per terminal must be at least 1")
        if not timedelta(0) <= self.first_delay <= self.max_delay:
            raise PolicyError("retry delays need 0 <= first delay <= longest delay")
        if self.factor < 1:
            raise PolicyError("the retry delay factor must be at least 1")

    def delay_after(self, attempt: int) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        # Capped in seconds, before a timedelta (which overflows at a billion days) is
        # made, and the exponent first, so that a float cannot overflow either.
        grown = self.first_delay.total_seconds() * self.factor ** min(max(0, attempt - 1), 64)
        return timedelta(seconds=min(grown, self.max_delay.total_seconds()))

    def retry_at(self, attempt: int, failed_at: datetime) -> datetime | None:
        """When failed attempt ``attempt`` (1-based) may be tried again; None: give up."""
        if attempt >= self.max_attempts:
            return None
        return failed_at + self.delay_after(attempt)


@dataclass(frozen=True)
class FailureOutcome:
    """Where a failed attempt leaves its task: queued until ``retry_at``, or final."""

    state: TaskState
    retry_at: datetime | None = None


def after_failure(
    failed_in: TaskState,
    attempt: int,
    failed_at: datetime,
    retry: RetryPolicy,
    *,
    rolled_back: bool = False,
) -> FailureOutcome:
    """The outcome of attempt ``attempt`` (1-based) failing in state ``failed_in``.

    Only the steps before the new image runs are retried (see the module docstring); a
    terminal that rebooted and did not come up with the new version stays failed."""
    if rolled_back:
        return FailureOutcome(TaskState.ROLLED_BACK)
    if failed_in not in RETRYABLE:
        return FailureOutcome(TaskState.FAILED)
    at = retry.retry_at(attempt, failed_at)
    return FailureOutcome(TaskState.FAILED) if at is None else FailureOutcome(TaskState.QUEUED, at)
