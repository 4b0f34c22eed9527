"""The rollout screens: the list (filtered by state), a new rollout (a preview of each
wave's terminals and who is left out why, then the start, asked once more), and one
rollout, live: its state and halt reason, each wave's tasks per state, waves awaiting
approval, failures with their reasons, tasks in flight; pause, resume (from a halt with
new thresholds), cancel and approve. Every role looks; only admins start and steer.

Reads are console.rollout_repository's; changes are rollouts.manage's, which checks,
audits and tells the driver; this module commits or rolls back around each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from console import rollout_repository as repository
from console.access import acting_user, client_address, requires_role
from console.db import request_session
from console.rollout_forms import (
    BY_NAME,
    GENERAL,
    POLICY_FIELDS,
    THRESHOLD_NAMES,
    FormRefused,
    NewRollout,
    RolloutForm,
    check,
    field_of,
    form_value,
    refusal_status,
    resume_changes,
    sentence,
    threshold_warning,
)
from console.rollout_repository import RolloutDetail
from rollouts import manage
from rollouts.errors import RolloutError
from shared.models import Role

bp = Blueprint("rollouts", __name__)

ID = "int(max=2147483647)"
FAILURES_SHOWN = 50
IN_FLIGHT_SHOWN = 50
MAX_OFFSET = 10_000_000
# What each action asks before it is done (the page's script asks in a dialog; without
# it the question is a panel of its own), and what it says after.
QUESTIONS = {
    "cancel": "Cancel rollout “{name}”? Terminals not started are left alone, downloads "
    "and waits stop; installs already writing a terminal finish. This cannot be undone.",
    "approve": "Approve wave {wave} of “{name}” ({size} terminals)? It opens as soon as "
    "the wave before it has met its success threshold.",
    "resume": "Resume rollout “{name}”? New downloads and installs start again.",
}
DONE = {
    "pause": "Rollout paused: nothing new starts; what runs finishes.",
    "resume": "Rollout resumed.",
    "cancel": "Rollout cancelled.",
    "approve": "Wave {wave} approved.",
}


def _actor() -> str:
    user = acting_user()
    assert user is not None  # requires_role let the request through
    return user.username


# -- the list ------------------------------------------------------------------------


@bp.get("/rollouts")
@requires_role(Role.VIEWER)
def index() -> str:
    db = request_session()
    wanted = request.args.get("state") or None
    # As on the other lists, a state the filter does not know shows every rollout.
    state = wanted if wanted in repository.ROLLOUT_STATES else None
    return render_template(
        "rollouts.html",
        rollouts=repository.list_rollouts(db, state),
        counts=repository.counts_by_state(db),
        states=repository.ROLLOUT_STATES,
        state=state,
        limit=repository.LIST_LIMIT,
    )


# -- a new rollout -------------------------------------------------------------------


def _new_page(
    form: RolloutForm,
    errors: dict[str, str] | None = None,
    plan: manage.Plan | None = None,
    *,
    wanted: NewRollout | None = None,
    asking: bool = False,
    changed_from: int = -1,
    status: int = 200,
) -> tuple[str, int]:
    return render_template(
        "rollout_new.html",
        form=form,
        errors=errors or {},
        plan=plan,
        choices=repository.form_choices(request_session()),
        policy_fields=POLICY_FIELDS,
        warning=threshold_warning(wanted.policy) if wanted is not None else None,
        asking=asking,
        changed_from=changed_from,
    ), status


def _refused(form: RolloutForm, exc: RolloutError) -> tuple[str, int]:
    request_session().rollback()
    return _new_page(form, {field_of(exc): sentence(str(exc))}, status=refusal_status(exc))


def _checked(form: RolloutForm) -> tuple[NewRollout | None, tuple[str, int] | None]:
    try:
        return check(form), None
    except FormRefused as exc:
        return None, _new_page(form, exc.errors, status=400)


@bp.get("/rollouts/new")
@requires_role(Role.ADMIN)
def new() -> tuple[str, int]:
    return _new_page(RolloutForm(version=request.args.get("version", "")[:64]))


@bp.post("/rollouts/preview")
@requires_role(Role.ADMIN)
def preview() -> tuple[str, int]:
    form = RolloutForm.parse(request.form)
    wanted, refused = _checked(form)
    if wanted is None:
        assert refused is not None
        return refused
    try:
        plan = manage.plan(request_session(), wanted.version, wanted.target, wanted.wave_spec)
    except RolloutError as exc:
        return _refused(form, exc)
    return _new_page(form, plan=plan, wanted=wanted)


@bp.post("/rollouts")
@requires_role(Role.ADMIN)
def start() -> Response | tuple[str, int]:
    form = RolloutForm.parse(request.form)
    wanted, refused = _checked(form)
    if wanted is None:
        assert refused is not None
        return refused
    db = request_session()
    try:
        plan = manage.plan(db, wanted.version, wanted.target, wanted.wave_spec)
    except RolloutError as exc:
        return _refused(form, exc)
    expected = request.form.get("expected", "")
    if expected != str(plan.total):
        # The fleet changed since the preview: show the new one and ask again.
        shown = int(expected) if expected.isdigit() else -1
        return _new_page(form, plan=plan, wanted=wanted, changed_from=shown)
    if request.form.get("confirmed") != "yes":
        return _new_page(form, plan=plan, wanted=wanted, asking=True)
    try:
        rollout_id = manage.create(
            db, name=wanted.name, version=wanted.version, target=wanted.target,
            policy=wanted.policy, wave_spec=wanted.wave_spec, actor=_actor(),
            remote_addr=client_address(),
        )  # fmt: skip
        db.commit()
    except RolloutError as exc:
        return _refused(form, exc)
    flash(
        f"Rollout “{wanted.name}” started: firmware {wanted.version} to {plan.total} "
        f"terminal{'s' if plan.total != 1 else ''} in {len(plan.waves)} "
        f"wave{'s' if len(plan.waves) != 1 else ''}.",
        "info",
    )
    return redirect(url_for("rollouts.detail", rollout_id=rollout_id))


# -- one rollout ---------------------------------------------------------------------


def _rollout_or_404(rollout_id: int) -> RolloutDetail:
    found = repository.get(request_session(), rollout_id)
    if found is None:
        abort(404, description=f"There is no rollout {rollout_id}.")
    return found


def _failures_offset() -> int:
    raw = request.args.get("failures", "")
    return min(int(raw), MAX_OFFSET) if raw.isdigit() else 0


def _live_context(detail: RolloutDetail) -> dict[str, Any]:
    db = request_session()
    offset = _failures_offset()
    failures_total = detail.summary.failures
    return {
        "rollout": detail,
        "failures": repository.failures(db, detail.id, FAILURES_SHOWN, offset),
        "failures_total": failures_total,
        "failures_offset": offset,
        "failures_shown": FAILURES_SHOWN,
        "in_flight": repository.in_flight(db, detail.id, IN_FLIGHT_SHOWN),
        "in_flight_shown": IN_FLIGHT_SHOWN,
        "questions": QUESTIONS,
    }


def _detail_page(
    detail: RolloutDetail,
    *,
    asking: str | None = None,
    wave: int | None = None,
    resume_form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> tuple[str, int]:
    size = next((w.size for w in detail.waves if w.number == wave), 0)
    question = None
    if asking in QUESTIONS:
        question = QUESTIONS[asking].format(name=detail.summary.name, wave=wave, size=size)
    values = resume_form or {
        name: form_value(BY_NAME[name], detail.policy) for name in THRESHOLD_NAMES
    }
    return render_template(
        "rollout.html",
        **_live_context(detail),
        asking=asking,
        asking_wave=wave,
        question=question,
        resume_values=values,
        threshold_fields=[BY_NAME[name] for name in THRESHOLD_NAMES],
        errors=errors or {},
        policy_fields=POLICY_FIELDS,
        policy_text=_policy_text(detail),
        target_names=repository.target_names(request_session(), detail.target),
    ), status


def _policy_text(detail: RolloutDetail) -> list[tuple[str, str]]:
    """The rollout's policy as (label, value) lines."""
    lines = []
    for spec in POLICY_FIELDS:
        value = form_value(spec, detail.policy)
        if spec.flag:
            shown = "yes" if value else "no"
        elif not value:
            shown = spec.blank or "—"
        else:
            shown = f"{value} {spec.unit}".strip()
        lines.append((spec.label, shown))
    return lines


