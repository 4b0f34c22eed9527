"""The REST API of rollouts (v1, JSON, bearer tokens): list, read and page through a
rollout's tasks for every role; create (or preview with ``dry_run``), pause, resume
(optionally with policy changes), cancel and approve a wave for admins.

Bodies are parsed here, at the edge; the rules and the audit are ``rollouts.manage``'s.
Refusals are JSON errors with the reason: 400 a bad body, target, policy or wave spec,
403 a role that may not, 404 no such rollout, 409 a state that does not allow it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from flask import Blueprint, abort, request, url_for
from werkzeug.datastructures import MultiDict

from console import rollout_repository as repository
from console.access import acting_user, authenticate_bearer, client_address, requires_role
from console.api import ApiInputError
from console.api_commands import parse_json_object
from console.db import request_session
from console.rollout_forms import DEFAULT_WAVES, refusal_status
from console.rollout_repository import RolloutDetail
from rollouts import manage
from rollouts.errors import RolloutError
from rollouts.rollout_json import policy_from_json, target_from_json
from rollouts.targets import Target
from shared.models import Role

bp = Blueprint("api_rollouts", __name__, url_prefix="/api/v1")
bp.before_request(authenticate_bearer)

ID = "int(max=2147483647)"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CREATE_KEYS = frozenset({"name", "version", "target", "policy", "waves", "dry_run"})
_RESUME_KEYS = frozenset({"policy"})
_APPROVE_KEYS = frozenset({"wave"})
_NO_KEYS: frozenset[str] = frozenset()


def _actor() -> str:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    return user.username


def _bad(message: str) -> NoReturn:
    abort(400, description=message)


def _refuse(exc: RolloutError) -> NoReturn:
    request_session().rollback()
    abort(refusal_status(exc), description=str(exc))


def _body(allowed: frozenset[str], *, empty_ok: bool = False) -> dict[str, Any]:
    raw = request.get_data(cache=False)
    if empty_ok and not raw.strip():
        return {}
    try:
        return parse_json_object(raw, allowed)
    except ApiInputError as exc:
        _bad(str(exc))


def _int_arg(args: MultiDict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name) or ""
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        _bad(f"{name} must be a whole number from {low} to {high}, not {raw[:20]!r}")
    return int(raw)


def _rollout_or_404(rollout_id: int) -> RolloutDetail:
    found = repository.get(request_session(), rollout_id)
    if found is None:
        abort(404, description=f"no rollout {rollout_id}")
    return found


# -- reading -------------------------------------------------------------------------


@bp.get("/rollouts")
@requires_role(Role.VIEWER)
def list_rollouts() -> dict[str, Any]:
    state = request.args.get("state") or None
    if state is not None and state not in repository.ROLLOUT_STATES:
        _bad(f"state must be one of {', '.join(repository.ROLLOUT_STATES)}")
    limit = _int_arg(request.args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_arg(request.args, "offset", 0, 0, 2**31 - 1)
    db = request_session()
    found = repository.list_rollouts(db, state, limit, offset)
    return {
        "rollouts": [summary.to_json() for summary in found],
        "count": len(found),
        "counts": repository.counts_by_state(db),
        "limit": limit,
        "offset": offset,
    }


@bp.get(f"/rollouts/<{ID}:rollout_id>")
@requires_role(Role.VIEWER)
def get_rollout(rollout_id: int) -> dict[str, Any]:
    return _rollout_or_404(rollout_id).to_json()


@bp.get(f"/rollouts/<{ID}:rollout_id>/tasks")
@requires_role(Role.VIEWER)
def tasks(rollout_id: int) -> dict[str, Any]:
    """A page of the rollout's tasks by terminal serial; ``after`` is the last serial of
    the page before (``next_after`` of the answer)."""
    states = [s for part in request.args.getlist("state") for s in part.split(",") if s]
    unknown = sorted(set(states) - set(repository.TASK_STATES))
    if unknown:
        _bad(f"state {unknown[0][:40]!r} is not one of {', '.join(repository.TASK_STATES)}")
    limit = _int_arg(request.args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    wave = _int_arg(request.args, "wave", 0, 1, 2**31 - 1) or None
    after = request.args.get("after") or None
    if after is not None and len(after) > 64:
        _bad("after is a terminal serial: at most 64 characters")
    _rollout_or_404(rollout_id)
    db = request_session()
    found = repository.tasks(db, rollout_id, states=states, wave=wave, after=after, limit=limit)
    return {
        "tasks": [task.to_json() for task in found],
        "count": len(found),
        "total": repository.count_tasks(db, rollout_id, states=states, wave=wave),
        "limit": limit,
        "next_after": found[-1].serial if len(found) == limit else None,
    }


# -- creating ------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateBody:
    """``{"name", "version", "target": {...}, "policy": {...}, "waves", "dry_run"}``,
    shaped; the target is parsed (strictly: an unknown key is refused), the policy is
    checked by ``manage`` (and here, for a dry run)."""

    name: str
    version: str
    target: Target
    policy: Mapping[str, Any]
    waves: str
    dry_run: bool

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> CreateBody:
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ApiInputError("dry_run must be true or false")
        name = body.get("name", "")
        if not isinstance(name, str) or (not dry_run and not name.strip()):
            raise ApiInputError("name must be the rollout's name (text)")
        version = body.get("version")
        if not isinstance(version, str) or not version:
            raise ApiInputError("version must be the released firmware version to roll out")
        waves = body.get("waves", DEFAULT_WAVES)
        if not isinstance(waves, str):
            raise ApiInputError(f"waves must be text such as {DEFAULT_WAVES!r} or '10,100,*'")
        target = body.get("target") or {}
        policy = body.get("policy") or {}
        if not isinstance(target, dict) or not isinstance(policy, dict):
            raise ApiInputError("target and policy must be JSON objects (or left out)")
        return cls(name, version, target_from_json(target), policy, waves, dry_run)


@bp.post("/rollouts")
@requires_role(Role.ADMIN)
def create() -> tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]:
    body = _body(_CREATE_KEYS)
    db = request_session()
    try:
        wanted = CreateBody.parse(body)
        if wanted.dry_run:
            # The same checks as a real start, so a script learns of a refusal first.
            policy_from_json(wanted.policy)
            plan = manage.plan(db, wanted.version, wanted.target, wanted.waves)
            return {
                "dry_run": True,
                "version": plan.version,
                "waves": wanted.waves,
                "total": plan.total,
                "wave_sizes": list(plan.wave_sizes),
                "excluded": dict(plan.excluded),
            }, 200
        rollout_id = manage.create(
            db, name=wanted.name, version=wanted.version, target=wanted.target,
            policy=wanted.policy, wave_spec=wanted.waves, actor=_actor(),
            remote_addr=client_address(),
        )  # fmt: skip
        db.commit()
    except ApiInputError as exc:
        _bad(str(exc))
    except RolloutError as exc:
        _refuse(exc)
    location = url_for("api_rollouts.get_rollout", rollout_id=rollout_id)
    return _rollout_or_404(rollout_id).to_json(), 201, {"Location": location}


# -- steering ------------------------------------------------------------------------


def _steer(rollout_id: int, work: Callable[[], None]) -> dict[str, Any]:
    _rollout_or_404(rollout_id)
    db = request_session()
    try:
        work()
        db.commit()
    except RolloutError as exc:
        _refuse(exc)
    return _rollout_or_404(rollout_id).to_json()


@bp.post(f"/rollouts/<{ID}:rollout_id>/pause")
@requires_role(Role.ADMIN)
def pause(rollout_id: int) -> dict[str, Any]:
    _body(_NO_KEYS, empty_ok=True)
    return _steer(
        rollout_id, lambda: manage.pause(request_session(), rollout_id, _actor(), client_address())
    )


@bp.post(f"/rollouts/<{ID}:rollout_id>/resume")
@requires_role(Role.ADMIN)
def resume(rollout_id: int) -> dict[str, Any]:
    body = _body(_RESUME_KEYS, empty_ok=True)
    changes = body.get("policy") or {}
    if not isinstance(changes, dict):
        _bad("policy must be a JSON object of the policy fields to change (or left out)")
    return _steer(
        rollout_id,
        lambda: manage.resume(
            request_session(), rollout_id, _actor(), changes or None, client_address()
        ),
    )


@bp.post(f"/rollouts/<{ID}:rollout_id>/cancel")
@requires_role(Role.ADMIN)
def cancel(rollout_id: int) -> dict[str, Any]:
    _body(_NO_KEYS, empty_ok=True)
    return _steer(
        rollout_id,
        lambda: manage.cancel(request_session(), rollout_id, _actor(), client_address()),
    )


@bp.post(f"/rollouts/<{ID}:rollout_id>/approve")
@requires_role(Role.ADMIN)
def approve(rollout_id: int) -> dict[str, Any]:
    wave = _body(_APPROVE_KEYS).get("wave")
    if isinstance(wave, bool) or not isinstance(wave, int) or not 0 < wave < 2**31:
        _bad('wave must be the number of the wave to approve, e.g. {"wave": 2}')
    return _steer(
        rollout_id,
        lambda: manage.approve(request_session(), rollout_id, wave, _actor(), client_address()),
    )
