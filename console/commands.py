"""Remote commands in the console: send from a terminal's page, cancel, follow, read results.

A form post becomes checked arguments (``console.command_forms``): a bad field is shown on
the page next to its input, never a 500. Who may send or cancel what is the
catalogue's rule (``may_send`` / ``may_cancel``); the queue applies it again and audits.
A bulk command (one command for the terminals of a list filter) shows its count and
asks before anything is queued. The REST API is ``console.api_commands``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlmodel import Session
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from commands import queue
from commands.queue import CommandConflict, CommandNotFound, CommandView, Requester, Target
from console import fleet
from console.access import (
    ConsoleUser,
    acting_user,
    api_token_name,
    client_address,
    is_api_request,
    requires_role,
)
from console.command_forms import (
    CONFIRM,
    ArgsError,
    CommandForm,
    arg_fields,
    args_from_form,
    args_line,
    bulk_summary,
    command_button,
    command_title,
    commands_for,
    last_departure_s,
    may_cancel_command,
    result_line,
)
from console.db import request_session
from console.formatting import (
    checks_by_attention,
    diagnostics_report,
    diagnostics_summary,
    log_text,
)
from console.terminals import ListQuery, render_detail
from shared.command_catalog import CATALOG, may_cancel, may_send
from shared.models import Role, TerminalStatus

bp = Blueprint("commands", __name__)

HISTORY_LIMIT = 20
SAMPLE = 8  # serials named on a bulk's confirmation
PROBLEMS = 50  # a bulk's failed terminals listed on its progress page
LOG_LIMIT = 50


def acting_requester() -> Requester:
    """Who asks, as the queue records it: the signed-in user, or an API token's owner."""
    user = acting_user()
    assert user is not None  # requires_role let the request through
    if is_api_request():
        return Requester(
            user.username, user.role, "token", user.id, api_token_name(), client_address()
        )
    return Requester(user.username, user.role, "user", user.id, None, client_address())


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(
        command_title=command_title,
        command_button=command_button,
        result_line=result_line,
        args_line=args_line,
        commands_for=commands_for,
        may_cancel_command=may_cancel_command,
        arg_fields=arg_fields,
        command_confirm=CONFIRM,
    )


# -- bulk selection (shared with the API) ------------------------------------------------


def selected_targets(session: Session, wanted: fleet.TerminalFilter) -> list[Target]:
    """The terminals a bulk command for ``wanted`` goes to (decommissioned ones left out)."""
    return queue.bulk_targets(session, fleet.terminal_ids(session, wanted))


# -- one terminal --------------------------------------------------------------------------


def _user() -> ConsoleUser:
    user = acting_user()
    assert user is not None
    return user


@bp.post("/terminals/<serial>/commands")
@requires_role(Role.VIEWER)
def send(serial: str) -> Response | tuple[str, int]:
    name = request.form.get("name", "")
    if name not in CATALOG:
        abort(400, description=f"There is no command {name[:64]!r}.")
    if not may_send(_user().role, name):
        abort(403, description=f"Your role may not send {name}.")
    if fleet.get_terminal(request_session(), serial) is None:
        abort(404, description=f"There is no terminal with serial {serial}.")
    values = {key: value[:200] for key, value in request.form.items() if key.startswith("arg_")}
    try:
        args = args_from_form(name, request.form)
    except ArgsError as exc:
        form = CommandForm(name, values, exc.field, str(exc))
        return render_detail(serial, command_form_state=form), 400
    if name in CONFIRM and request.form.get("confirmed") != "yes":
        # Without the page's script nothing asked yet: ask on a page of its own.
        question = CONFIRM[name].format(serial=serial)
        return render_template(
            "command_confirm.html", serial=serial, spec=CATALOG[name], question=question
        ), 200
    try:
        view = queue.queue_command(request_session(), acting_requester(), serial, name, args)
    except queue.CommandRefused as exc:
        request_session().rollback()
        flash(str(exc), "error")
        return redirect(url_for("terminals.detail", serial=serial, _anchor="commands"))
    flash(f"{command_title(name)} queued for {serial}.", "info")
    return redirect(url_for("terminals.detail", serial=serial, _anchor=f"command-{view.id}"))


@bp.get("/terminals/<serial>/activity")
@requires_role(Role.VIEWER)
def activity(serial: str) -> str:
    """The command history and the terminal log alone: what the page swaps in."""
    db = request_session()
    if fleet.get_terminal(db, serial) is None:
        abort(404, description=f"There is no terminal with serial {serial}.")
    return render_template(
        "_terminal_activity.html",
        serial=serial,
        commands=queue.list_commands(db, serial, limit=HISTORY_LIMIT),
        log=fleet.terminal_log(db, serial, limit=LOG_LIMIT),
    )


