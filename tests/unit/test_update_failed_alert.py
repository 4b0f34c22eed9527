"""The agent's firmware outcome events, as published, against ingest's alert rules as
config/alerts.toml ships them: a failed or rolled-back update opens "update-failed", a
later succeeded one resolves it, and progress events leave it alone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.firmware_outcome import Progress, UpdateState, Verdict, outcome_event, progress_event
from ingest.alerts.config import Severity, load_alert_config
from ingest.alerts.plan import AlertAction, OpenAlert, ResolveAlert, terminal_scope
from ingest.alerts.rules import BatchAlerts
from ingest.batch import Batch
from ingest.decode import decode
from shared.messages import Event

RULES = Path(__file__).resolve().parents[2] / "config" / "alerts.toml"
TERMINAL_ID, CUSTOMER_ID = 7, 3


def actions_for(*events: Event) -> list[AlertAction]:
    """What the shipped rules make of these events, published by terminal TC-1."""
    batch: Batch[int] = Batch()
    for index, event in enumerate(events):
        batch.add(decode("tms/v1/TC-1/event", event.to_payload(), datetime.now(UTC)), index)
    alerts = BatchAlerts(load_alert_config(RULES, env={}))
    actions, _ = alerts.evaluate(batch, {"TC-1": TERMINAL_ID}, {TERMINAL_ID: CUSTOMER_ID})
    return actions


@pytest.mark.parametrize(
    ("verdict", "code"),
    [
        (Verdict(UpdateState.FAILED, "2.4.1", "not_booted", "it did not boot"), "FW-FAILED"),
        (Verdict(UpdateState.ROLLED_BACK, "2.4.1", "rolled_back", "self-test"), "TC200-ROLLBACK"),
    ],
)
def test_a_failed_update_opens_the_update_failed_alert(verdict: Verdict, code: str) -> None:
    event = outcome_event("3.0.0", verdict)
    assert event is not None and event.code == code
    (action,) = actions_for(event)
    assert isinstance(action, OpenAlert)
    assert (action.scope, action.kind, action.severity) == (
        terminal_scope(TERMINAL_ID),
        "update-failed",
        Severity.MAJOR,
    )
    assert (action.terminal_id, action.customer_id) == (TERMINAL_ID, CUSTOMER_ID)
    assert action.message.startswith("TC-1: update-failed: firmware 3.0.0: ")
    assert verdict.reason is not None and verdict.reason in action.message


def test_a_later_succeeded_update_resolves_it() -> None:
    event = outcome_event("3.0.1", Verdict(UpdateState.SUCCEEDED, "3.0.1"))
    assert event is not None
    (action,) = actions_for(event)
    assert isinstance(action, ResolveAlert)
    assert (action.scope, action.kind) == (terminal_scope(TERMINAL_ID), "update-failed")


def test_progress_and_a_download_only_ending_touch_no_alert() -> None:
    progress = [
        progress_event(Progress("3.0.0", state, 50.0 if state is UpdateState.DOWNLOADING else None))
        for state in (UpdateState.DOWNLOADING, UpdateState.INSTALLING, UpdateState.REBOOTING)
    ]
    events = [event for event in progress if event is not None]
    assert events and actions_for(*events) == []
    assert outcome_event("3.0.0", Verdict(UpdateState.VERIFIED)) is None
