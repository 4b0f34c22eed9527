"""What a rollout does next: the policy, the progress the driver reads from the database,
and ``decide``, which turns them into one action with a reason a person can read.

The driver calls ``decide`` on every tick, carries out the one action it returns (start
N tasks of a wave, open the next wave, ...) and calls again; nothing here remembers
anything between calls. In order:

1. A cancelled, halted or completed rollout does nothing (``IDLE``).
2. Halt, running or paused, when a started wave's failures (failed + rolled back) are
   more than the error threshold of its terminals, the rollout's failures are more than
   ``max_failures``, the updated terminals' health is worse than the rest's by more
   than the margin (``rollouts.health``), or the current wave can no longer reach its
   success threshold. Exactly at a threshold does not halt. A halt's reason stays true
   until the facts or the policy change: resuming past a halt means raising the
   threshold that stopped it (a person accepting more risk), not pressing a button.
3. A paused rollout starts nothing: ``IDLE``.
4. Start queued tasks whose retry time has come, earliest wave first, as far as the
   wave's concurrency and the fleet-wide rate allow.
5. Open the next wave once the current one's successes reach the success threshold and
   the watch period after that has passed with a health verdict; ask for approval
   first when the policy says so. Complete when every wave is open and every task
   final; otherwise wait, saying for what.

Thresholds count a wave's terminals less those skipped or cancelled (terminals that
left the target while the rollout ran): they can neither succeed nor fail. The two
thresholds meet: with a success threshold of 90%, a third failure in a wave of 20
halts it (success is out of reach) even under an error threshold of 20%; a console
form may warn when the error threshold is above 100 less the success threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction

from rollouts.errors import PolicyError
from rollouts.health import HealthSample, health_verdict
from rollouts.pace import RateBucket, RateLimit
from rollouts.tasks import FAILURES, FINAL, IN_FLIGHT, RetryPolicy, TaskState
from rollouts.windows import MaintenanceWindow, next_window_start, window_closes_at


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # by a person: nothing starts, what runs finishes
    HALTED = "halted"  # by a rule (the reason is kept): as paused until a person acts
    CANCELLED = "cancelled"  # not-started tasks skipped, in-flight downloads stopped
    COMPLETED = "completed"


class Action(StrEnum):
    START_TASKS = "start_tasks"  # start ``count`` queued tasks of ``wave``
    START_WAVE = "start_wave"  # open ``wave``
    AWAIT_APPROVAL = "await_approval"  # ``wave`` needs a person's approval to open
    WAIT = "wait"  # nothing to do until something changes, or ``not_before``
    HALT = "halt"  # move the rollout to halted with ``reason``
    COMPLETE = "complete"  # move the rollout to completed
    IDLE = "idle"  # paused, halted, cancelled or completed


@dataclass(frozen=True)
class RolloutPolicy:
    """A rollout's pace and its stop rules; percentages are of a wave's counted terminals."""

    success_threshold_pct: float = 95.0  # succeeded, to open the next wave
    error_threshold_pct: float = 5.0  # failed + rolled back, more than this halts
    max_failures: int | None = None  # across the rollout, more than this halts
    max_concurrent: int = 100  # per wave, in flight at once (waiting for a window included)
    rate: RateLimit | None = None  # fleet-wide starts a minute
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    approve_each_wave: bool = False
    watch_period: timedelta = timedelta(0)  # after a wave meets its threshold
    health_margin_points: float | None = 5.0  # None: no health gating
    install_time: timedelta = timedelta(minutes=15)  # window left to begin an install

    def __post_init__(self) -> None:
        for name, value in (
            ("success threshold", self.success_threshold_pct),
            ("error threshold", self.error_threshold_pct),
        ):
            if not 0 <= value <= 100:
                raise PolicyError(f"the {name} is a percentage between 0 and 100")
        if self.max_failures is not None and self.max_failures < 0:
            raise PolicyError("the most failures allowed cannot be negative")
        if self.max_concurrent < 1:
            raise PolicyError("at least 1 terminal per wave must be allowed at once")
        if self.watch_period < timedelta(0) or self.install_time < timedelta(0):
            raise PolicyError("the watch period and install time cannot be negative")
        if self.health_margin_points is not None and not 0 <= self.health_margin_points <= 100:
            raise PolicyError("the health margin is between 0 and 100 percentage points")


@dataclass(frozen=True)
class WaveProgress:
    """One wave as the driver counts it now."""

    counts: Mapping[TaskState, int]  # tasks per state; missing states are 0
    ready: int  # queued tasks whose retry time has come (all queued ones at first)
    started: bool = False
    approved: bool = False
    # When its successes first reached the threshold: the finish time of its
    # ``needed_successes``-th success. Needed for the watch period.
    threshold_met_at: datetime | None = None

    def __post_init__(self) -> None:
        if any(n < 0 for n in self.counts.values()):
            raise ValueError("task counts cannot be negative")
        if not 0 <= self.ready <= self.count(TaskState.QUEUED):
            raise ValueError("ready tasks are some of the queued ones")
        if not self.started and self.size - self.count(TaskState.QUEUED) - self.count(
            TaskState.SKIPPED
        ):
            raise ValueError("a wave not started has only queued or skipped tasks")

    def count(self, state: TaskState) -> int:
        return self.counts.get(state, 0)

    @property
    def size(self) -> int:
        return sum(self.counts.values())

    @property
    def counted(self) -> int:
        """The terminals its thresholds count: all but the skipped and cancelled."""
        return self.size - self.count(TaskState.SKIPPED) - self.count(TaskState.CANCELLED)

    @property
    def failures(self) -> int:
        return sum(self.count(state) for state in FAILURES)

    @property
    def in_flight(self) -> int:
        return sum(self.count(state) for state in IN_FLIGHT)

    @property
    def unfinished(self) -> int:
        return self.size - sum(self.count(state) for state in FINAL)


@dataclass(frozen=True)
class RolloutProgress:
    """Everything ``decide`` looks at, read by the driver in one go."""

    state: RolloutState
    waves: tuple[WaveProgress, ...]
    health: HealthSample | None = None  # over the watch period; None: not measured
    bucket: RateBucket | None = None  # the fleet's start budget; None: a full one


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    wave: int | None = None  # 1-based
    count: int = 0  # START_TASKS: how many
    not_before: datetime | None = None  # WAIT: when waiting ends by itself, if known


def needed_successes(counted: int, policy: RolloutPolicy) -> int:
    """Successes a wave of ``counted`` terminals needs to open the next (rounded up)."""
    return math.ceil(counted * _exact(policy.success_threshold_pct) / 100)


def decide(progress: RolloutProgress, policy: RolloutPolicy, now: datetime) -> Decision:
    """The next action of the rollout (see the module docstring for the order)."""
    if progress.state in (RolloutState.CANCELLED, RolloutState.HALTED, RolloutState.COMPLETED):
        return Decision(Action.IDLE, f"the rollout is {progress.state}")
    halt = halt_reason(progress, policy)
    if halt is not None:
        return Decision(Action.HALT, halt)
    if progress.state is RolloutState.PAUSED:
        in_flight = sum(wave.in_flight for wave in progress.waves)
        return Decision(
            Action.IDLE, f"paused: no download or install starts; {in_flight} in flight"
        )
    start, rate_wait = _start_tasks(progress, policy, now)
    if start is not None:
        return start
    step = _next_wave(progress, policy, now)
    if step.action is Action.WAIT and rate_wait is not None:
        not_before = rate_wait if step.not_before is None else min(step.not_before, rate_wait)
        return Decision(Action.WAIT, f"{step.reason}; rate limit reached", not_before=not_before)
    return step


def halt_reason(progress: RolloutProgress, policy: RolloutPolicy) -> str | None:
    """Why the rollout must halt now, or None."""
    limit = _exact(policy.error_threshold_pct)
    for number, wave in enumerate(progress.waves, start=1):
        if wave.started and wave.counted and Fraction(100 * wave.failures, wave.counted) > limit:
            rolled_back = wave.count(TaskState.ROLLED_BACK)
            detail = f", {rolled_back} of them rolled back" if rolled_back else ""
            return (
                f"wave {number}: {wave.failures} of {wave.counted} terminals failed{detail} "
                f"({_pct(wave.failures, wave.counted)} > error threshold "
                f"{policy.error_threshold_pct:g}%)"
            )
    total = sum(wave.failures for wave in progress.waves)
    if policy.max_failures is not None and total > policy.max_failures:
        return f"{total} terminals failed in this rollout (more than {policy.max_failures})"
    if policy.health_margin_points is not None and progress.health is not None:
        sample = progress.health
        verdict = health_verdict(sample.updated, sample.rest, policy.health_margin_points)
        if not verdict.healthy:
            return f"health: {verdict.reason}"
    return _unreachable(progress, policy)


def _unreachable(progress: RolloutProgress, policy: RolloutPolicy) -> str | None:
    """A reason when the newest open wave can no longer reach its success threshold."""
    current = _current(progress)
    if current is None:
        return None
    wave = progress.waves[current]
    needed = needed_successes(wave.counted, policy)
    possible = wave.count(TaskState.SUCCEEDED) + wave.unfinished
    if possible >= needed:
        return None
    return (
        f"wave {current + 1}: at most {possible} of {wave.counted} terminals can still "
        f"succeed, {needed} needed (success threshold {policy.success_threshold_pct:g}%)"
    )


def _start_tasks(
    progress: RolloutProgress, policy: RolloutPolicy, now: datetime
) -> tuple[Decision | None, datetime | None]:
    """Tasks to start now, earliest wave first; else when the rate allows one more."""
    bucket = None
    if policy.rate is not None:
        bucket = (progress.bucket or RateBucket.full(policy.rate, now)).refilled(policy.rate, now)
    for number, wave in enumerate(progress.waves, start=1):
        room = min(wave.ready, policy.max_concurrent - wave.in_flight)
        if not wave.started or room <= 0:
            continue
        if bucket is not None and policy.rate is not None:
            if bucket.available == 0:
                return None, bucket.next_token_at(policy.rate)
            room = min(room, bucket.available)
        reason = (
            f"wave {number}: starting {room} ({wave.in_flight} in flight, "
            f"at most {policy.max_concurrent}; {wave.ready} ready)"
        )
        return Decision(Action.START_TASKS, reason, wave=number, count=room), None
    return None, None


def _next_wave(progress: RolloutProgress, policy: RolloutPolicy, now: datetime) -> Decision:
    """Open, approve, complete or wait, once no task can be started."""
    current = _current(progress)
    if current is None:
        if not progress.waves:
            return Decision(Action.COMPLETE, "no terminal to update")
        return _open(progress, policy, 0)
    wave = progress.waves[current]
    number = current + 1
    needed = needed_successes(wave.counted, policy)
    succeeded = wave.count(TaskState.SUCCEEDED)
    if succeeded < needed:
        return Decision(
            Action.WAIT,
            f"wave {number}: {succeeded} of {wave.counted} succeeded, {needed} needed "
            f"({wave.in_flight} in flight, {wave.count(TaskState.QUEUED)} queued)",
        )
    if number == len(progress.waves):
        unfinished = sum(w.unfinished for w in progress.waves)
        if unfinished:
            return Decision(Action.WAIT, f"last wave: {_terminals(unfinished)} not finished yet")
        done = sum(w.count(TaskState.SUCCEEDED) for w in progress.waves)
        return Decision(Action.COMPLETE, f"all {number} waves done: {done} terminals updated")
    watch = _watching(wave, number, needed, policy, now)
    if watch is not None:
        return watch
    if policy.health_margin_points is not None and progress.health is None:
        return Decision(Action.WAIT, f"wave {number}: waiting for the updated terminals' health")
    return _open(progress, policy, current + 1)


def _watching(
    wave: WaveProgress, number: int, needed: int, policy: RolloutPolicy, now: datetime
) -> Decision | None:
    """A wait while the watch period after the wave met its threshold runs."""
    if needed == 0 or policy.watch_period <= timedelta(0):
        return None
    if wave.threshold_met_at is None:
        raise ValueError(f"wave {number} met its success threshold: threshold_met_at is needed")
    until = wave.threshold_met_at + policy.watch_period
    if now >= until:
        return None
    return Decision(
        Action.WAIT,
        f"wave {number} met its success threshold; watching the updated terminals until "
        f"{until:%Y-%m-%d %H:%M} UTC",
        not_before=until,
    )


def _open(progress: RolloutProgress, policy: RolloutPolicy, index: int) -> Decision:
    wave = progress.waves[index]
    number = index + 1
    if policy.approve_each_wave and not wave.approved:
        return Decision(
            Action.AWAIT_APPROVAL,
            f"wave {number} ({_terminals(wave.size)}) waits for approval",
            wave=number,
        )
    return Decision(
        Action.START_WAVE, f"starting wave {number} ({_terminals(wave.size)})", wave=number
    )


def _current(progress: RolloutProgress) -> int | None:
    """The index of the newest open wave; None before the first opens."""
    started = [i for i, wave in enumerate(progress.waves) if wave.started]
    return started[-1] if started else None


class InstallGate(StrEnum):
    INSTALL = "install"
    WAIT_WINDOW = "wait_window"  # the store's window is closed, or closes too soon
    HOLD = "hold"  # the rollout is paused, halted, cancelled or over


@dataclass(frozen=True)
class InstallDecision:
    gate: InstallGate
    not_before: datetime | None = None  # WAIT_WINDOW: when the window next opens


def install_gate(
    state: RolloutState,
    now: datetime,
    tz_name: str,
    window: MaintenanceWindow | None,
    policy: RolloutPolicy,
) -> InstallDecision:
    """Whether a verified (or window-waiting) terminal may begin its install now."""
    if state is not RolloutState.RUNNING:
        return InstallDecision(InstallGate.HOLD)
    start = next_window_start(now, tz_name, window)
    if start > now:
        return InstallDecision(InstallGate.WAIT_WINDOW, start)
    closes = window_closes_at(now, tz_name, window)
    if closes is not None and closes - now < policy.install_time:
        # Too little of tonight's window is left to be sure the till is back in time;
        # a window that runs straight on into the next one is not closing.
        after = next_window_start(closes, tz_name, window)
        if after > closes:
            return InstallDecision(InstallGate.WAIT_WINDOW, after)
    return InstallDecision(InstallGate.INSTALL)


def _exact(pct: float) -> Fraction:
    # The percentage as typed (20, 12.5): a rate exactly at a threshold must compare
    # equal to it, whatever the float nearest the typed value is.
    return Fraction(repr(float(pct)))


def _terminals(count: int) -> str:
    return f"{count} terminal" if count == 1 else f"{count} terminals"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.3g}%"
