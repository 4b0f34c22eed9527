"""The figures bench/rollout.py prints: bandwidth from download spans, CPU from /proc
snapshots, and the moment a rollout's halt rule became true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from agent.sim.firmware import ImageHeader
from bench.rollout import (
    Download,
    TaskEnd,
    bandwidth,
    cpu_load,
    cpu_used,
    download_of,
    failing_version,
    part_of,
    threshold_crossed_at,
)
from rollouts.decide import RolloutPolicy
from rollouts.tasks import TaskState

MB = 1_000_000
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_bandwidth_spreads_each_download_over_its_span_and_peaks_where_they_overlap() -> None:
    served = bandwidth([Download(1000.0, 1002.0, 2 * MB), Download(1001.0, 1002.0, MB)])
    assert served.total_bytes == 3 * MB
    assert served.peak == pytest.approx(2 * MB)  # second 2: half of A and all of B
    assert served.mean == pytest.approx(1.5 * MB)
    assert served.span_s == pytest.approx(2.0)


def test_bandwidth_of_an_instant_download_and_of_none() -> None:
    assert bandwidth([Download(5.0, 5.0, MB)]).peak == MB
    assert bandwidth([]).peak == 0 and bandwidth([]).total_bytes == 0


def test_a_download_span_comes_from_the_firmware_commands_states() -> None:
    states = [
        {"state": "downloading", "at": "2026-12-01T12:00:00+00:00"},
        {"state": "downloaded", "at": "2026-12-01T12:00:02.500000+00:00"},
        {"state": "succeeded", "at": "2026-12-01T12:00:09+00:00"},
    ]
    found = download_of({"states": states}, 7)
    assert found is not None and found.size == 7
    assert found.end - found.start == pytest.approx(2.5)
    assert download_of({"states": states[:1]}, 7) is None  # never finished downloading
    assert download_of(None, 7) is None
    assert download_of({"states": "junk"}, 7) is None


def test_cpu_counts_new_processes_and_not_ended_or_restarted_ones() -> None:
    before = {1: 10.0, 2: 5.0}
    after = {1: 10.5, 3: 0.25, 4: 1.0}  # 2 ended; 3 and 4 started meanwhile
    assert cpu_used(before, after) == pytest.approx(1.75)
    assert cpu_used({1: 9.0}, {1: 2.0}) == 0.0  # a pid reused: no negative work
    mean, peak = cpu_load([(0.0, 1.0, 0.5), (1.0, 2.0, 1.5), (2.0, 2.0, 9.0)])
    assert (mean, peak) == (pytest.approx(100.0), pytest.approx(150.0))
    assert cpu_load([]) == (0.0, 0.0)


def test_part_names_are_the_tms_subcommands() -> None:
    assert part_of(["/v/bin/python", "-m", "tms", "rollouts", "run"]) == "rollouts"
    assert part_of(["/v/bin/python", "-m", "tms", "console"]) == "console"
    assert part_of(["/usr/lib/postgresql/15/bin/postgres", "-D", "/d"]) == "postgres"


def _wave(failed_at: list[int], size: int = 20) -> list[TaskEnd]:
    failures = [TaskEnd(1, TaskState.ROLLED_BACK, T0 + timedelta(seconds=s)) for s in failed_at]
    rest = [TaskEnd(1, TaskState.SUCCEEDED, T0 + timedelta(seconds=1))] * (size - len(failures))
    return failures + rest + [TaskEnd(2, TaskState.QUEUED, None)] * 10


@pytest.mark.parametrize(
    ("policy", "crossed_by"),
    [
        # 2 of 20 is exactly 10%: it is the third failure that is "more than" it.
        (RolloutPolicy(error_threshold_pct=10, success_threshold_pct=0), 30),
        # 90% of 20 needs 18: the third failure leaves at most 17 to succeed.
        (RolloutPolicy(error_threshold_pct=50, success_threshold_pct=90), 30),
        # 1 of 20 is 5%: more than 4% already.
        (RolloutPolicy(error_threshold_pct=4, success_threshold_pct=0), 10),
    ],
)
def test_the_threshold_is_crossed_by_the_failure_that_makes_the_halt_rule_true(
    policy: RolloutPolicy, crossed_by: int
) -> None:
    tasks = _wave([10, 20, 30, 40])
    starts = {1: T0, 2: None}
    assert threshold_crossed_at(tasks, starts, policy) == T0 + timedelta(seconds=crossed_by)


def test_no_crossing_when_the_failures_stay_within_the_thresholds() -> None:
    policy = RolloutPolicy(error_threshold_pct=50, success_threshold_pct=0)
    assert threshold_crossed_at(_wave([10, 20]), {1: T0, 2: None}, policy) is None


def test_the_failing_version_fails_more_of_wave_one_than_the_threshold() -> None:
    wave_one = [f"SIM{n:06d}" for n in range(1, 11)]
    version = failing_version(wave_one, 20, 10)
    failing = sum(ImageHeader(version, 20).fails_on(serial) for serial in wave_one)
    assert Fraction(100 * failing, len(wave_one)) > 10
