"""Metric and event alert rules applied to each batch, with thresholds held in memory.

The threshold state of every (terminal, rule) that is not at rest lives here, in the
ingest process. ``evaluate`` does not change it: it returns the new states, and the
alert step (``ingest.alerts.step``) hands them to ``adopt`` only after the batch has
committed, so a batch retried after a failure is evaluated against the same state
again. At start-up the alerts found open are seeded as firing, so they still resolve
when the metric falls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.alerts.config import AlertConfig, MetricRule
from ingest.alerts.plan import AlertAction, OpenAlert, ResolveAlert, terminal_scope
from ingest.alerts.thresholds import FIRING, ThresholdState, Verdict, evaluate
from ingest.batch import Batch
from ingest.decode import TelemetryRecord
from shared.messages import EventSeverity

_EVENT_RANK = {severity: rank for rank, severity in enumerate(EventSeverity)}

StateKey = tuple[int, str]  # (terminal id, rule kind)


@dataclass
class Staged:
    """New threshold states of one batch, adopted once it has committed."""

    states: dict[StateKey, ThresholdState | None] = field(default_factory=dict)


class BatchAlerts:
    """Turns a batch's telemetry and events into alert actions."""

    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self._states: dict[StateKey, ThresholdState] = {}

    def seed_firing(self, open_keys: Iterable[StateKey]) -> None:
        metric_kinds = {rule.kind for rule in self.config.metric_rules}
        for terminal_id, kind in open_keys:
            if kind in metric_kinds:
                self._states[(terminal_id, kind)] = FIRING

    def adopt(self, staged: Staged) -> None:
        for key, state in staged.states.items():
            if state is None:
                self._states.pop(key, None)
            else:
                self._states[key] = state

    def evaluate(
        self, batch: Batch[Any], ids: Mapping[str, int], customers: Mapping[int, int]
    ) -> tuple[list[AlertAction], Staged]:
        staged = Staged()
        actions: list[AlertAction] = []
        if self.config.metric_rules and batch.history:
            by_terminal: dict[int, list[TelemetryRecord]] = defaultdict(list)
            for record in batch.history:
                terminal_id = ids.get(record.serial)
                if terminal_id is not None:
                    by_terminal[terminal_id].append(record)
            for terminal_id, records in by_terminal.items():
                for rule in self.config.metric_rules:
                    actions.extend(
                        self._metric(rule, terminal_id, customers.get(terminal_id), records, staged)
                    )
        actions.extend(self._events(batch, ids, customers))
        return actions, staged

    def _metric(
        self,
        rule: MetricRule,
        terminal_id: int,
        customer_id: int | None,
        records: list[TelemetryRecord],
        staged: Staged,
    ) -> list[AlertAction]:
        key = (terminal_id, rule.kind)
        state = self._states.get(key)
        actions: list[AlertAction] = []
        changed = False
        for record in sorted(records, key=lambda r: r.ts):
            value = getattr(record, rule.metric)
            # The common case, a terminal at rest below the line, costs one comparison.
            if state is None and (value is None or value <= rule.above):
                continue
            state, verdict = evaluate(rule, state or ThresholdState(), record.ts, value)
            changed = True
            scope = terminal_scope(terminal_id)
            if verdict in (Verdict.OPEN, Verdict.REPEAT):
                message = f"{record.serial}: {rule.metric} {value:g} % above {rule.above:g} %"
                actions.append(
                    OpenAlert(
                        scope,
                        rule.kind,
                        rule.severity,
                        message,
                        record.ts,
                        terminal_id,
                        customer_id,
                        record.host_name,
                    )
                )
            elif verdict is Verdict.RESOLVE:
                actions.append(ResolveAlert(scope, rule.kind, record.ts))
                state = None
        if changed:
            staged.states[key] = state
        return actions

    def _events(
        self, batch: Batch[Any], ids: Mapping[str, int], customers: Mapping[int, int]
    ) -> list[AlertAction]:
        actions: list[AlertAction] = []
        for record in batch.events:
            terminal_id = ids.get(record.serial)
            if terminal_id is None:
                continue
            event = record.event
            for rule in self.config.event_rules:
                if event.kind != rule.event_kind:
                    continue
                scope = terminal_scope(terminal_id)
                if (
                    _EVENT_RANK[event.severity]
                    >= _EVENT_RANK[EventSeverity(rule.min_event_severity)]
                ):
                    text = event.message or event.code or event.kind
                    message = f"{record.serial}: {rule.kind}: {text}"
                    actions.append(
                        OpenAlert(
                            scope,
                            rule.kind,
                            rule.severity,
                            message,
                            record.ts,
                            terminal_id,
                            customers.get(terminal_id),
                        )
                    )
                else:
                    note = f"a later {event.kind} event reported {event.severity.value}"
                    actions.append(ResolveAlert(scope, rule.kind, record.ts, note))
        return actions
