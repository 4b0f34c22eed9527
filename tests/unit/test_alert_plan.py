"""Status alerts, store-PC grouping, storm decisions and routing, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.alerts.config import AlertConfig, Route, Severity, load_alert_config
from ingest.alerts.plan import (
    NOTE_MERGED,
    OpenAlert,
    OpenAlertRow,
    ResolveAlert,
    StormPlan,
    TerminalSnapshot,
    host_scope,
    merge_opens,
    plan_status_alerts,
    routes_for,
    storm_plan,
    terminal_scope,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CONFIG = load_alert_config(None, env={})


def term(
    tid: int,
    status: str,
    ago_s: float = 10,
    host: str | None = None,
    reason: str | None = "agent disconnected",
) -> TerminalSnapshot:
    return TerminalSnapshot(
        tid, f"TC-{tid}", 1, host, status, reason, NOW - timedelta(seconds=ago_s)
    )


def kinds(actions: list) -> list[tuple[str, str, str]]:
    return sorted((type(a).__name__, a.scope, a.kind) for a in actions)


def test_an_offline_terminal_alone_on_its_pc_alerts_at_once() -> None:
    actions = plan_status_alerts([term(1, "offline", ago_s=0.1, host="pc-a")], {}, CONFIG, NOW)
    assert kinds(actions) == [("OpenAlert", "terminal:1", "offline")]
    assert "agent disconnected" in actions[0].message


def test_a_store_pc_down_is_one_alert_not_one_per_terminal() -> None:
    snapshot = [term(i, "offline", host="pc-a") for i in (1, 2, 3)]
    actions = plan_status_alerts(snapshot, {}, CONFIG, NOW)
    assert kinds(actions) == [("OpenAlert", host_scope(1, "pc-a"), "pc-offline")]
    assert "3 terminals offline" in actions[0].message


def test_one_terminal_of_a_shared_pc_waits_for_its_siblings_then_alerts_alone() -> None:
    waiting = [term(1, "offline", ago_s=1, host="pc-a"), term(2, "online", ago_s=999, host="pc-a")]
    assert plan_status_alerts(waiting, {}, CONFIG, NOW) == []
    late = [term(1, "offline", ago_s=6, host="pc-a"), term(2, "online", ago_s=999, host="pc-a")]
    assert kinds(plan_status_alerts(late, {}, CONFIG, NOW)) == [
        ("OpenAlert", "terminal:1", "offline")
    ]


def test_terminal_alerts_raised_before_the_pc_was_seen_down_merge_into_it() -> None:
    snapshot = [term(i, "offline", host="pc-a") for i in (1, 2)]
    open_alerts = {("terminal:1", "offline"): OpenAlertRow("terminal:1", "offline", NOW)}
    actions = plan_status_alerts(snapshot, open_alerts, CONFIG, NOW)
    assert kinds(actions) == [
        ("OpenAlert", host_scope(1, "pc-a"), "pc-offline"),
        ("ResolveAlert", "terminal:1", "offline"),
    ]
    assert [a.note for a in actions if isinstance(a, ResolveAlert)] == [NOTE_MERGED]


def test_pc_alert_resolves_when_a_terminal_is_back_for_clear_for_s() -> None:
    scope = host_scope(1, "pc-a")
    open_alerts = {(scope, "pc-offline"): OpenAlertRow(scope, "pc-offline", NOW)}
    back_briefly = [term(1, "online", ago_s=5, host="pc-a"), term(2, "offline", host="pc-a")]
    assert plan_status_alerts(back_briefly, open_alerts, CONFIG, NOW) == []
    back = [term(1, "online", ago_s=61, host="pc-a"), term(2, "offline", host="pc-a")]
    # The PC is back; a terminal still offline behind it is now a problem of its own.
    assert kinds(plan_status_alerts(back, open_alerts, CONFIG, NOW)) == [
        ("OpenAlert", "terminal:2", "offline"),
        ("ResolveAlert", scope, "pc-offline"),
    ]


@pytest.mark.parametrize(
    ("status", "ago_s", "last_seen_ago_s", "expected"),
    [
        ("offline", 10, 20, [("OpenAlert", "terminal:1", "offline")]),  # new episode: bump
        ("offline", 10, 10, []),  # same episode: already counted
        ("online", 30, 100, []),  # back, but not for clear_for_s yet: no flap
        ("online", 61, 100, [("ResolveAlert", "terminal:1", "offline")]),
    ],
)
def test_flapping_terminal_keeps_one_alert(
    status: str, ago_s: float, last_seen_ago_s: float, expected: list
) -> None:
    seen = NOW - timedelta(seconds=last_seen_ago_s)
    open_alerts = {(terminal_scope(1), "offline"): OpenAlertRow("terminal:1", "offline", seen)}
    assert kinds(plan_status_alerts([term(1, status, ago_s)], open_alerts, CONFIG, NOW)) == expected


def test_error_status_raises_an_error_alert_with_the_reason() -> None:
    actions = plan_status_alerts(
        [term(7, "error", reason="terminal unplugged from the PC")], {}, CONFIG, NOW
    )
    assert kinds(actions) == [("OpenAlert", "terminal:7", "error")]
    assert "unplugged" in actions[0].message


def test_merge_adds_up_repeats() -> None:
    a = OpenAlert("terminal:1", "high-cpu", Severity.WARNING, "one", NOW)
    b = OpenAlert("terminal:1", "high-cpu", Severity.WARNING, "two", NOW + timedelta(seconds=1))
    (merged,) = merge_opens([a, b])
    assert isinstance(merged, OpenAlert)
    assert (merged.occurrences, merged.message) == (2, "two")


@pytest.mark.parametrize(
    ("recent", "incident_open", "expected"),
    [
        (5, False, StormPlan.NOTIFY_EACH),
        (20, False, StormPlan.NOTIFY_EACH),
        (21, False, StormPlan.OPEN_INCIDENT),
        (1, True, StormPlan.JOIN_INCIDENT),
    ],
)
def test_storm_plan(recent: int, incident_open: bool, expected: StormPlan) -> None:
    assert storm_plan(recent, 20, incident_open) is expected


def test_routing_by_customer_and_severity() -> None:
    routes = [
        Route(name="all-major", min_severity=Severity.MAJOR, email=["ops@x"]),
        Route(name="acme", customer="Acme", min_severity=Severity.WARNING, email=["a@x"]),
    ]
    names = lambda sev, cust: [r.name for r in routes_for(routes, sev, cust)]  # noqa: E731
    assert names(Severity.WARNING, "Acme") == ["acme"]
    assert names(Severity.CRITICAL, "Acme") == ["all-major", "acme"]
    assert names(Severity.CRITICAL, "Bolt") == ["all-major"]
    assert names(Severity.INFO, "Acme") == []
    assert isinstance(CONFIG, AlertConfig)
