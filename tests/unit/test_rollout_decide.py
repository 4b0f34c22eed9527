"""What a rollout does next: thresholds, pace, approval, watch, health, pause and cancel."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollouts.decide import (
    Action,
    Decision,
    InstallGate,
    RolloutPolicy,
    RolloutProgress,
    RolloutState,
    WaveProgress,
    decide,
    halt_reason,
    install_gate,
    needed_successes,
)
from rollouts.errors import PolicyError
from rollouts.health import HealthCounts, HealthSample
from rollouts.pace import RateBucket, RateLimit
from rollouts.tasks import TaskState
from rollouts.windows import parse_window

NOW = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)
S = TaskState
# Health gating off unless a test turns it on: most tests are about something else.
POLICY = RolloutPolicy(
    success_threshold_pct=90,
    error_threshold_pct=20,
    max_concurrent=5,
    health_margin_points=None,
)
HEALTHY = HealthSample(HealthCounts(10, 0, 0), HealthCounts(1000, 20, 30))
SICK = HealthSample(HealthCounts(10, 3, 0), HealthCounts(1000, 20, 30))


def wave(
    *,
    started: bool = True,
    ready: int | None = None,
    approved: bool = False,
    met_at: datetime | None = None,
    **counts: int,
) -> WaveProgress:
    """A wave from counts by state name; ``ready`` defaults to every queued task."""
    by_state = {TaskState(name): n for name, n in counts.items()}
    queued = by_state.get(S.QUEUED, 0)
    return WaveProgress(
        counts=by_state,
        ready=queued if ready is None else ready,
        started=started,
        approved=approved,
        threshold_met_at=met_at,
    )


def rollout(
    *waves: WaveProgress,
    state: RolloutState = RolloutState.RUNNING,
    health: HealthSample | None = None,
    bucket: RateBucket | None = None,
) -> RolloutProgress:
    return RolloutProgress(state=state, waves=waves, health=health, bucket=bucket)


def run(progress: RolloutProgress, policy: RolloutPolicy = POLICY) -> Decision:
    return decide(progress, policy, NOW)


# --- opening waves ---------------------------------------------------------------------


def test_a_new_rollout_opens_its_first_wave() -> None:
    decision = run(rollout(wave(started=False, queued=1), wave(started=False, queued=9)))
    assert decision == Decision(Action.START_WAVE, "starting wave 1 (1 terminal)", wave=1)


def test_a_rollout_with_no_terminal_completes() -> None:
    assert run(rollout()).action is Action.COMPLETE


def test_approval_before_each_wave() -> None:
    policy = replace(POLICY, approve_each_wave=True)
    first = run(rollout(wave(started=False, queued=1)), policy)
    assert first == Decision(
        Action.AWAIT_APPROVAL, "wave 1 (1 terminal) waits for approval", wave=1
    )
    approved = run(rollout(wave(started=False, approved=True, queued=1)), policy)
    assert approved.action is Action.START_WAVE
    # And before the next one, once the first has succeeded.
    progress = rollout(wave(succeeded=1), wave(started=False, queued=9))
    assert run(progress, policy) == Decision(
        Action.AWAIT_APPROVAL, "wave 2 (9 terminals) waits for approval", wave=2
    )


# --- starting tasks --------------------------------------------------------------------


def test_tasks_start_up_to_the_waves_concurrency() -> None:
    decision = run(rollout(wave(queued=10)))
    assert (decision.action, decision.wave, decision.count) == (Action.START_TASKS, 1, 5)
    decision = run(rollout(wave(queued=7, downloading=2, waiting_window=1)))
    assert decision.count == 2  # a terminal waiting for its window holds its place


def test_a_full_wave_waits() -> None:
    decision = run(rollout(wave(queued=5, downloading=3, installing=2)))
    assert decision.action is Action.WAIT
    assert decision.reason == "wave 1: 0 of 10 succeeded, 9 needed (5 in flight, 5 queued)"


def test_tasks_waiting_for_a_retry_are_not_started_yet() -> None:
    decision = run(rollout(wave(queued=2, ready=0, succeeded=8)))
    assert decision.action is Action.WAIT


def test_stragglers_of_an_earlier_wave_start_first() -> None:
    progress = rollout(wave(queued=1, succeeded=9), wave(queued=10))
    decision = run(progress)
    assert (decision.action, decision.wave, decision.count) == (Action.START_TASKS, 1, 1)
    progress = rollout(wave(queued=1, ready=0, succeeded=9), wave(queued=10))
    assert run(progress).wave == 2


def test_the_rate_limits_starts() -> None:
    limit = RateLimit(per_minute=60)  # one a second, a burst of ten
    policy = replace(POLICY, rate=limit, max_concurrent=100)
    full = run(rollout(wave(queued=50)), policy)
    assert full.count == 10  # no bucket yet: a full one
    two_left = RateBucket(tokens=2.0, at=NOW)
    assert run(rollout(wave(queued=50), bucket=two_left), policy).count == 2
    empty = RateBucket(tokens=0.0, at=NOW - timedelta(milliseconds=500))
    decision = run(rollout(wave(queued=50), bucket=empty), policy)
    assert decision.action is Action.WAIT
    assert decision.not_before == NOW + timedelta(milliseconds=500)
    assert decision.reason.endswith("rate limit reached")


def test_the_rate_does_not_hold_up_opening_a_wave() -> None:
    policy = replace(POLICY, rate=RateLimit(60))
    empty = RateBucket(tokens=0.0, at=NOW)
    progress = rollout(wave(succeeded=9, queued=1), wave(started=False, queued=10), bucket=empty)
    assert run(progress, policy).action is Action.START_WAVE


# --- the success threshold, watching and health -----------------------------------------


@pytest.mark.parametrize(
    ("counted", "pct", "needed"),
    [(10, 90, 9), (10, 95, 10), (100, 95, 95), (0, 95, 0), (8, 12.5, 1), (3, 100, 3), (7, 0, 0)],
)
def test_needed_successes_round_up(counted: int, pct: float, needed: int) -> None:
    assert needed_successes(counted, replace(POLICY, success_threshold_pct=pct)) == needed


def test_the_next_wave_opens_at_exactly_the_success_threshold() -> None:
    progress = rollout(wave(succeeded=9, downloading=1), wave(started=False, queued=90))
    assert run(progress) == Decision(Action.START_WAVE, "starting wave 2 (90 terminals)", wave=2)
    progress = rollout(wave(succeeded=8, downloading=2), wave(started=False, queued=90))
    assert run(progress).action is Action.WAIT


def test_skipped_terminals_do_not_count() -> None:
    # 5 of 10 left the target while the rollout ran: 5 of 5 succeeded is 100%.
    progress = rollout(wave(succeeded=5, skipped=4, cancelled=1), wave(started=False, queued=9))
    assert run(progress).action is Action.START_WAVE


def test_a_wave_whose_terminals_all_left_is_passed_over() -> None:
    policy = replace(POLICY, watch_period=timedelta(hours=1))
    progress = rollout(wave(skipped=3), wave(started=False, queued=9))
    assert run(progress, policy).action is Action.START_WAVE


def test_the_watch_period_holds_the_next_wave() -> None:
    policy = replace(POLICY, watch_period=timedelta(minutes=30))
    met = NOW - timedelta(minutes=10)
    progress = rollout(wave(succeeded=10, met_at=met), wave(started=False, queued=9))
    decision = run(progress, policy)
    assert decision.action is Action.WAIT
    assert decision.not_before == met + timedelta(minutes=30)
    assert "watching the updated terminals until 2026-01-14 12:20 UTC" in decision.reason
    later = decide(progress, policy, met + timedelta(minutes=30))
    assert later.action is Action.START_WAVE


def test_a_watch_needs_the_time_the_threshold_was_met() -> None:
    policy = replace(POLICY, watch_period=timedelta(minutes=30))
    with pytest.raises(ValueError, match="threshold_met_at"):
        run(rollout(wave(succeeded=10), wave(started=False, queued=9)), policy)


def test_with_health_gating_the_next_wave_waits_for_a_verdict() -> None:
    policy = replace(POLICY, health_margin_points=5)
    progress = rollout(wave(succeeded=10), wave(started=False, queued=9))
    assert run(progress, policy).action is Action.WAIT
    assert run(replace(progress, health=HEALTHY), policy).action is Action.START_WAVE


def test_sick_updated_terminals_halt_the_rollout_at_any_time() -> None:
    policy = replace(POLICY, health_margin_points=5)
    # Wave 2 running well, but the terminals updated so far are sick.
    progress = rollout(wave(succeeded=10), wave(succeeded=3, queued=6), health=SICK)
    decision = run(progress, policy)
    assert decision.action is Action.HALT
    assert decision.reason == (
        "health: updated terminals: 3 of 10 in error (30.0%) against 2.0% of the other "
        "1000 (more than 5 points worse)"
    )
    # Without gating the same counts change nothing.
    assert run(progress).action is Action.START_TASKS


# --- halting -------------------------------------------------------------------------


def test_the_error_threshold_halts_with_a_reason() -> None:
    decision = run(rollout(wave(failed=3, succeeded=5, downloading=2)))
    assert decision == Decision(
        Action.HALT, "wave 1: 3 of 10 terminals failed (30% > error threshold 20%)"
    )


def test_exactly_at_the_error_threshold_does_not_halt() -> None:
    policy = replace(POLICY, success_threshold_pct=80)
    assert run(rollout(wave(failed=2, succeeded=5, queued=3)), policy).action is (
        Action.START_TASKS
    )


def test_rolled_back_terminals_count_as_failures() -> None:
    decision = run(rollout(wave(failed=1, rolled_back=2, succeeded=7)))
    assert decision.reason == (
        "wave 1: 3 of 10 terminals failed, 2 of them rolled back (30% > error threshold 20%)"
    )


def test_an_error_threshold_that_floats_would_get_wrong() -> None:
    # 7 of 100 is 7%: 100 * 7 / 100 is exactly 7.0, but 0.07 * 100 is not; the
    # comparison is exact either way.
    policy = replace(POLICY, error_threshold_pct=7, success_threshold_pct=0)
    assert run(rollout(wave(failed=7, succeeded=93)), policy).action is Action.COMPLETE
    assert run(rollout(wave(failed=8, succeeded=92)), policy).action is Action.HALT


def test_an_earlier_wave_can_still_halt_the_rollout() -> None:
    # Wave 1's stragglers fail after wave 2 opened.
    progress = rollout(wave(succeeded=7, failed=3), wave(succeeded=1, queued=9))
    decision = run(progress, replace(POLICY, success_threshold_pct=70))
    assert decision.action is Action.HALT
    assert decision.reason.startswith("wave 1: 3 of 10")


def test_the_rollout_wide_failure_cap() -> None:
    policy = replace(POLICY, max_failures=2, error_threshold_pct=50)
    progress = rollout(wave(failed=1, succeeded=9), wave(failed=2, queued=8))
    decision = run(progress, policy)
    assert decision == Decision(Action.HALT, "3 terminals failed in this rollout (more than 2)")
    progress = rollout(wave(failed=1, succeeded=9), wave(failed=1, queued=9))
    assert run(progress, policy).action is Action.START_TASKS


def test_a_wave_that_can_no_longer_reach_its_success_threshold_halts() -> None:
    policy = replace(POLICY, success_threshold_pct=100, error_threshold_pct=50)
    decision = run(rollout(wave(failed=1, succeeded=5, downloading=4)), policy)
    assert decision == Decision(
        Action.HALT,
        "wave 1: at most 9 of 10 terminals can still succeed, 10 needed (success threshold 100%)",
    )


def test_a_paused_rollout_still_halts() -> None:
    decision = run(rollout(wave(failed=3, succeeded=7), state=RolloutState.PAUSED))
    assert decision.action is Action.HALT


def test_halt_reason_alone() -> None:
    assert halt_reason(rollout(wave(queued=10)), POLICY) is None
    assert halt_reason(rollout(wave(failed=10)), POLICY) is not None


# --- pause, cancel, complete --------------------------------------------------------------


def test_a_paused_rollout_starts_nothing() -> None:
    decision = run(rollout(wave(queued=8, downloading=2), state=RolloutState.PAUSED))
    assert decision == Decision(Action.IDLE, "paused: no download or install starts; 2 in flight")


@pytest.mark.parametrize(
    "state", [RolloutState.CANCELLED, RolloutState.HALTED, RolloutState.COMPLETED]
)
def test_a_stopped_rollout_does_nothing(state: RolloutState) -> None:
    # Even with failures past the threshold: it halts once, not on every tick.
    decision = run(rollout(wave(queued=5, failed=5), state=state))
    assert decision == Decision(Action.IDLE, f"the rollout is {state}")


def test_the_last_wave_waits_for_its_stragglers_then_completes() -> None:
    progress = rollout(wave(succeeded=10), wave(succeeded=9, installing=1))
    decision = run(progress)
    assert decision == Decision(Action.WAIT, "last wave: 1 terminal not finished yet")
    progress = rollout(wave(succeeded=10), wave(succeeded=9, failed=1))
    assert run(progress) == Decision(Action.COMPLETE, "all 2 waves done: 19 terminals updated")


# --- checks on the inputs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"success_threshold_pct": 101},
        {"error_threshold_pct": -1},
        {"max_failures": -1},
        {"max_concurrent": 0},
        {"watch_period": timedelta(seconds=-1)},
        {"install_time": timedelta(seconds=-1)},
        {"health_margin_points": 120},
    ],
)
def test_a_policy_checks_itself(kwargs: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        RolloutPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_wave_checks_its_counts() -> None:
    with pytest.raises(ValueError, match="queued"):
        wave(queued=2, ready=3)
    with pytest.raises(ValueError, match="not started"):
        wave(started=False, downloading=1)
    with pytest.raises(ValueError, match="negative"):
        wave(queued=-1, ready=0)


# --- the install gate ----------------------------------------------------------------------

NIGHT = parse_window("02:00-05:00")
BERLIN = "Europe/Berlin"


def test_installs_wait_for_the_stores_window() -> None:
    noon = install_gate(RolloutState.RUNNING, NOW, BERLIN, NIGHT, POLICY)
    assert noon.gate is InstallGate.WAIT_WINDOW
    assert noon.not_before == datetime(2026, 1, 15, 1, 0, tzinfo=UTC)  # 02:00 in Berlin
    night = datetime(2026, 1, 15, 1, 30, tzinfo=UTC)
    assert install_gate(RolloutState.RUNNING, night, BERLIN, NIGHT, POLICY).gate is (
        InstallGate.INSTALL
    )
    assert install_gate(RolloutState.RUNNING, NOW, BERLIN, None, POLICY).gate is (
        InstallGate.INSTALL
    )


def test_an_install_does_not_begin_too_close_to_the_windows_end() -> None:
    policy = replace(POLICY, install_time=timedelta(minutes=15))
    late = datetime(2026, 1, 15, 3, 50, tzinfo=UTC)  # 04:50 in Berlin
    decision = install_gate(RolloutState.RUNNING, late, BERLIN, NIGHT, policy)
    assert decision.gate is InstallGate.WAIT_WINDOW
    assert decision.not_before == datetime(2026, 1, 16, 1, 0, tzinfo=UTC)
    just_in_time = datetime(2026, 1, 15, 3, 45, tzinfo=UTC)
    assert install_gate(RolloutState.RUNNING, just_in_time, BERLIN, NIGHT, policy).gate is (
        InstallGate.INSTALL
    )


def test_a_window_that_runs_on_into_the_next_is_not_closing() -> None:
    always = parse_window("00:00-24:00")
    before_midnight = datetime(2026, 1, 14, 22, 55, tzinfo=UTC)  # 23:55 in Berlin
    decision = install_gate(RolloutState.RUNNING, before_midnight, BERLIN, always, POLICY)
    assert decision.gate is InstallGate.INSTALL


@pytest.mark.parametrize(
    "state",
    [RolloutState.PAUSED, RolloutState.HALTED, RolloutState.CANCELLED, RolloutState.COMPLETED],
)
def test_installs_hold_unless_the_rollout_runs(state: RolloutState) -> None:
    night = datetime(2026, 1, 15, 1, 30, tzinfo=UTC)
    assert install_gate(state, night, BERLIN, NIGHT, POLICY).gate is InstallGate.HOLD


# --- a whole rollout, driven -----------------------------------------------------------------


def _drive(
    sizes: list[int], fails: set[int], policy: RolloutPolicy, ticks: int = 10_000
) -> tuple[Decision, int]:
    """Run ``decide`` against a world where every started task ends at the next tick,
    the terminals numbered in ``fails`` failing; the last decision and the most tasks
    in flight in one wave at once."""
    state = [{"queued": size, "downloading": 0, "succeeded": 0, "failed": 0} for size in sizes]
    started = [False] * len(sizes)
    numbering = [sum(sizes[:i]) for i in range(len(sizes))]
    taken = [0] * len(sizes)
    peak = 0
    for _ in range(ticks):
        waves = tuple(
            WaveProgress(
                counts={TaskState(k): v for k, v in counts.items()},
                ready=counts["queued"],
                started=started[i],
            )
            for i, counts in enumerate(state)
        )
        decision = decide(rollout(*waves), policy, NOW)
        if decision.action is Action.START_WAVE:
            assert decision.wave is not None and not any(started[decision.wave - 1 :])
            started[decision.wave - 1] = True
        elif decision.action is Action.START_TASKS:
            assert decision.wave is not None
            counts = state[decision.wave - 1]
            counts["queued"] -= decision.count
            counts["downloading"] += decision.count
            peak = max(peak, counts["downloading"])
        elif decision.action is Action.WAIT:
            for i, counts in enumerate(state):  # the world moves on
                for _ in range(counts["downloading"]):
                    number = numbering[i] + taken[i]
                    taken[i] += 1
                    counts["failed" if number in fails else "succeeded"] += 1
                counts["downloading"] = 0
        else:
            return decision, peak
    raise AssertionError("the rollout never ended")


@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=4),
    st.integers(1, 12),
)
@settings(max_examples=50)
def test_a_clean_rollout_opens_every_wave_in_order_and_completes(
    sizes: list[int], max_concurrent: int
) -> None:
    policy = replace(POLICY, max_concurrent=max_concurrent)
    decision, peak = _drive(sizes, set(), policy)
    assert decision == Decision(
        Action.COMPLETE, f"all {len(sizes)} waves done: {sum(sizes)} terminals updated"
    )
    assert peak <= max_concurrent


def test_an_image_failing_on_some_terminals_halts_the_wave_where_they_fail() -> None:
    # Waves of 1, 9, 40, 50; in wave 2 (terminals 1..9) two of nine fail (22%).
    decision, _ = _drive([1, 9, 40, 50], {3, 8}, replace(POLICY, success_threshold_pct=70))
    assert decision.action is Action.HALT
    assert decision.reason == "wave 2: 2 of 9 terminals failed (22.2% > error threshold 20%)"
