"""When the status alert rules can next decide otherwise (``next_decision_at``), checked
against the planner itself: between two decision times its plan does not change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ingest.alerts.config import DEFAULT_RULES, load_alert_config, parse_alert_config
from ingest.alerts.plan import (
    AlertAction,
    OpenAlertRow,
    TerminalSnapshot,
    decision_ages,
    host_scope,
    next_decision_at,
    plan_status_alerts,
    terminal_scope,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CONFIG = load_alert_config(None, env={})
SLOW = parse_alert_config(
    {
        **DEFAULT_RULES,
        "host": {"group_wait_s": 7},
        "status": [
            {"kind": "offline", "severity": "critical", "for_s": 20, "clear_for_s": 45},
            {"kind": "error", "severity": "major", "for_s": 3, "clear_for_s": 90},
        ],
    },
    {},
)


def test_the_ages_are_each_rules_wait_and_clear_time() -> None:
    assert decision_ages(CONFIG) == (0.0, 5.0, 60.0)  # for_s 0, group_wait_s 5, clear 60
    assert decision_ages(SLOW) == (0.0, 3.0, 7.0, 20.0, 45.0, 90.0)


def test_the_next_decision_is_the_first_age_still_ahead() -> None:
    changed = NOW - timedelta(seconds=2)
    assert next_decision_at(changed, NOW, CONFIG) == changed + timedelta(seconds=5)
    # At the very time it is due it counts as passed: the planner's ages are ">=".
    assert next_decision_at(changed, changed + timedelta(seconds=5), CONFIG) == changed + (
        timedelta(seconds=60)
    )
    assert next_decision_at(changed, changed + timedelta(seconds=60), CONFIG) is None


def _shape(actions: list[AlertAction]) -> list[tuple[str, str, str, int]]:
    """What the actions do, without the time they are stamped with (``now`` itself)."""
    return sorted(
        (type(a).__name__, a.scope, a.kind, getattr(a, "occurrences", 0)) for a in actions
    )


terminal = st.tuples(
    st.sampled_from(["online", "offline", "error", "unknown"]),
    st.integers(min_value=0, max_value=120),  # changed this many seconds before NOW
    st.sampled_from([None, "pc-a", "pc-b"]),
    st.sampled_from([None, "offline", "error"]),  # an open alert of its own
    st.integers(min_value=-5, max_value=5),  # ... last seen this long after the change
)


@given(
    terminals=st.lists(terminal, min_size=1, max_size=5),
    pc_alert_seen_s=st.sampled_from([None, -30, 0, 30]),
    offsets=st.lists(st.integers(min_value=0, max_value=150_000), min_size=2, max_size=6),
    slow=st.booleans(),
)
def test_between_two_decision_times_the_plan_stays_the_same(
    terminals: list[tuple[str, int, str | None, str | None, int]],
    pc_alert_seen_s: int | None,
    offsets: list[int],
    slow: bool,
) -> None:
    config = SLOW if slow else CONFIG
    snapshot, open_alerts = [], {}
    for n, (status, ago_s, host, alert, seen_s) in enumerate(terminals, start=1):
        changed = NOW - timedelta(seconds=ago_s)
        snapshot.append(TerminalSnapshot(n, f"TC-{n}", 1, host, status, None, changed))
        if alert:
            key = (terminal_scope(n), alert)
            open_alerts[key] = OpenAlertRow(*key, changed + timedelta(seconds=seen_s))
    if pc_alert_seen_s is not None:
        key = (host_scope(1, "pc-a"), "pc-offline")
        open_alerts[key] = OpenAlertRow(*key, NOW + timedelta(seconds=pc_alert_seen_s))
    # Every time at which some terminal's plan may change, from the sweep's view.
    decisions = sorted(
        t.changed_at + timedelta(seconds=age) for t in snapshot for age in decision_ages(config)
    )
    moments = sorted(NOW + timedelta(milliseconds=ms) for ms in offsets)
    for earlier, later in zip(moments, moments[1:], strict=False):
        if any(earlier < d <= later for d in decisions):
            continue
        before = plan_status_alerts(snapshot, open_alerts, config, earlier)
        after = plan_status_alerts(snapshot, open_alerts, config, later)
        assert _shape(before) == _shape(after), (earlier, later)
