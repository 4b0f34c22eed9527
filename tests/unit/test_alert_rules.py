"""Alert rules as pure functions: thresholds with duration and hysteresis, flapping, config."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.alerts.config import DEFAULT_RULES, MetricRule, load_alert_config, parse_alert_config
from ingest.alerts.thresholds import FIRING, ThresholdState, Verdict, fold
from ingest.errors import IngestConfigError

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CPU = MetricRule(
    kind="high-cpu", metric="cpu_pct", above=90, clear_below=80, for_s=600, clear_for_s=300
)
INSTANT = MetricRule(kind="high-disk", metric="disk_pct", above=90, clear_below=85)

OPEN, RESOLVE, REPEAT, NONE = Verdict.OPEN, Verdict.RESOLVE, Verdict.REPEAT, Verdict.NONE


def run(
    rule: MetricRule,
    values: list[float | None],
    step_s: float = 60,
    state: ThresholdState | None = None,
) -> list[Verdict]:
    """The verdict of each sample, one every ``step_s`` seconds."""
    samples = [(T0 + timedelta(seconds=i * step_s), v) for i, v in enumerate(values)]
    state = state or ThresholdState()
    verdicts: list[Verdict] = []
    for sample in samples:
        state, found = fold(rule, state, [sample])
        verdicts.append(found[0][1] if found else Verdict.NONE)
    return verdicts


@pytest.mark.parametrize(
    ("name", "rule", "values", "expected"),
    [
        ("below the line: nothing", CPU, [50] * 20, [NONE] * 20),
        # 95 % at minutes 0..10: opens on the sample 10 minutes after the first.
        ("above for the duration opens", CPU, [95] * 11, [NONE] * 10 + [OPEN]),
        ("not long enough", CPU, [95] * 10 + [50], [NONE] * 11),
        ("a dip under the line restarts the clock", CPU, [95] * 6 + [85] + [95] * 10, [NONE] * 17),
        (
            "repeats while above, silent in the band",
            CPU,
            [95] * 11 + [95, 85, 95],
            [NONE] * 10 + [OPEN, REPEAT, NONE, REPEAT],
        ),
        (
            "resolves after clear_for_s at or below the lower line",
            CPU,
            [95] * 11 + [70] * 6,
            [NONE] * 10 + [OPEN] + [NONE] * 5 + [RESOLVE],
        ),
        (
            "the band does not resolve",
            CPU,
            [95] * 11 + [85] * 30,
            [NONE] * 10 + [OPEN] + [NONE] * 30,
        ),
        ("missing values change nothing", CPU, [95] * 5 + [None] + [95] * 5, [NONE] * 10 + [OPEN]),
        ("instant rule opens at once", INSTANT, [91], [OPEN]),
        ("instant rule resolves at once", INSTANT, [91, 86, 85], [OPEN, NONE, RESOLVE]),
    ],
)
def test_threshold_table(
    name: str, rule: MetricRule, values: list[float | None], expected: list[Verdict]
) -> None:
    assert run(rule, values) == expected, name


def test_flapping_around_the_line_is_one_alert_not_many() -> None:
    # 89/91 every minute for an hour, instant rule with a 10-point band: it opens once
    # and never resolves (91 repeats it, 89 is in the band).
    rule = MetricRule(kind="high-cpu", metric="cpu_pct", above=90, clear_below=80)
    verdicts = run(rule, [91, 89] * 30)
    assert verdicts.count(OPEN) == 1 and verdicts.count(RESOLVE) == 0
    # With a duration, a reading that keeps dipping never opens at all.
    assert run(CPU, [91, 89] * 30).count(OPEN) == 0


def test_flapping_around_the_lower_line_resolves_once() -> None:
    rule = MetricRule(kind="k", metric="cpu_pct", above=90, clear_below=80)
    verdicts = run(rule, [95] + [79, 81] * 20)
    assert verdicts.count(OPEN) == 1 and verdicts.count(RESOLVE) == 1


def test_replayed_and_out_of_order_samples_are_ignored() -> None:
    state, found = fold(INSTANT, ThresholdState(), [(T0, 95.0)])
    assert [v for _, v in found] == [OPEN]
    state, found = fold(INSTANT, state, [(T0, 10.0), (T0 - timedelta(minutes=1), 10.0)])
    assert found == [] and state.firing


def test_an_alert_open_at_start_resolves_when_the_value_falls() -> None:
    assert run(INSTANT, [50], state=FIRING) == [RESOLVE]


def test_config_file_repeats_the_built_in_defaults() -> None:
    path = Path(__file__).parents[2] / "config" / "alerts.toml"
    from_file = load_alert_config(path, env={})
    assert from_file.status_rules == load_alert_config(None, env={}).status_rules
    assert from_file.metric_rules == load_alert_config(None, env={}).metric_rules
    assert from_file.event_rules == load_alert_config(None, env={}).event_rules
    assert from_file.storm == load_alert_config(None, env={}).storm
    assert from_file.host == load_alert_config(None, env={}).host
    raw = tomllib.loads(path.read_text())
    assert raw["status"] == DEFAULT_RULES["status"]


def test_bad_rules_are_refused_with_the_place() -> None:
    bad = {"metric": [{"kind": "x", "metric": "cpu_pct", "above": 50, "clear_below": 60}]}
    with pytest.raises(IngestConfigError, match="clear_below"):
        parse_alert_config(bad, {})
    twice = {"event": [{"kind": "a", "event_kind": "u"}, {"kind": "a", "event_kind": "v"}]}
    with pytest.raises(IngestConfigError, match="unique"):
        parse_alert_config(twice, {})


def test_a_webhook_route_needs_its_secret_in_the_environment() -> None:
    route = {"route": [{"name": "h", "webhook": "http://x/", "secret_env": "TMS_HOOK"}]}
    with pytest.raises(IngestConfigError, match="TMS_HOOK"):
        parse_alert_config(route, {})
    assert parse_alert_config(route, {"TMS_HOOK": "s3cret"}).routes[0].name == "h"
