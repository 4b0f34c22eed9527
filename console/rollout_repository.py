"""What the rollout screens and the REST API read, as SQL: the rollouts with their
progress, one rollout with its waves' tasks counted per state, its failures and its
tasks (in flight, or of a state, a page at a time), and the choices the new-rollout
form offers. Nothing here writes: every change goes through ``rollouts.manage``, which
checks, audits and tells the driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from rollouts.decide import RolloutState
from rollouts.tasks import FAILURES, FINAL, IN_FLIGHT, TaskState

ROLLOUT_STATES = tuple(state.value for state in RolloutState)
TASK_STATES = tuple(state.value for state in TaskState)
IN_FLIGHT_STATES = tuple(state.value for state in TaskState if state in IN_FLIGHT)
FAILURE_STATES = tuple(state.value for state in TaskState if state in FAILURES)
FINAL_STATES = tuple(state.value for state in TaskState if state in FINAL)
# Unfinished rollouts: the driver still acts on them, and people may steer them.
ACTIVE_STATES = (RolloutState.RUNNING.value, RolloutState.PAUSED.value, RolloutState.HALTED.value)
LIST_LIMIT = 200
MAX_ID = 2**31 - 1


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- the list ------------------------------------------------------------------------

_PROGRESS = """
CROSS JOIN LATERAL (
    SELECT count(*) AS total,
        count(*) FILTER (WHERE u.state = 'succeeded') AS succeeded,
        count(*) FILTER (WHERE u.state = ANY(:failure_states)) AS failures,
        count(*) FILTER (WHERE u.state = ANY(:in_flight_states)) AS in_flight
    FROM update_task AS u WHERE u.rollout_id = r.id
) AS c
"""

_SUMMARY_COLUMNS = """
r.id, r.name, f.version, r.state, r.created_by, r.created_at, r.finished_at, r.halt_reason,
c.total, c.succeeded, c.failures, c.in_flight
"""

_LIST = f"""
SELECT {_SUMMARY_COLUMNS}
FROM rollout AS r JOIN firmware AS f ON f.id = r.firmware_id
{_PROGRESS}
WHERE (CAST(:state AS text) IS NULL OR r.state = CAST(:state AS text))
ORDER BY r.id DESC
LIMIT :limit OFFSET :offset
"""

_STATE_PARAMS = {"failure_states": list(FAILURE_STATES), "in_flight_states": list(IN_FLIGHT_STATES)}


@dataclass(frozen=True)
class RolloutSummary:
    """One rollout as the list shows it."""

    id: int
    name: str
    version: str
    state: str
    created_by: str
    created_at: datetime | None
    finished_at: datetime | None
    halt_reason: str | None
    total: int
    succeeded: int
    failures: int
    in_flight: int

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @classmethod
    def of(cls, row: Any) -> RolloutSummary:
        return cls(
            id=row[0], name=row[1], version=row[2], state=row[3], created_by=row[4],
            created_at=row[5], finished_at=row[6], halt_reason=row[7], total=row[8],
            succeeded=row[9], failures=row[10], in_flight=row[11],
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "halt_reason": self.halt_reason,
            "total": self.total,
            "succeeded": self.succeeded,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "finished_at": _iso(self.finished_at),
        }


def list_rollouts(
    session: Session, state: str | None = None, limit: int = LIST_LIMIT, offset: int = 0
) -> list[RolloutSummary]:
    """Rollouts, newest first; only ``state``'s when given."""
    rows = session.execute(
        text(_LIST), {"state": state, "limit": limit, "offset": offset, **_STATE_PARAMS}
    )
    return [RolloutSummary.of(row) for row in rows]


def counts_by_state(session: Session) -> dict[str, int]:
    """Rollouts per state, every state present."""
    rows = session.execute(text("SELECT state, count(*) FROM rollout GROUP BY state"))
    found = {row[0]: row[1] for row in rows}
    return {state: int(found.get(state, 0)) for state in ROLLOUT_STATES}


# -- one rollout ---------------------------------------------------------------------

