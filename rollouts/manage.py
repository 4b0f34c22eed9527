"""What people do to rollouts, in the caller's transaction: preview, create, pause,
resume, cancel, approve a wave; each change audited and announced to the driver
(``NOTIFY tms_rollouts``, sent at commit). Used by the console, the REST API and
``tms rollouts``.

A terminal is in at most one unfinished rollout: creating a rollout leaves out the
terminals another running, paused or halted rollout has not finished with (counted as
"in another rollout"), so two rollouts never race to flash the same TC-200.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from rollouts import library
from rollouts.decide import RolloutPolicy, RolloutState
from rollouts.errors import PolicyError, RolloutConflict, RolloutNotFound, TargetError
from rollouts.rollout_json import policy_from_json, policy_to_json, target_to_json, window_of
from rollouts.targets import Release, Target, TerminalFacts, select_targets
from rollouts.tasks import TaskState, on_cancel
from rollouts.waves import assign_waves, parse_wave_spec
from shared import audit_trail
from shared.models import Firmware, FirmwareState, Rollout, TerminalStatus

NOTIFY_CHANNEL = "tms_rollouts"
BUSY = "in another rollout"
CREATE_LOCK = 0x746D_7372  # "tmsr": the advisory lock that serialises creates
NAME_MAX = 200
# Unfinished: the driver still acts on it, and its terminals are taken.
ACTIVE = (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED)

_FLEET = """
SELECT t.serial, t.customer_id, t.store_id, t.model, t.firmware_version, t.tags, t.status,
    COALESCE(s.timezone, 'UTC'), t.id,
    EXISTS (
        -- Any rollout's, a cancelled one's too: an install it let finish is still running.
        SELECT 1 FROM update_task AS u WHERE u.terminal_id = t.id
          AND u.state NOT IN ('succeeded', 'failed', 'rolled_back', 'cancelled', 'skipped')
    ) AS busy
FROM terminal AS t LEFT JOIN store AS s ON s.id = t.store_id
WHERE t.decommissioned_at IS NULL
  AND (cardinality(CAST(:customers AS int[])) = 0 OR t.customer_id = ANY(:customers))
  AND (cardinality(CAST(:stores AS int[])) = 0 OR t.store_id = ANY(:stores))
  AND (cardinality(CAST(:models AS text[])) = 0 OR t.model = ANY(:models))
  AND t.tags @> CAST(:tags AS varchar(64)[])