@bp.get(f"/rollouts/<{ID}:rollout_id>")
@requires_role(Role.VIEWER)
def detail(rollout_id: int) -> tuple[str, int]:
    return _detail_page(_rollout_or_404(rollout_id))


@bp.get(f"/rollouts/<{ID}:rollout_id>/live")
@requires_role(Role.VIEWER)
def live(rollout_id: int) -> str:
    """The live part of the rollout's page: what the page swaps in every few seconds."""
    return render_template("_rollout_live.html", **_live_context(_rollout_or_404(rollout_id)))


def _steer(
    rollout_id: int, action: str, work: Callable[[], None], wave: int | None = None
) -> Response | tuple[str, int]:
    """Do ``work`` (a rollouts.manage call) and commit; the page again with the reason
    when the rollout refuses (409: its state does not allow it)."""
    db = request_session()
    try:
        work()
        db.commit()
    except RolloutError as exc:
        db.rollback()
        status = refusal_status(exc)
        if status == 404:
            abort(404, description=sentence(str(exc)))
        detail = _rollout_or_404(rollout_id)
        return _detail_page(detail, errors={GENERAL: sentence(str(exc))}, status=status)
    flash(DONE[action].format(wave=wave), "info")
    return redirect(url_for("rollouts.detail", rollout_id=rollout_id))