_HEAD = f"""
SELECT {_SUMMARY_COLUMNS}, r.target, r.policy, r.wave_spec, r.excluded, r.note, r.updated_at,
    f.models
FROM rollout AS r JOIN firmware AS f ON f.id = r.firmware_id
{_PROGRESS}
WHERE r.id = :id
"""

_WAVES = """
SELECT number, size, started_at, approved_at, approved_by FROM rollout_wave
WHERE rollout_id = :id ORDER BY number
"""

_WAVE_COUNTS = """
SELECT wave, state, count(*) FROM update_task WHERE rollout_id = :id GROUP BY wave, state
"""


@dataclass(frozen=True)
class WaveView:
    """One wave: its size, when it opened and was approved, its tasks per state."""

    number: int
    size: int
    started_at: datetime | None
    approved_at: datetime | None
    approved_by: str | None
    counts: Mapping[str, int]  # every task state present

    def count(self, *states: str) -> int:
        return sum(self.counts.get(state, 0) for state in states)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def succeeded(self) -> int:
        return self.count(TaskState.SUCCEEDED.value)

    @property
    def failures(self) -> int:
        return self.count(*FAILURE_STATES)

    @property
    def in_flight(self) -> int:
        return self.count(*IN_FLIGHT_STATES)

    @property
    def finished(self) -> int:
        return self.count(*FINAL_STATES)

    def to_json(self, awaiting_approval: bool) -> dict[str, Any]:
        return {
            "number": self.number,
            "size": self.size,
            "started_at": _iso(self.started_at),
            "approved_at": _iso(self.approved_at),
            "approved_by": self.approved_by,
            "awaiting_approval": awaiting_approval,
            "succeeded": self.succeeded,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "counts": dict(self.counts),
        }


@dataclass(frozen=True)
class RolloutDetail:
    """One rollout: the list's summary, its rules as stored, and its waves."""

    summary: RolloutSummary
    target: Mapping[str, Any]
    policy: Mapping[str, Any]
    wave_spec: str
    excluded: Mapping[str, int]
    note: str | None
    updated_at: datetime | None
    models: tuple[str, ...]  # the firmware's
    waves: tuple[WaveView, ...]

    @property
    def id(self) -> int:
        return self.summary.id

    @property
    def state(self) -> str:
        return self.summary.state

    @property
    def counts(self) -> dict[str, int]:
        """Tasks per state over every wave."""
        return {state: sum(w.counts.get(state, 0) for w in self.waves) for state in TASK_STATES}

    @property
    def approval_needed(self) -> bool:
        return self.policy.get("approve_each_wave") is True

    def awaiting_approval(self, wave: WaveView) -> bool:
        """Whether a person may approve ``wave`` now (rollouts.manage.approve's rule)."""
        return (
            self.approval_needed
            and self.summary.active
            and wave.started_at is None
            and wave.approved_at is None
        )

    @property
    def next_wave(self) -> int | None:
        """The first wave not open yet: the one an approval would let open next."""
        return next((w.number for w in self.waves if w.started_at is None), None)

    def to_json(self) -> dict[str, Any]:
        return self.summary.to_json() | {
            "note": self.note,
            "updated_at": _iso(self.updated_at),
            "wave_spec": self.wave_spec,
            "target": dict(self.target),
            "policy": dict(self.policy),
            "excluded": dict(self.excluded),
            "counts": self.counts,
            "waves": [w.to_json(self.awaiting_approval(w)) for w in self.waves],
        }