def _command_or_404(command_id: str) -> CommandView:
    view = None
    if 0 < len(command_id) <= 64 and "\x00" not in command_id:
        view = queue.get_command(request_session(), command_id)
    if view is None:
        abort(404, description=f"There is no command {command_id[:64]}.")
    return view


@bp.get("/commands/<command_id>")
@requires_role(Role.VIEWER)
def detail(command_id: str) -> str:
    view = _command_or_404(command_id)
    report = diagnostics_report(view.result) if view.name == "diagnostics" else None
    return render_template(
        "command.html",
        command=view,
        spec=CATALOG.get(view.name),
        report=report,
        report_summary=diagnostics_summary(report) if report else None,
        checks=checks_by_attention(report) if report else [],
        first_failure=report.first_failure if report else None,
        log_output=log_text(view.result) if view.name == "fetch_logs" else None,
    )


@bp.post("/commands/<command_id>/cancel")
@requires_role(Role.VIEWER)
def cancel(command_id: str) -> Response:
    view = _command_or_404(command_id)
    try:
        queue.cancel_command(request_session(), acting_requester(), command_id)
    except queue.CommandRefused as exc:
        abort(403, description=str(exc))
    except CommandNotFound as exc:
        abort(404, description=str(exc))
    except CommandConflict as exc:
        flash(str(exc), "error")
    else:
        flash(f"{view.name} cancelled.", "info")
    if request.form.get("back") == "command":
        return redirect(url_for("commands.detail", command_id=command_id))
    return redirect(url_for("terminals.detail", serial=view.serial, _anchor="command-history"))


# -- bulk: one command for the terminals of a list filter --------------------------------


def selection_of(values: MultiDict[str, str]) -> fleet.TerminalFilter:
    """The terminals list's selection: its filters, or the rows ticked in it."""
    return ListQuery.parse(values).filter


def selection_args(wanted: fleet.TerminalFilter) -> dict[str, Any]:
    """The selection as query-string or hidden-field values (the list's names)."""
    status = "maintenance" if wanted.maintenance else wanted.status
    values: dict[str, Any] = {
        "status": status,
        "customer": wanted.customer,
        "q": wanted.search,
        "store": wanted.store,
        "firmware": wanted.firmware,
        "model": wanted.model,
        "serial": list(wanted.serials),
        "tag": ",".join(wanted.tags),
    }
    return {key: value for key, value in values.items() if value}


@dataclass(frozen=True)
class BulkForm:
    """A bulk command as the form has it: the command, its arguments and the rate."""

    name: str = ""
    values: Mapping[str, str] = field(default_factory=dict)
    rate: str = str(queue.DEFAULT_RATE_PER_S)
    field: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CheckedBulk:
    name: str
    args: dict[str, Any]
    rate_per_s: float


def _check_bulk(user: ConsoleUser, form: BulkForm) -> CheckedBulk:
    if form.name not in CATALOG:
        raise ArgsError("name", "Choose a command.")
    if not may_send(user.role, form.name):
        abort(403, description=f"Your role may not send {form.name}.")
    args = args_from_form(form.name, form.values)
    try:
        rate = float(form.rate)
        rate = queue.check_rate(rate)
    except ValueError as exc:  # CommandRefused is a ValueError too
        message = str(exc) if isinstance(exc, queue.CommandRefused) else "a number is needed"
        raise ArgsError("rate", f"Rate: {message}") from None
    return CheckedBulk(form.name, args, rate)


def _bulk_form() -> BulkForm:
    return BulkForm(
        name=request.form.get("name", "")[:64],
        values={key: value[:200] for key, value in request.form.items() if key.startswith("arg_")},
        rate=request.form.get("rate", "").strip()[:20] or str(queue.DEFAULT_RATE_PER_S),
    )


def _bulk_page(
    step: str, wanted: fleet.TerminalFilter, form: BulkForm, **extra: Any
) -> tuple[str, int]:
    user = _user()
    targets = selected_targets(request_session(), wanted)
    status = 400 if form.error else 200
    return render_template(
        "bulk_new.html",
        step=step,
        selection=wanted,
        selection_fields=selection_args(wanted),
        count=len(targets),
        targets=targets,
        form=form,
        allowed=commands_for(user),
        recent=queue.list_bulks(request_session(), limit=10) if step == "choose" else [],
        **extra,
    ), status


def _may_send_any() -> ConsoleUser:
    user = _user()
    if not commands_for(user):
        abort(403, description="Your role may not send commands.")
    return user


@bp.get("/commands/bulk/new")
@requires_role(Role.VIEWER)
def bulk_new() -> tuple[str, int]:
    _may_send_any()
    form = BulkForm(
        name=request.args.get("name", "")[:64],
        values={key: value[:200] for key, value in request.args.items() if key.startswith("arg_")},
        rate=request.args.get("rate", "")[:20] or str(queue.DEFAULT_RATE_PER_S),
    )
    return _bulk_page("choose", selection_of(request.args), form)


