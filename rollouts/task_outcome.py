"""What a finished ``firmware`` command, or a progress event on its way, means for the
rollout task that sent it: pure, so that the driver only reads rows and writes the answer.

The agent's result (agent/PROTOCOL.md, ``UpdateReport.output``) says how the update ended
(``outcome``) and the steps it went through (``states``); an error result keeps that
output. A command that ended without a report (expired, cancelled, refused, no result
after its sends) never touched the TC-200: it failed "downloading", which is retried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollouts.tasks import RetryPolicy, TaskState, after_failure

_PROGRESS = re.compile(r"downloading (?P<pct>\d+(?:\.\d+)?) %")
_AGENT_STATES = {state.value: state for state in TaskState}
# The steps an agent's progress events name (agent/firmware_outcome.py); any other code
# is not a terminal's to set (waiting_window, queued... are the driver's own states).
_REPORTED_STEPS = {
    state.value: state
    for state in (
        TaskState.DOWNLOADING,
        TaskState.DOWNLOADED,
        TaskState.VERIFIED,
        TaskState.INSTALLING,
        TaskState.REBOOTING,
    )
}
WORD_MAX = 64  # update_task.failure and version_after


@dataclass(frozen=True)
class TaskUpdate:
    state: TaskState
    retry_at: datetime | None = None
    version_after: str | None = None
    failure: str | None = None  # one word
    reason: str | None = None  # a sentence

    @property
    def retried(self) -> bool:
        return self.state is TaskState.QUEUED


def after_command(
    status: str,
    result: Mapping[str, Any] | None,
    error: str | None,
    *,
    attempt: int,
    at: datetime,
    retry: RetryPolicy,
) -> TaskUpdate:
    """The task's next state once its command reached final ``status`` (command_states)."""
    report = result if isinstance(result, Mapping) else {}
    outcome = report.get("outcome")
    after = _text(report.get("version_after"), WORD_MAX)
    if status == "succeeded" and outcome == "succeeded":
        return TaskUpdate(TaskState.SUCCEEDED, version_after=after)
    if status == "succeeded" and outcome == "verified":
        return TaskUpdate(TaskState.VERIFIED, version_after=after)
    failure = _text(report.get("failure"), WORD_MAX) or _failure_of(status, outcome)
    reason = _text(report.get("reason")) or error or f"the firmware command {status}"
    failed_in = _last_state(report) if outcome in ("failed", "rolled_back") else None
    verdict = after_failure(
        failed_in or TaskState.DOWNLOADING,
        attempt,
        at,
        retry,
        rolled_back=outcome == "rolled_back",
    )
    if verdict.state is TaskState.QUEUED:
        reason = f"attempt {attempt} failed: {reason}"
    return TaskUpdate(verdict.state, verdict.retry_at, after, failure, reason[:2000])


def progress_of(code: str | None, message: str | None) -> tuple[TaskState, float | None] | None:
    """The step an ``update.progress`` event reports (its code) and the download percent."""
    state = _REPORTED_STEPS.get(code or "")
    if state is None:
        return None
    match = _PROGRESS.search(message or "")
    return state, (float(match["pct"]) if match and state is TaskState.DOWNLOADING else None)


def _last_state(report: Mapping[str, Any]) -> TaskState | None:
    """The last step the agent reached before it failed."""
    steps = report.get("states")
    if not isinstance(steps, list):
        return None
    reached = None
    for step in steps:
        if isinstance(step, Mapping):
            state = _AGENT_STATES.get(str(step.get("state")))
            if state is not None and state not in (TaskState.FAILED, TaskState.ROLLED_BACK):
                reached = state
    return reached


def _failure_of(status: str, outcome: object) -> str:
    if outcome == "rolled_back":
        return "rolled_back"
    return {"expired": "expired", "cancelled": "cancelled", "rejected": "rejected"}.get(
        status, "failed"
    )


def _text(value: object, limit: int = 2000) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None
