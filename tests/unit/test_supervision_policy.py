"""The restart policy of `tms up`: backoff, its reset, and when a part is given up."""

from __future__ import annotations

import signal

import pytest

from tms.supervision_policy import (
    GiveUp,
    Restart,
    RestartPolicy,
    Run,
    describe_exit,
    next_step,
)

POLICY = RestartPolicy(
    first_delay_s=0.5, max_delay_s=8.0, factor=2.0, healthy_after_s=60.0, give_up_after=3
)


def crashed_after_ready(at: float, up_s: float = 5.0) -> Run:
    """A run that became ready one second after its start, then ended ``up_s`` later."""
    return Run(started_at=at, ended_at=at + 1 + up_s, ready_at=at + 1, ending="killed by SIGKILL")


def failed_start(at: float, ending: str = "exit code 1") -> Run:
    return Run(started_at=at, ended_at=at + 0.3, ready_at=None, ending=ending)


def test_the_first_death_is_restarted_after_the_first_delay() -> None:
    assert next_step(POLICY, [crashed_after_ready(0)]) == Restart(0.5)


def test_each_quick_death_doubles_the_delay_up_to_the_cap() -> None:
    runs: list[Run] = []
    delays = []
    for n in range(8):
        runs.append(crashed_after_ready(n * 10.0))
        step = next_step(POLICY, runs)
        assert isinstance(step, Restart)
        delays.append(step.delay_s)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_a_part_that_ran_well_for_a_while_starts_again_from_the_first_delay() -> None:
    runs = [crashed_after_ready(n * 10.0) for n in range(5)]
    assert next_step(POLICY, runs) == Restart(8.0)
    # Up for exactly healthy_after_s after becoming ready, then killed.
    runs.append(crashed_after_ready(100.0, up_s=60.0))
    assert next_step(POLICY, runs) == Restart(0.5)
    runs.append(crashed_after_ready(200.0))
    assert next_step(POLICY, runs) == Restart(0.5)
    runs.append(crashed_after_ready(210.0))
    assert next_step(POLICY, runs) == Restart(1.0)


def test_a_long_run_that_was_never_ready_does_not_reset_the_backoff() -> None:
    # Alive for ten minutes but never ready (its port never answered): not healthy.
    hung = Run(started_at=0, ended_at=600, ready_at=None, ending="not ready after 600 s")
    runs = [crashed_after_ready(-20), crashed_after_ready(-10), hung]
    assert next_step(POLICY, runs) == Restart(2.0)


def test_a_part_that_keeps_failing_to_start_is_given_up_with_the_last_reason() -> None:
    runs = [failed_start(0), failed_start(1)]
    assert next_step(POLICY, runs) == Restart(1.0)
    runs.append(failed_start(3, ending="exit code 2"))
    step = next_step(POLICY, runs)
    assert step == GiveUp("it failed to start 3 times in a row in 3 s (last: exit code 2)")


def test_a_part_that_crashes_after_becoming_ready_is_never_given_up() -> None:
    # A crash loop after start-up keeps the rest of the platform running: backoff only.
    runs = [crashed_after_ready(n * 20.0, up_s=0.1) for n in range(50)]
    assert next_step(POLICY, runs) == Restart(8.0)


def test_one_ready_run_between_failed_starts_resets_the_give_up_count() -> None:
    runs = [failed_start(0), failed_start(1), crashed_after_ready(2), failed_start(10)]
    step = next_step(POLICY, runs)
    assert isinstance(step, Restart)
    runs.append(failed_start(20))
    assert isinstance(next_step(POLICY, runs), Restart)
    runs.append(failed_start(30))
    assert isinstance(next_step(POLICY, runs), GiveUp)


def test_give_up_after_one_means_the_first_failed_start_stops_the_platform() -> None:
    policy = RestartPolicy(give_up_after=1)
    assert isinstance(next_step(policy, [failed_start(0)]), GiveUp)
    assert next_step(policy, [crashed_after_ready(0)]) == Restart(policy.first_delay_s)


def test_the_delay_stays_finite_after_a_very_long_history() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=30.0, give_up_after=5)
    runs = [crashed_after_ready(n * 2.0, up_s=0.1) for n in range(5000)]
    assert next_step(policy, runs) == Restart(30.0)


def test_next_step_needs_a_run() -> None:
    with pytest.raises(ValueError):
        next_step(POLICY, [])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_delay_s": 0},
        {"first_delay_s": 5, "max_delay_s": 1},
        {"factor": 0.5},
        {"healthy_after_s": 0},
        {"give_up_after": 0},
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("returncode", "words"),
    [
        (0, "exit code 0"),
        (1, "exit code 1"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_how_a_process_ended_in_words(returncode: int, words: str) -> None:
    assert describe_exit(returncode) == words