@bp.post("/commands/bulk/review")
@requires_role(Role.VIEWER)
def bulk_review() -> tuple[str, int]:
    user = _may_send_any()
    wanted = selection_of(request.form)
    form = _bulk_form()
    try:
        checked = _check_bulk(user, form)
    except ArgsError as exc:
        return _bulk_page("choose", wanted, replace_error(form, exc))
    return _bulk_confirm(wanted, form, checked)


def replace_error(form: BulkForm, exc: ArgsError) -> BulkForm:
    return BulkForm(form.name, form.values, form.rate, exc.field, str(exc))


def _sample(wanted: fleet.TerminalFilter) -> list[str]:
    """A few of the selected serials, named on the confirmation (live terminals only)."""
    listed = fleet.list_terminals(request_session(), wanted, limit=SAMPLE * 4)
    return [t.serial for t in listed if t.status != TerminalStatus.DECOMMISSIONED][:SAMPLE]


def _bulk_confirm(
    wanted: fleet.TerminalFilter, form: BulkForm, checked: CheckedBulk, changed_from: int = -1
) -> tuple[str, int]:
    targets = selected_targets(request_session(), wanted)
    return _bulk_page(
        "confirm",
        wanted,
        form,
        checked=checked,
        spec=CATALOG[checked.name],
        last_departure_s=last_departure_s(targets, checked.rate_per_s),
        customers=len({target.customer_id for target in targets}),
        sample=_sample(wanted),
        change_args=selection_args(wanted)
        | dict(form.values)
        | {"name": checked.name, "rate": f"{checked.rate_per_s:g}"},
        changed_from=changed_from,
    )


@bp.post("/commands/bulk")
@requires_role(Role.VIEWER)
def bulk_send() -> Response | tuple[str, int]:
    user = _may_send_any()
    wanted = selection_of(request.form)
    form = _bulk_form()
    try:
        checked = _check_bulk(user, form)
    except ArgsError as exc:
        return _bulk_page("choose", wanted, replace_error(form, exc))
    db = request_session()
    targets = selected_targets(db, wanted)
    expected = request.form.get("expected", "")
    if expected != str(len(targets)):
        # The fleet changed since the count was shown: confirm the new count.
        shown = int(expected) if expected.isdigit() else -1
        return _bulk_confirm(wanted, form, checked, changed_from=shown)
    try:
        view = queue.queue_bulk(
            db,
            acting_requester(),
            checked.name,
            checked.args,
            targets,
            rate_per_s=checked.rate_per_s,
            selection=wanted.to_json(),
            summary=bulk_summary(wanted, len(targets)),
        )
    except queue.CommandRefused as exc:
        db.rollback()
        return _bulk_page("choose", wanted, replace_error(form, ArgsError(None, str(exc))))
    return redirect(url_for("commands.bulk_progress", bulk_id=view.id))


def _bulk_or_404(bulk_id: int) -> queue.BulkView:
    view = queue.get_bulk(request_session(), bulk_id)
    if view is None:
        abort(404, description=f"There is no bulk command {bulk_id}.")
    return view


def _bulk_context(view: queue.BulkView) -> dict[str, Any]:
    user = _user()
    return {
        "bulk": view,
        "spec": CATALOG.get(view.name),
        "problems": fleet.bulk_problems(request_session(), view.id, limit=PROBLEMS),
        "may_cancel_bulk": view.counts.get("queued", 0) > 0
        and may_cancel(user.role, own=view.requested_by == user.username),
    }


@bp.get("/commands/bulk/<int(max=2147483647):bulk_id>")
@requires_role(Role.VIEWER)
def bulk_progress(bulk_id: int) -> str:
    return render_template("bulk.html", **_bulk_context(_bulk_or_404(bulk_id)))


@bp.get("/commands/bulk/<int(max=2147483647):bulk_id>/progress")
@requires_role(Role.VIEWER)
def bulk_progress_partial(bulk_id: int) -> str:
    return render_template("_bulk_progress.html", **_bulk_context(_bulk_or_404(bulk_id)))


@bp.post("/commands/bulk/<int(max=2147483647):bulk_id>/cancel")
@requires_role(Role.VIEWER)
def bulk_cancel(bulk_id: int) -> Response:
    try:
        view = queue.cancel_bulk(request_session(), acting_requester(), bulk_id)
    except queue.CommandRefused as exc:
        abort(403, description=str(exc))
    except CommandNotFound as exc:
        abort(404, description=str(exc))
    flash(f"Bulk {view.name} stopped: its queued commands are cancelled.", "info")
    return redirect(url_for("commands.bulk_progress", bulk_id=bulk_id))
