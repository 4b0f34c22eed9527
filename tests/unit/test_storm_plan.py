"""A storm incident's schedule (opened, summaries, close) and what its notifications count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.alerts.config import StormRule, parse_alert_config
from ingest.alerts.notify import render, render_incident
from ingest.alerts.storm import (
    NO_CUSTOMER,
    IncidentStep,
    LastNotice,
    OpenIncident,
    breakdown,
    incident_payload,
    incident_step,
    last_notice,
    since,
    top,
)
from ingest.errors import IngestConfigError

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
STORM = StormRule(settle_s=30, summary_interval_s=300, quiet_s=300, max_duration_s=3600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def incident(count: int = 25, last_alert_s: float = 0) -> OpenIncident:
    return OpenIncident(7, "critical", "alert storm", count, T0, at(last_alert_s))


def notice(at_s: float, count: int) -> LastNotice:
    return LastNotice(at(at_s), count, {})


@pytest.mark.parametrize(
    ("now_s", "count", "last_alert_s", "last", "expected"),
    [
        # Settling: the first count is not told yet.
        (10, 25, 5, None, IncidentStep.WAIT),
        (30, 25, 5, None, IncidentStep.NOTIFY_OPENED),
        # Told at 30 s; nothing new, or too soon: wait.
        (390, 25, 100, notice(30, 25), IncidentStep.WAIT),
        (200, 40, 150, notice(30, 25), IncidentStep.WAIT),
        # Grown and the interval has passed: a summary.
        (330, 40, 320, notice(30, 25), IncidentStep.NOTIFY_SUMMARY),
        # Quiet for quiet_s: closed, whether told before or not.
        (700, 40, 400, notice(330, 40), IncidentStep.CLOSE_QUIET),
        (310, 25, 10, None, IncidentStep.CLOSE_QUIET),
        # A storm that never ends closes at max_duration_s, before any other step.
        (3600, 900, 3599, notice(3300, 850), IncidentStep.CLOSE_MAX_LENGTH),
        (3600, 900, 3599, None, IncidentStep.CLOSE_MAX_LENGTH),
    ],
)
def test_incident_step(
    now_s: float, count: int, last_alert_s: float, last: LastNotice | None, expected: IncidentStep
) -> None:
    assert incident_step(incident(count, last_alert_s), last, STORM, at(now_s)) is expected


def test_a_steady_storm_is_told_at_open_every_interval_and_at_max_length() -> None:
    """One alert a second for two hours: bounded notifications that count every alert."""
    opened_s, last, steps = 0, None, []
    told: list[int] = [0]  # alerts counted per incident
    for second in range(1, 7200):
        # The incident holds the alerts of its own lifetime so far.
        current = OpenIncident(1, "major", "s", second - opened_s, at(opened_s), at(second))
        step = incident_step(current, last, STORM, at(second))
        if step is IncidentStep.WAIT:
            continue
        steps.append((second, step))
        told[-1] += current.alert_count - (last.alert_count if last else 0)
        last = LastNotice(at(second), current.alert_count, {})
        if step.closes:  # the storm goes on: the next alert opens a new incident
            opened_s, last = second, None
            told.append(0)
    opened = [s for s, step in steps if step is IncidentStep.NOTIFY_OPENED]
    summaries = [s for s, step in steps if step is IncidentStep.NOTIFY_SUMMARY]
    closes = [(s, step) for s, step in steps if step.closes]
    assert opened == [30, 3630]
    assert summaries == [30 + 300 * k for k in range(1, 12)] + [
        3630 + 300 * k for k in range(1, 12)
    ]
    assert closes == [(3600, IncidentStep.CLOSE_MAX_LENGTH)]
    # The first incident told all its 3,600 alerts; the second, all up to its last summary.
    assert told == [3600, 6930 - 3600]


def test_breakdown_since_and_top() -> None:
    rows = [
        ("offline", "critical", "Acme", 10),
        ("offline", "critical", "Bolt", 4),
        ("error", "major", "Acme", 3),
        ("pc-offline", "critical", None, 1),
    ]
    totals = breakdown(rows)
    assert totals == {
        "kind": {"offline": 14, "error": 3, "pc-offline": 1},
        "severity": {"critical": 15, "major": 3},
        "customer": {"Acme": 13, "Bolt": 4, NO_CUSTOMER: 1},
    }
    before = breakdown([("offline", "critical", "Acme", 6), ("error", "major", "Acme", 3)])
    assert since(totals, before) == {
        "kind": {"offline": 8, "pc-offline": 1},
        "severity": {"critical": 9},
        "customer": {"Acme": 4, "Bolt": 4, NO_CUSTOMER: 1},
    }
    assert top({"a": 1, "b": 5, "c": 5, "d": 2}, 2) == ([("b", 5), ("c", 5)], 2)


def test_each_alert_is_in_exactly_one_new_count() -> None:
    """Three notifications of a growing incident: their new counts add up to the total."""
    grow = [
        [("offline", "critical", "Acme", 20)],
        [("offline", "critical", "Acme", 20), ("error", "major", "Bolt", 7)],
        [("offline", "critical", "Acme", 31), ("error", "major", "Bolt", 7)],
    ]
    last: LastNotice | None = None
    steps = [IncidentStep.NOTIFY_OPENED, IncidentStep.NOTIFY_SUMMARY, IncidentStep.CLOSE_QUIET]
    payloads = []
    for n, (rows, step) in enumerate(zip(grow, steps, strict=True)):
        payload = incident_payload(incident(), step, breakdown(rows), last, at(60 * n))
        payloads.append(payload)
        last = last_notice(payload, at(0))
    assert [p["new_count"] for p in payloads] == [20, 7, 11]
    assert [p["alert_count"] for p in payloads] == [20, 27, 38]
    assert sum(p["new_count"] for p in payloads) == payloads[-1]["alert_count"]
    assert payloads[1]["new"]["customer"] == {"Bolt": 7}
    assert payloads[2]["new"]["kind"] == {"offline": 11}
    assert [p["event"] for p in payloads] == ["opened", "summary", "closed"]
    assert payloads[2]["close_reason"] == "quiet"


def test_incident_mails_say_what_joined_and_the_totals() -> None:
    opened = incident_payload(
        incident(),
        IncidentStep.NOTIFY_OPENED,
        breakdown([("offline", "critical", "Acme", 20), ("error", "major", "Bolt", 5)]),
        None,
        at(30),
    )
    note = render(opened, None)
    assert note.subject == "[TMS critical] incident #7 opened: 25 alerts"
    assert "In all: 25 alerts" in note.text
    assert "by kind: offline 20, error 5" in note.text
    assert "by customer: Acme 20, Bolt 5" in note.text
    assert "Since the previous" not in note.text
    rows = [("offline", "critical", f"C{n}", 1) for n in range(8)]
    closed = incident_payload(
        incident(),
        IncidentStep.CLOSE_MAX_LENGTH,
        breakdown([*rows, ("offline", "critical", "Acme", 20), ("error", "major", "Bolt", 5)]),
        last_notice(opened, at(0)),
        at(3600),
    )
    note = render_incident(closed)
    assert note.subject == "[TMS critical] incident #7 closed: 33 alerts in all"
    assert "Since the previous notification (2026-11-22 12:00:30 UTC): 8 alerts" in note.text
    assert "by customer: C0 1, C1 1, C2 1, C3 1, C4 1 (+3 more)" in note.text
    assert "maximum length" in note.text
    assert note.body["totals"]["kind"] == {"offline": 28, "error": 5}
    # Plain lines a mail client shows as written (no quoted-printable folding).
    assert max(len(line) for line in note.text.splitlines()) <= 78


def test_an_incident_notification_from_before_summaries_still_renders() -> None:
    old = {"type": "incident", "id": 3, "severity": "major", "summary": "alert storm"}
    note = render(old, (42, "alert storm", "major", T0))
    assert note.subject == "[TMS major] incident #3: 42 alerts"
    assert last_notice(old, T0) == LastNotice(T0, 0, {})


def test_an_incident_must_outlast_its_settle() -> None:
    with pytest.raises(IngestConfigError, match="max_duration_s"):
        parse_alert_config({"storm": {"settle_s": 60, "max_duration_s": 60}}, {})
    with pytest.raises(IngestConfigError, match="summary_interval_s"):
        parse_alert_config({"storm": {"summary_interval_s": 0}}, {})
