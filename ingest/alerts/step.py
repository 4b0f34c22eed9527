"""The alert step of a batch's commit: plan before the locks, apply with the batch, adopt after.

The daemon hands it to ``BatchWriter.write``, which calls it at three points of the
batch's transaction (``ingest.writer.CommitStep``): the rules are evaluated before the
terminal rows are locked (pure work the other workers need not wait for), the alerts
are written last inside the transaction (so they commit with the batch or not at all),
and the new threshold states are adopted only once the batch has committed, so a batch
retried after a failure is evaluated against the same state again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

from ingest.alerts.plan import AlertAction
from ingest.alerts.rules import BatchAlerts, Staged
from ingest.alerts.store import ApplyResult, apply_actions
from ingest.batch import Batch


class BatchAlertStep:
    """Runs ``BatchAlerts`` inside each batch's transaction; one attempt at a time."""

    def __init__(self, alerts: BatchAlerts) -> None:
        self.alerts = alerts
        self._actions: list[AlertAction] = []
        self._staged: Staged | None = None  # threshold states of the batch being written

    def plan(self, batch: Batch[Any], ids: Mapping[str, int], customers: Mapping[int, int]) -> None:
        """Evaluate the rules over the batch; changes nothing yet."""
        self._actions, self._staged = self.alerts.evaluate(batch, ids, customers)

    async def apply(self, conn: psycopg.AsyncConnection[Any]) -> ApplyResult:
        """Open, bump and resolve the planned alerts in the batch's transaction."""
        if not self._actions:
            return ApplyResult()
        return await apply_actions(conn, self._actions, self.alerts.config, datetime.now(UTC))

    def committed(self) -> None:
        """The batch has committed: its threshold states are now the ones held."""
        if self._staged is not None:
            self.alerts.adopt(self._staged)
        self._actions, self._staged = [], None
