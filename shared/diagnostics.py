"""The diagnostics report: what the agent's ``diagnostics`` command returns, as a schema.

The agent builds it (agent/diagnostics.py), the result row keeps it as JSON, and the
console renders it; all three read it through this model, so a check added on the agent
shows up in the console without a change there. Pure: no I/O.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Outcome(StrEnum):
    PASSED = "passed"
    WARNING = "warning"  # works, but an operator should look (e.g. a clock 10 s off)
    FAILED = "failed"
    SKIPPED = "skipped"  # could not be run (e.g. no TLS configured); says why


class Check(BaseModel):
    """One check: a stable id (``usb_link``), a title for people, and what it found."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
    title: Annotated[str, Field(max_length=200)]
    outcome: Outcome
    summary: Annotated[str, Field(max_length=1000)] = ""
    # The check's figures and findings, e.g. {"offset_s": 0.4}; shown as key/value pairs.
    data: dict[str, Any] = Field(default_factory=dict)
    duration_ms: Annotated[float, Field(ge=0)] | None = None


class DiagnosticsReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    checks: Annotated[list[Check], Field(max_length=100)]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # The last lines of the agent's log, oldest first.
    log_tail: Annotated[list[str], Field(max_length=200)] = Field(default_factory=list)

    @property
    def first_failure(self) -> Check | None:
        """The first failed check in the order they ran: where an operator starts."""
        return next((c for c in self.checks if c.outcome is Outcome.FAILED), None)

    @property
    def passed(self) -> bool:
        return self.first_failure is None

    def counts(self) -> dict[Outcome, int]:
        found = dict.fromkeys(Outcome, 0)
        for check in self.checks:
            found[check.outcome] += 1
        return found


def report_of(output: dict[str, Any] | None) -> DiagnosticsReport | None:
    """The report in a diagnostics result's output, or None if it holds none (an older
    agent's free-form output, or a failed command)."""
    if not output or "checks" not in output:
        return None
    try:
        return DiagnosticsReport.model_validate(output)
    except ValidationError:
        return None
