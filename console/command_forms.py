"""Command forms and their wording, as pure functions: the console's form fields from the
catalogue's argument models, form values back to checked arguments, and the one-line
results of the history table. No Flask and no database: tested alone.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

from pydantic import ValidationError

from commands.queue import CommandView, Target
from console import fleet
from console.access import ConsoleUser
from console.formatting import diagnostics_report, diagnostics_summary, log_text, milliseconds
from shared.command_catalog import CATALOG, CommandSpec, TerminalConfig, may_cancel, may_send

# Commands that stop a till for a while: the page asks before it sends them.
CONFIRM = {
    "reboot": "Reboot the TC-200 of {serial}? It takes no payments until it is back.",
    "restart_agent": "Restart the store-PC agent of {serial}? It is offline for a few seconds.",
    "reset_usb": "Reset the USB link of {serial}? A payment in progress on it is interrupted.",
}
TITLES = {
    "ping": "Ping",
    "diagnostics": "Diagnostics",
    "fetch_logs": "Fetch logs",
    "reboot": "Reboot terminal",
    "restart_agent": "Restart agent",
    "reset_usb": "Reset USB link",
    "set_config": "Set configuration",
}
# The button says what it does; "…" where the page asks before sending.
BUTTONS = {
    "ping": "Ping",
    "diagnostics": "Run",
    "fetch_logs": "Fetch",
    "reboot": "Reboot…",
    "restart_agent": "Restart…",
    "reset_usb": "Reset…",
    "set_config": "Write settings",
}
LABELS = {
    "lines": "Lines",
    "display_brightness": "Display brightness",
    "beep_volume": "Beep volume",
    "timezone": "Time zone",
    "receipt_header": "Receipt header",
}


# -- arguments from a form -------------------------------------------------------------


@dataclass(frozen=True)
class ArgField:
    """One input of a command's form, derived from the catalogue's argument model."""

    name: str
    label: str
    kind: str  # number | text
    required: bool
    default: Any
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    pattern: str | None = None


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return int in get_args(annotation)
    return False


def arg_fields(name: str) -> list[ArgField]:
    fields = []
    for arg, info in CATALOG[name].args.model_fields.items():
        limits: dict[str, Any] = {}
        for rule in info.metadata:
            for attr, key in (
                ("ge", "minimum"),
                ("le", "maximum"),
                ("max_length", "max_length"),
                ("pattern", "pattern"),
            ):
                if getattr(rule, attr, None) is not None:
                    limits[key] = getattr(rule, attr)
        fields.append(
            ArgField(
                name=arg,
                label=LABELS.get(arg, arg.replace("_", " ").capitalize()),
                kind="number" if _is_int(info.annotation) else "text",
                required=info.is_required(),
                default=info.default if info.default is not None else "",
                **limits,
            )
        )
    return fields


class ArgsError(ValueError):
    """A form field the command cannot take; ``field`` is None for the form as a whole."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


def args_from_form(name: str, form: Mapping[str, str]) -> dict[str, Any]:
    """The command's arguments from ``arg_<name>`` fields; blank fields are left out."""
    raw: dict[str, Any] = {}
    for arg in arg_fields(name):
        value = form.get(f"arg_{arg.name}", "").strip()
        if not value:
            continue
        if arg.kind == "number":
            try:
                raw[arg.name] = int(value)
            except ValueError:
                raise ArgsError(arg.name, f"{arg.label} must be a whole number") from None
        else:
            raw[arg.name] = value
    spec = CATALOG[name]
    try:
        checked = spec.args.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first["loc"] else None
        label = LABELS.get(where or "", where or "The form")
        raise ArgsError(where, f"{label}: {first['msg']}") from None
    values = checked.model_dump(exclude_none=True)
    if spec.args is TerminalConfig and not values:
        raise ArgsError(None, "Fill in at least one setting to write.")
    return values


@dataclass(frozen=True)
class CommandForm:
    """A command form sent back to the page: what was typed, and what is wrong with it."""

    name: str
    values: Mapping[str, str] = field(default_factory=dict)
    field: str | None = None
    error: str | None = None


# -- what templates ask ------------------------------------------------------------------


def commands_for(user: ConsoleUser) -> list[CommandSpec]:
    return [spec for spec in CATALOG.values() if may_send(user.role, spec.name)]


def may_cancel_command(user: ConsoleUser, command: CommandView) -> bool:
    return command.state == "queued" and may_cancel(
        user.role, own=command.requested_by == user.username
    )


def command_title(name: str) -> str:
    return TITLES.get(name, name)


def command_button(name: str) -> str:
    return BUTTONS.get(name, "Send")


def result_line(command: CommandView) -> str:
    """The result in one line for the history table; the command's page has it all."""
    if command.error and command.state != "succeeded":
        return command.error
    if command.state == "queued":
        return "waiting to go out"
    if command.state == "sent":
        return "waiting for the agent's answer"
    if command.state != "succeeded":
        return ""
    # Whatever JSON the agent sent: only an object has the fields read below.
    output = command.result if isinstance(command.result, dict) else {}
    if command.name == "ping" and command.round_trip_ms is not None:
        return f"round trip {milliseconds(command.round_trip_ms)}"
    if command.name == "diagnostics":
        report = diagnostics_report(output)
        return diagnostics_summary(report) if report else "report in an older format"
    if command.name == "fetch_logs":
        text = log_text(output)
        count = len(text.splitlines()) if text else 0
        return f"{count} log line{'s' if count != 1 else ''}"
    if command.name == "set_config" and isinstance(output.get("written"), dict):
        return "written: " + ", ".join(f"{k}={v}" for k, v in output["written"].items())
    return "done"


def args_line(args: Any) -> str:
    """The arguments in words; arguments that are not an object (a row written past the
    queue's checks) as their JSON."""
    if not isinstance(args, Mapping):
        return "" if args is None else json.dumps(args, ensure_ascii=False)
    return ", ".join(
        f"{LABELS.get(str(key), str(key)).lower()} {value}" for key, value in args.items()
    )


def bulk_summary(wanted: fleet.TerminalFilter, count: int) -> str:
    return f"{wanted.describe()}: {count} terminal{'s' if count != 1 else ''}"


def last_departure_s(targets: Sequence[Target], rate_per_s: float) -> float:
    """When the last command of a bulk may go out: the biggest customer sets the pace."""
    per_customer: dict[int, int] = {}
    for target in targets:
        per_customer[target.customer_id] = per_customer.get(target.customer_id, 0) + 1
    return (max(per_customer.values(), default=1) - 1) / rate_per_s