def get(session: Session, rollout_id: int) -> RolloutDetail | None:
    if not 0 < rollout_id <= MAX_ID:
        return None
    head = session.execute(text(_HEAD), {"id": rollout_id, **_STATE_PARAMS}).first()
    if head is None:
        return None
    counts: dict[int, dict[str, int]] = {}
    for wave, state, count in session.execute(text(_WAVE_COUNTS), {"id": rollout_id}):
        counts.setdefault(wave, {})[state] = count
    waves = tuple(
        WaveView(
            number=row[0],
            size=row[1],
            started_at=row[2],
            approved_at=row[3],
            approved_by=row[4],
            counts={state: counts.get(row[0], {}).get(state, 0) for state in TASK_STATES},
        )  # fmt: skip
        for row in session.execute(text(_WAVES), {"id": rollout_id})
    )
    models = head[18] if isinstance(head[18], list) else []
    return RolloutDetail(
        summary=RolloutSummary.of(head),
        target=head[12] if isinstance(head[12], dict) else {},
        policy=head[13] if isinstance(head[13], dict) else {},
        wave_spec=head[14],
        excluded=head[15] if isinstance(head[15], dict) else {},
        note=head[16],
        updated_at=head[17],
        models=tuple(m for m in models if isinstance(m, str)),
        waves=waves,
    )


# -- its tasks -----------------------------------------------------------------------

_TASK_COLUMNS = """
t.serial, u.wave, u.state, u.attempts, u.percent, u.failure, u.reason, u.from_version,
u.version_after, u.download_only, u.retry_at, u.started_at, u.finished_at, u.updated_at,
u.command_id
"""

_TASKS = f"""
SELECT {_TASK_COLUMNS}
FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id
WHERE u.rollout_id = :id
  AND (cardinality(CAST(:states AS text[])) = 0 OR u.state = ANY(CAST(:states AS text[])))
  AND (CAST(:wave AS int) IS NULL OR u.wave = CAST(:wave AS int))
  AND (CAST(:after AS text) IS NULL OR t.serial > CAST(:after AS text))
ORDER BY t.serial
LIMIT :limit
"""

_COUNT_TASKS = """
SELECT count(*) FROM update_task AS u
WHERE u.rollout_id = :id
  AND (cardinality(CAST(:states AS text[])) = 0 OR u.state = ANY(CAST(:states AS text[])))
  AND (CAST(:wave AS int) IS NULL OR u.wave = CAST(:wave AS int))
"""

# Newest first: the failures a person is looking into are the ones that just happened.
_FAILURES = f"""
SELECT {_TASK_COLUMNS}
FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id
WHERE u.rollout_id = :id AND u.state = ANY(:states)
ORDER BY u.finished_at DESC NULLS LAST, t.serial
LIMIT :limit OFFSET :offset
"""

# Longest running first: a task stuck in a state is what needs a look.
_IN_FLIGHT = f"""
SELECT {_TASK_COLUMNS}
FROM update_task AS u JOIN terminal AS t ON t.id = u.terminal_id
WHERE u.rollout_id = :id AND u.state = ANY(:states)
ORDER BY u.started_at NULLS LAST, t.serial
LIMIT :limit
"""


@dataclass(frozen=True)
class TaskView:
    """One terminal's part in a rollout."""

    serial: str
    wave: int
    state: str
    attempts: int
    percent: float | None
    failure: str | None
    reason: str | None
    from_version: str | None
    version_after: str | None
    download_only: bool
    retry_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    command_id: str | None

    @classmethod
    def of(cls, row: Any) -> TaskView:
        return cls(*row)

    def to_json(self) -> dict[str, Any]:
        """The API form: the fields as they are, timestamps in ISO 8601."""
        return {
            name: _iso(value) if isinstance(value, datetime) else value
            for name, value in asdict(self).items()
        }