ORDER BY t.serial
"""


@dataclass(frozen=True)
class Candidate:
    facts: TerminalFacts
    terminal_id: int
    busy: bool


@dataclass(frozen=True)
class Plan:
    """What a rollout would do: its terminals per wave, and who is left out why."""

    version: str
    waves: tuple[tuple[str, ...], ...]  # serials per wave
    excluded: Mapping[str, int]
    terminal_ids: Mapping[str, int]
    from_versions: Mapping[str, str | None]

    @property
    def wave_sizes(self) -> tuple[int, ...]:
        return tuple(len(wave) for wave in self.waves)

    @property
    def total(self) -> int:
        return sum(self.wave_sizes)


def released(session: Session, version: str) -> Firmware:
    firmware = library.get(session, version)
    if firmware is None:
        raise TargetError(f"no firmware {version!r} in the library")
    if firmware.state != FirmwareState.RELEASED:
        raise TargetError(
            f"firmware {version} is {firmware.state}: only a released image is rolled out"
        )
    return firmware


def candidates(session: Session, target: Target) -> list[Candidate]:
    """The fleet's terminals the target's customers, stores, models and tags allow."""
    rows = session.execute(
        text(_FLEET),
        {
            "customers": sorted(target.customers),
            "stores": sorted(target.stores),
            "models": sorted(target.models),
            "tags": sorted(target.tags),
        },
    )
    return [
        Candidate(
            TerminalFacts(
                serial=r[0],
                customer=r[1],
                store=r[2],
                model=r[3],
                firmware_version=r[4],
                tags=frozenset(r[5] or ()),
                status=_status(r[6]),
                timezone=r[7],
            ),
            terminal_id=r[8],
            busy=bool(r[9]),
        )
        for r in rows
    ]


def plan(
    session: Session, version: str, target: Target, wave_spec: str, seed: int | str = 0
) -> Plan:
    """The waves a rollout of ``version`` to ``target`` would have (nothing is written)."""
    firmware = released(session, version)
    spec = parse_wave_spec(wave_spec)
    release = Release(version=firmware.version, models=frozenset(firmware.models or ()))
    found = candidates(session, target)
    free = [c for c in found if not c.busy]
    selection = select_targets(release, target, (c.facts for c in free))
    chosen = set(selection.serials)
    picked = [c.facts for c in free if c.facts.serial in chosen]
    excluded: Counter[str] = Counter({str(k): v for k, v in selection.excluded.items()})
    busy = sum(1 for c in found if c.busy)
    if busy:
        excluded[BUSY] = busy
    return Plan(
        version=firmware.version,
        waves=tuple(assign_waves(picked, spec, seed)),
        excluded=dict(excluded),
        terminal_ids={c.facts.serial: c.terminal_id for c in found if c.facts.serial in chosen},
        from_versions={f.serial: f.firmware_version for f in picked},
    )


def create(
    session: Session,
    *,
    name: str,
    version: str,
    target: Target,
    policy: Mapping[str, Any],
    wave_spec: str,
    actor: str,
    remote_addr: str | None = None,
    seed: int | None = None,
) -> int:
    """A running rollout with every task queued in its wave; its id. The caller commits.

    ``seed`` fixes which terminals fall in which wave (a test's, or a repeat of a
    preview); by default a random one."""
    name = name.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise PolicyError(f"a rollout needs a name of 1 to {NAME_MAX} printable characters")
    checked = policy_from_json(policy)
    seed = secrets.randbits(62) if seed is None else seed
    # One create at a time, to its commit: the second then sees the first's tasks and
    # leaves their terminals out, instead of both taking every terminal.
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK})
    chosen = plan(session, version, target, wave_spec, seed)
    if not chosen.total:
        raise TargetError(
            "no terminal to update: "
            + (", ".join(f"{n} {why}" for why, n in sorted(chosen.excluded.items())) or "none")
        )
    firmware = released(session, version)
    rollout = Rollout(
        name=name,
        firmware_id=firmware.id or 0,
        state=RolloutState.RUNNING.value,
        target=target_to_json(target),
        policy=policy_to_json(checked, window_of(policy)),
        wave_spec=wave_spec.strip(),
        seed=seed,
        excluded=dict(chosen.excluded),
        created_by=actor,
    )
    session.add(rollout)
    session.flush()
    rollout_id = rollout.id or 0
    session.execute(
        text(
            "INSERT INTO rollout_wave (rollout_id, number, size)"
            " SELECT :id, n, size FROM unnest(CAST(:sizes AS int[])) WITH ORDINALITY AS w(size, n)"
        ),
        {"id": rollout_id, "sizes": list(chosen.wave_sizes)},
    )
    serials = [serial for wave in chosen.waves for serial in wave]
    # Each row's foreign key share-locks its terminal: in id order, the order ingest's
    # writer locks a batch's terminals in, so that no cycle can form with a batch.
    session.execute(
        text(
            "INSERT INTO update_task (rollout_id, firmware_id, terminal_id, wave, from_version)"
            " SELECT :id, :firmware, v.terminal_id, v.wave, v.from_version"
            " FROM unnest(CAST(:terminals AS int[]), CAST(:waves AS int[]),"
            " CAST(:froms AS text[])) AS v(terminal_id, wave, from_version)"
            " ORDER BY v.terminal_id"
        ),
        {
            "id": rollout_id,
            "firmware": firmware.id,
            "terminals": [chosen.terminal_ids[s] for s in serials],
            "waves": [n for n, wave in enumerate(chosen.waves, start=1) for _ in wave],
            "froms": [chosen.from_versions[s] for s in serials],
        },
    )
    audit_trail.record(
        session,
        actor,
        "rollout.create",
        f"rollout:{rollout_id}",
        {
            "name": name,
            "version": firmware.version,
            "waves": list(chosen.wave_sizes),
            "excluded": dict(chosen.excluded),
            "target": rollout.target,
            "policy": rollout.policy,
        },
        remote_addr,
    )
    _notify(session, rollout_id)
    return rollout_id


def pause(session: Session, rollout_id: int, actor: str, remote_addr: str | None = None) -> None:
    rollout = _get(session, rollout_id)
    _require(rollout, {RolloutState.RUNNING}, "pause")
    _move(session, rollout, RolloutState.PAUSED, actor, "rollout.pause", remote_addr)


def resume(
    session: Session,
    rollout_id: int,
    actor: str,
    policy_changes: Mapping[str, Any] | None = None,
    remote_addr: str | None = None,
) -> None:
    """Run a paused or halted rollout again, with ``policy_changes`` (e.g. a higher error
    threshold: a halt's reason holds until the facts or the policy change)."""
    rollout = _get(session, rollout_id)
    _require(rollout, {RolloutState.PAUSED, RolloutState.HALTED}, "resume")
    detail: dict[str, Any] = {"from": rollout.state}
    if policy_changes:
        merged = {**rollout.policy, **policy_changes}
        checked: RolloutPolicy = policy_from_json(merged)
        rollout.policy = policy_to_json(checked, window_of(merged))
        detail["policy"] = dict(policy_changes)
    rollout.halt_reason = None
    _move(session, rollout, RolloutState.RUNNING, actor, "rollout.resume", remote_addr, detail)


def cancel(session: Session, rollout_id: int, actor: str, remote_addr: str | None = None) -> None:
    """Stop the rollout: tasks not started are skipped; downloads-only, unsent commands
    and waits for a window are cancelled; installs already sent to an agent finish."""
    rollout = _get(session, rollout_id)
    _require(rollout, set(ACTIVE), "cancel")
    # Not started: skipped. A download or a wait for the window: cancelled, with its
    # command if it has not gone out. A full install already sent cannot be called back
    # (the agent runs it through to the TC-200): it stays in flight like an install, and
    # its result is taken when it comes.
    stoppable = """
        rollout_id = :id AND (state = 'waiting_window' OR (state = ANY(:early) AND (
            download_only OR command_id IS NULL OR NOT EXISTS (SELECT 1 FROM command AS c
                WHERE c.id = update_task.command_id AND c.status NOT IN ('queued', 'cancelled'))
        )))
    """
    early = [
        state.value
        for state in TaskState
        if on_cancel(state) is TaskState.CANCELLED and state is not TaskState.WAITING_WINDOW
    ]
    session.execute(
        text(
            "UPDATE command SET status = 'cancelled', finished_at = now(), cancelled_by = :by,"
            " error = 'the rollout was cancelled' WHERE status = 'queued' AND id IN"
            " (SELECT id FROM command WHERE status = 'queued' AND id IN"
            f" (SELECT command_id FROM update_task WHERE {stoppable})"
            " ORDER BY id FOR NO KEY UPDATE)"  # id order, as ingest locks them
        ),
        {"id": rollout_id, "early": early, "by": actor[:64]},
    )
    session.execute(
        text(
            "UPDATE update_task SET state = 'cancelled', updated_at = now(),"
            " finished_at = now(), reason = 'the rollout was cancelled'"
            f" WHERE {stoppable}"
        ),
        {"id": rollout_id, "early": early},
    )
    session.execute(
        text(
            "UPDATE update_task SET state = 'skipped', updated_at = now(), finished_at = now(),"
            " reason = COALESCE(reason, 'the rollout was cancelled')"
            " WHERE rollout_id = :id AND state = 'queued'"
        ),
        {"id": rollout_id},
    )
    rollout.finished_at = datetime.now(UTC)
    _move(session, rollout, RolloutState.CANCELLED, actor, "rollout.cancel", remote_addr)


def approve(
    session: Session, rollout_id: int, wave: int, actor: str, remote_addr: str | None = None
) -> None:
    rollout = _get(session, rollout_id)
    _require(rollout, set(ACTIVE), "approve a wave of")
    row = session.execute(
        text(
            "UPDATE rollout_wave SET approved_at = now(), approved_by = :by"
            " WHERE rollout_id = :id AND number = :n AND approved_at IS NULL"
            " AND started_at IS NULL RETURNING number"
        ),
        {"id": rollout_id, "n": wave, "by": actor[:200]},
    ).first()
    if row is None:
        raise RolloutConflict(
            f"wave {wave} of rollout {rollout_id} does not exist, is approved, or has begun"
        )
    audit_trail.record(
        session, actor, "rollout.approve", f"rollout:{rollout_id}", {"wave": wave}, remote_addr
    )
    _notify(session, rollout_id)


def _get(session: Session, rollout_id: int) -> Rollout:
    rollout = session.get(Rollout, rollout_id, with_for_update={"key_share": True})
    if rollout is None:
        raise RolloutNotFound(f"no rollout {rollout_id}")
    return rollout


def _require(rollout: Rollout, states: set[RolloutState], verb: str) -> None:
    if rollout.state not in {s.value for s in states}:
        raise RolloutConflict(f"cannot {verb} rollout {rollout.id}: it is {rollout.state}")


def _move(
    session: Session,
    rollout: Rollout,
    to: RolloutState,
    actor: str,
    action: str,
    remote_addr: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    rollout.state = to.value
    rollout.updated_at = datetime.now(UTC)
    session.add(rollout)
    session.flush()
    audit_trail.record(
        session, actor, action, f"rollout:{rollout.id}", detail or {"to": to.value}, remote_addr
    )
    _notify(session, rollout.id or 0)


def _notify(session: Session, rollout_id: int) -> None:
    session.execute(
        text("SELECT pg_notify(:channel, :id)"), {"channel": NOTIFY_CHANNEL, "id": str(rollout_id)}
    )


def _status(value: str) -> TerminalStatus:
    try:
        return TerminalStatus(value)
    except ValueError:
        return TerminalStatus.UNKNOWN