@bp.post(f"/rollouts/<{ID}:rollout_id>/pause")
@requires_role(Role.ADMIN)
def pause(rollout_id: int) -> Response | tuple[str, int]:
    _rollout_or_404(rollout_id)
    return _steer(
        rollout_id,
        "pause",
        lambda: manage.pause(request_session(), rollout_id, _actor(), client_address()),
    )


@bp.get(f"/rollouts/<{ID}:rollout_id>/resume")
@requires_role(Role.ADMIN)
def resume_form(rollout_id: int) -> tuple[str, int]:
    """Resuming, asked on the page: from a halt, with the thresholds that may change."""
    return _detail_page(_rollout_or_404(rollout_id), asking="resume")


@bp.post(f"/rollouts/<{ID}:rollout_id>/resume")
@requires_role(Role.ADMIN)
def resume(rollout_id: int) -> Response | tuple[str, int]:
    detail = _rollout_or_404(rollout_id)
    sent = {name: request.form.get(name, "").strip()[:40] for name in THRESHOLD_NAMES}
    if request.form.get("confirmed") != "yes":
        return _detail_page(detail, asking="resume")
    changes: dict[str, Any] = {}
    if any(name in request.form for name in THRESHOLD_NAMES):
        changes, errors = resume_changes(sent, detail.policy)
        if errors:
            return _detail_page(
                detail, asking="resume", resume_form=sent, errors=errors, status=400
            )
    return _steer(
        rollout_id,
        "resume",
        lambda: manage.resume(
            request_session(), rollout_id, _actor(), changes or None, client_address()
        ),
    )


@bp.post(f"/rollouts/<{ID}:rollout_id>/cancel")
@requires_role(Role.ADMIN)
def cancel(rollout_id: int) -> Response | tuple[str, int]:
    detail = _rollout_or_404(rollout_id)
    if request.form.get("confirmed") != "yes":
        return _detail_page(detail, asking="cancel")
    return _steer(
        rollout_id,
        "cancel",
        lambda: manage.cancel(request_session(), rollout_id, _actor(), client_address()),
    )


@bp.post(f"/rollouts/<{ID}:rollout_id>/approve")
@requires_role(Role.ADMIN)
def approve(rollout_id: int) -> Response | tuple[str, int]:
    detail = _rollout_or_404(rollout_id)
    raw = request.form.get("wave", "")
    if not raw.isdigit() or not 0 < int(raw) <= len(detail.waves):
        return _detail_page(
            detail,
            errors={GENERAL: f"Rollout {rollout_id} has no wave {raw[:10]!r} to approve."},
            status=400,
        )
    wave = int(raw)
    if request.form.get("confirmed") != "yes":
        return _detail_page(detail, asking="approve", wave=wave)
    return _steer(
        rollout_id,
        "approve",
        lambda: manage.approve(request_session(), rollout_id, wave, _actor(), client_address()),
        wave=wave,
    )
