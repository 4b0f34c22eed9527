"""When `tms up` restarts a part that ended, and when it gives up: pure, given the part's runs.

A part that dies is restarted after a delay that doubles with each quick failure up to
a cap, and falls back to the first delay once a run has stayed up for a while. Only a
part that keeps failing to start (it exits, or is not ready in time, several times in a
row without ever becoming ready) stops the platform: then nothing would come of more
attempts but a log that hides the first error.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    factor: float = 2.0
    # A run that stayed up this long after it became ready resets the backoff.
    healthy_after_s: float = 60.0
    # Failed starts in a row (never ready) after which the platform stops.
    give_up_after: int = 5

    def __post_init__(self) -> None:
        if self.first_delay_s <= 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError("need 0 < first_delay_s <= max_delay_s")
        if self.factor < 1 or self.healthy_after_s <= 0 or self.give_up_after < 1:
            raise ValueError("need factor >= 1, healthy_after_s > 0 and give_up_after >= 1")


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a part, ended: monotonic times, and how it ended in words."""

    started_at: float
    ended_at: float
    # When it became ready (its port answered...); None: it never did.
    ready_at: float | None
    ending: str

    @property
    def failed_start(self) -> bool:
        return self.ready_at is None

    def healthy(self, policy: RestartPolicy) -> bool:
        return self.ready_at is not None and self.ended_at - self.ready_at >= policy.healthy_after_s


@dataclass(frozen=True, slots=True)
class Restart:
    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


def next_step(policy: RestartPolicy, runs: Sequence[Run]) -> Restart | GiveUp:
    """What to do after the last of ``runs`` (oldest first, at least one) ended."""
    if not runs:
        raise ValueError("next_step needs the run that just ended")
    failed_starts = _trailing(runs, lambda run: run.failed_start)
    if failed_starts >= policy.give_up_after:
        first = runs[-failed_starts]
        span = runs[-1].ended_at - first.started_at
        return GiveUp(
            f"it failed to start {failed_starts} times in a row in {span:.0f} s "
            f"(last: {runs[-1].ending})"
        )
    quick = _trailing(runs, lambda run: not run.healthy(policy))
    if quick == 0:
        return Restart(policy.first_delay_s)
    # Capped before the power, so a part that fails for days never overflows a float.
    exponent = min(quick - 1, 64)
    return Restart(min(policy.max_delay_s, policy.first_delay_s * policy.factor**exponent))


def _trailing(runs: Sequence[Run], holds: Callable[[Run], bool]) -> int:
    count = 0
    for run in reversed(runs):
        if not holds(run):
            break
        count += 1
    return count


def describe_exit(returncode: int) -> str:
    """``Popen.returncode`` in words: "exit code 1", "killed by SIGKILL"."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