def tasks(
    session: Session,
    rollout_id: int,
    *,
    states: Sequence[str] = (),
    wave: int | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[TaskView]:
    """The rollout's tasks by terminal serial, those after ``after`` (a page's last
    serial); only ``states``' and ``wave``'s when given."""
    rows = session.execute(
        text(_TASKS),
        {"id": rollout_id, "states": list(states), "wave": wave, "after": after, "limit": limit},
    )
    return [TaskView.of(row) for row in rows]


def count_tasks(
    session: Session, rollout_id: int, *, states: Sequence[str] = (), wave: int | None = None
) -> int:
    found = session.execute(
        text(_COUNT_TASKS), {"id": rollout_id, "states": list(states), "wave": wave}
    ).scalar_one()
    return int(found)


def failures(session: Session, rollout_id: int, limit: int = 50, offset: int = 0) -> list[TaskView]:
    """Failed and rolled-back tasks, the latest first."""
    rows = session.execute(
        text(_FAILURES),
        {"id": rollout_id, "states": list(FAILURE_STATES), "limit": limit, "offset": offset},
    )
    return [TaskView.of(row) for row in rows]


def in_flight(session: Session, rollout_id: int, limit: int = 50) -> list[TaskView]:
    """Tasks under way (downloading to rebooting), the longest running first."""
    rows = session.execute(
        text(_IN_FLIGHT), {"id": rollout_id, "states": list(IN_FLIGHT_STATES), "limit": limit}
    )
    return [TaskView.of(row) for row in rows]


# -- what the new-rollout form offers ------------------------------------------------


@dataclass(frozen=True)
class ReleasedFirmware:
    version: str
    models: tuple[str, ...]
    released_at: datetime | None


@dataclass(frozen=True)
class StoreChoice:
    id: int
    customer: str
    code: str
    name: str


@dataclass(frozen=True)
class FormChoices:
    """What the new-rollout form lets a person pick."""

    versions: tuple[ReleasedFirmware, ...]
    customers: tuple[tuple[int, str], ...]  # (id, name)
    stores: tuple[StoreChoice, ...]  # by customer name, then code
    models: tuple[str, ...]  # of terminals in service
    tags: tuple[str, ...]  # on terminals in service


def form_choices(session: Session) -> FormChoices:
    versions = session.execute(
        text(
            "SELECT version, models, released_at FROM firmware WHERE state = 'released'"
            " ORDER BY released_at DESC NULLS LAST, version DESC"
        )
    )
    customers = session.execute(text("SELECT id, name FROM customer ORDER BY lower(name), id"))
    stores = session.execute(
        text(
            "SELECT s.id, c.name, s.code, s.name FROM store AS s"
            " JOIN customer AS c ON c.id = s.customer_id ORDER BY lower(c.name), s.code"
        )
    )
    models = session.execute(
        text("SELECT DISTINCT model FROM terminal WHERE decommissioned_at IS NULL ORDER BY model")
    ).scalars()
    tags = session.execute(
        text(
            "SELECT DISTINCT tag FROM terminal, unnest(tags) AS tag"
            " WHERE decommissioned_at IS NULL ORDER BY tag"
        )
    ).scalars()
    return FormChoices(
        versions=tuple(
            ReleasedFirmware(
                row[0],
                tuple(m for m in row[1] if isinstance(m, str)) if isinstance(row[1], list) else (),
                row[2],
            )
            for row in versions
        ),
        customers=tuple((row[0], row[1]) for row in customers),
        stores=tuple(StoreChoice(row[0], row[1], row[2], row[3]) for row in stores),
        models=tuple(models),
        tags=tuple(tags),
    )


@dataclass(frozen=True)
class TargetNames:
    """A stored target's customer and store ids as people know them."""

    customers: tuple[str, ...]
    stores: tuple[str, ...]


def target_names(session: Session, target: Mapping[str, Any]) -> TargetNames:
    """Names for the ids in ``target`` (an id no longer there shown as ``#id``)."""
    customer_ids = [i for i in target.get("customers") or [] if isinstance(i, int)]
    store_ids = [i for i in target.get("stores") or [] if isinstance(i, int)]
    customers = {
        row[0]: row[1]
        for row in session.execute(
            text("SELECT id, name FROM customer WHERE id = ANY(:ids)"), {"ids": customer_ids}
        )
    }
    stores = {
        row[0]: f"{row[1]} {row[2]}"
        for row in session.execute(
            text(
                "SELECT s.id, c.name, s.code FROM store AS s JOIN customer AS c"
                " ON c.id = s.customer_id WHERE s.id = ANY(:ids)"
            ),
            {"ids": store_ids},
        )
    }
    return TargetNames(
        customers=tuple(customers.get(i, f"#{i}") for i in customer_ids),
        stores=tuple(stores.get(i, f"#{i}") for i in store_ids),
    )
