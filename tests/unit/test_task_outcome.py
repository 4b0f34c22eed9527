"""What a finished ``firmware`` command, or a progress event, means for its rollout task:
every command status against every outcome the agent reports, the retry time from the
RetryPolicy, reasons cut to their column, and progress events as the agent writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.firmware_outcome import FINAL_STATES, Progress, UpdateState, progress_event
from rollouts.task_outcome import TaskUpdate, after_command, progress_of
from rollouts.tasks import FINAL, RetryPolicy, TaskState

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
RETRY = RetryPolicy(
    max_attempts=3, first_delay=timedelta(minutes=5), max_delay=timedelta(minutes=8)
)
COMMAND_FINAL = ("succeeded", "failed", "rejected", "expired", "cancelled")


def report(outcome: str, *steps: str, **fields: Any) -> dict[str, Any]:
    """A result as agent/firmware_update.py UpdateReport.output() writes it."""
    return {
        "outcome": outcome,
        "version": "2.5.0",
        "version_before": "2.4.1",
        "version_after": fields.pop("version_after", None),
        "failure": fields.pop("failure", None),
        "reason": fields.pop("reason", None),
        "already_installed": False,
        "states": [
            {"state": step, "at": (T0 + timedelta(seconds=n)).isoformat()}
            for n, step in enumerate(steps)
        ],
        **fields,
    }


def outcome(status: str, result: Any, error: str | None = None, attempt: int = 1) -> TaskUpdate:
    return after_command(status, result, error, attempt=attempt, at=T0, retry=RETRY)


# -- successes -------------------------------------------------------------------------


def test_an_install_that_came_up_succeeds() -> None:
    update = outcome(
        "succeeded",
        report("succeeded", "downloading", "downloaded", "verified", "installing", "rebooting",
               "succeeded", version_after="2.5.0"),
    )  # fmt: skip
    assert update == TaskUpdate(TaskState.SUCCEEDED, version_after="2.5.0")
    assert not update.retried


def test_a_download_only_command_ends_verified() -> None:
    update = outcome("succeeded", report("verified", "downloading", "downloaded", "verified"))
    assert update == TaskUpdate(TaskState.VERIFIED)


# -- failures: where it failed decides a retry -----------------------------------------

RETRIED_STEPS = ["downloading", "downloaded", "verified", "installing"]


@pytest.mark.parametrize("reached", RETRIED_STEPS)
def test_a_failure_before_the_reboot_is_retried_after_the_delay(reached: str) -> None:
    steps = RETRIED_STEPS[: RETRIED_STEPS.index(reached) + 1]
    result = report("failed", *steps, "failed", failure="sha256", reason="the SHA-256 differs")
    update = outcome("failed", result, error="failed: the SHA-256 differs")
    assert update.state is TaskState.QUEUED and update.retried
    assert update.retry_at == T0 + timedelta(minutes=5)
    assert update.failure == "sha256"
    assert update.reason == "attempt 1 failed: the SHA-256 differs"


def test_a_terminal_that_rebooted_and_did_not_come_up_stays_failed() -> None:
    result = report(
        "failed", "downloading", "downloaded", "verified", "installing", "rebooting", "failed",
        failure="no_device", reason="the TC-200 did not answer", version_after=None,
    )  # fmt: skip
    update = outcome("failed", result)
    assert update == TaskUpdate(
        TaskState.FAILED, failure="no_device", reason="the TC-200 did not answer"
    )
    assert update.state in FINAL


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_rolled_back_terminal_is_never_retried(attempt: int) -> None:
    result = report(
        "rolled_back", "downloading", "downloaded", "verified", "installing", "rebooting",
        "rolled_back", version_after="2.4.1", failure="rolled_back",
        reason="firmware 2.5.0 failed its boot self-test",
    )  # fmt: skip
    update = outcome("failed", result, attempt=attempt)
    assert update == TaskUpdate(
        TaskState.ROLLED_BACK,
        version_after="2.4.1",
        failure="rolled_back",
        reason="firmware 2.5.0 failed its boot self-test",
    )


def test_a_rollback_without_a_failure_word_still_counts_as_rolled_back() -> None:
    update = outcome("failed", {"outcome": "rolled_back", "states": []})
    assert update.state is TaskState.ROLLED_BACK and update.failure == "rolled_back"
    assert update.reason == "the firmware command failed"


def test_a_failure_with_no_steps_failed_downloading() -> None:
    for states in ([], None, "installing", [None, 3, {"state": "bogus"}, {"x": 1}]):
        update = outcome("failed", {"outcome": "failed", "states": states})
        assert update.state is TaskState.QUEUED, states


def test_the_last_step_reached_counts_not_the_final_word() -> None:
    # A "failed" step after "rebooting" is the end, not where it failed.
    update = outcome("failed", report("failed", "installing", "rebooting", "failed"))
    assert update.state is TaskState.FAILED
    update = outcome("failed", report("failed", "downloading", "installing", "failed"))
    assert update.state is TaskState.QUEUED


@pytest.mark.parametrize(
    "attempt, retry_at",
    [(1, T0 + timedelta(minutes=5)), (2, T0 + timedelta(minutes=8)), (3, None)],
)
def test_attempts_and_retry_times_follow_the_retry_policy(
    attempt: int, retry_at: datetime | None
) -> None:
    update = outcome("failed", report("failed", "downloading", reason="timed out"), attempt=attempt)
    assert update.retry_at == retry_at
    if retry_at is None:  # the last attempt: failed for good, the reason as it came
        assert update.state is TaskState.FAILED and update.reason == "timed out"
    else:
        assert update.state is TaskState.QUEUED
        assert update.reason == f"attempt {attempt} failed: timed out"


def test_one_attempt_allowed_means_no_retry() -> None:
    update = after_command(
        "expired", None, None, attempt=1, at=T0, retry=RetryPolicy(max_attempts=1)
    )
    assert update.state is TaskState.FAILED and update.retry_at is None


# -- commands that ended without a report ------------------------------------------------


@pytest.mark.parametrize(
    "status, failure",
    [("failed", "failed"), ("expired", "expired"), ("cancelled", "cancelled"),
     ("rejected", "rejected")],
)  # fmt: skip
def test_a_command_without_a_report_never_touched_the_tc200_and_is_retried(
    status: str, failure: str
) -> None:
    update = outcome(status, None)
    assert update.state is TaskState.QUEUED and update.retry_at == T0 + timedelta(minutes=5)
    assert update.failure == failure
    assert update.reason == f"attempt 1 failed: the firmware command {status}"
    # The command's own error says more when there is one.
    assert outcome(status, None, error="no result after 3 sends").reason == (
        "attempt 1 failed: no result after 3 sends"
    )


@pytest.mark.parametrize("status", COMMAND_FINAL)
@pytest.mark.parametrize("result", [None, {}, [], "ok", {"outcome": "bogus"}, {"outcome": None}])
def test_no_usable_result_never_counts_as_a_success(status: str, result: Any) -> None:
    update = outcome(status, result)
    assert update.state is TaskState.QUEUED
    assert update.failure is not None and update.reason


def test_the_reports_words_win_over_the_commands() -> None:
    update = outcome(
        "failed", report("failed", "downloading", failure="http", reason="404"), error="x"
    )
    assert (update.failure, update.reason) == ("http", "attempt 1 failed: 404")
    # Wrong types in the report are ignored, not stored.
    update = outcome("failed", {"outcome": "failed", "failure": 3, "reason": ["x"],
                                "version_after": 2.5})  # fmt: skip
    assert update.failure == "failed" and update.version_after is None
    assert update.reason == "attempt 1 failed: the firmware command failed"


def test_a_long_reason_is_cut_to_its_column() -> None:
    update = outcome("failed", report("failed", "downloading", reason="x" * 5000))
    assert update.reason is not None and len(update.reason) == 2000
    assert update.reason.startswith("attempt 1 failed: xxx")
    update = outcome("failed", None, error="e" * 5000, attempt=3)
    assert update.reason == "e" * 2000


# -- progress events ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, message, expected",
    [
        ("downloading", "firmware 1.2: downloading 40 %", (TaskState.DOWNLOADING, 40.0)),
        ("downloading", "firmware 1.2: downloading 12.5 %", (TaskState.DOWNLOADING, 12.5)),
        ("downloading", "firmware 1.2: downloading 0 %", (TaskState.DOWNLOADING, 0.0)),
        ("downloading", "firmware 1.2: downloading", (TaskState.DOWNLOADING, None)),
        ("downloading", None, (TaskState.DOWNLOADING, None)),
        ("downloaded", "firmware 1.2: downloaded", (TaskState.DOWNLOADED, None)),
        ("verified", "firmware 1.2: verified", (TaskState.VERIFIED, None)),
        ("installing", "firmware 1.2: installing", (TaskState.INSTALLING, None)),
        # Only a download has a percent.
        ("installing", "firmware 1.2: downloading 40 %", (TaskState.INSTALLING, None)),
        ("rebooting", "firmware 1.2: rebooting", (TaskState.REBOOTING, None)),
        ("FW-FAILED", "firmware 1.2: failed: x", None),
        ("TC200-ROLLBACK", "firmware 1.2: rolled back", None),
        ("Downloading", "firmware 1.2: downloading 40 %", None),
        ("", "firmware 1.2: downloading 40 %", None),
        (None, "firmware 1.2: downloading 40 %", None),
        ("downloading 40 %", "", None),
    ],
)
def test_progress_of_an_event(
    code: str | None, message: str | None, expected: tuple[TaskState, float | None] | None
) -> None:
    assert progress_of(code, message) == expected


AGENT_PROGRESS = [
    *((UpdateState.DOWNLOADING, percent) for percent in (0.0, 10.0, 50.0, 100.0)),
    *((state, None) for state in UpdateState if state not in FINAL_STATES),
]


@pytest.mark.parametrize("state, percent", AGENT_PROGRESS)
def test_every_progress_event_the_agent_writes_is_read_back(
    state: UpdateState, percent: float | None
) -> None:
    event = progress_event(Progress("2.5.0-rc1", state, percent))
    assert event is not None
    assert progress_of(event.code, event.message) == (TaskState(state.value), percent)


# -- bugs found (tests that fail until rollouts/task_outcome.py is fixed) -------------------


@pytest.mark.parametrize("code", ["waiting_window", "queued", "cancelled", "skipped"])
def test_bug_a_progress_event_only_names_a_step_the_agent_reports(code: str) -> None:
    # progress_of accepts every TaskState value as an event code; the driver then moves
    # a downloading task to waiting_window on a terminal's say-so and sends it a second
    # firmware command while the first still runs (tests/integration/
    # test_rollout_driver.py test_bug_a_waiting_window_event_from_a_terminal_...).
    assert progress_of(code, f"firmware 1.2: {code}") is None


def test_bug_failure_and_version_after_fit_their_64_character_columns() -> None:
    # update_task.failure and version_after are varchar(64); the report is the
    # terminal's, and a longer word made the driver's UPDATE fail (DataError), which
    # ends rollouts.driver.serve (it retries only OperationalError).
    update = outcome(
        "failed",
        report("rolled_back", "installing", "rebooting", failure="f" * 300,
               version_after="9" * 300, reason="r"),
    )  # fmt: skip
    assert update.failure is None or len(update.failure) <= 64
    assert update.version_after is None or len(update.version_after) <= 64
