"""The commands a terminal can be sent: names, arguments, who may send them, and their timing.

One table for every place a command is asked for or run: the console and the REST API
check a request here before anything is queued, the MQTT request relay applies the
same role limits to a support script, and the agent validates with the same argument
models. Pure: no I/O, no Flask, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import TMSError
from shared.firmware_signature import MAX_IMAGE_BYTES, MODEL, VERSION, FirmwareManifest
from shared.models import Role

# The same order as the console's roles: each may do what the ones below it may.
_RANK = {Role.VIEWER: 0, Role.SUPPORT: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class CommandRefused(TMSError, ValueError):
    """A command that is not queued: unknown name, bad arguments, or a role that may not."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    """Commands that take no arguments refuse any."""


class FetchLogsArgs(_Args):
    lines: int = Field(default=200, ge=1, le=5000)


class TerminalConfig(_Args):
    """What ``set_config`` may change on the TC-200; unknown keys are refused."""

    display_brightness: int | None = Field(default=None, ge=0, le=100)
    beep_volume: int | None = Field(default=None, ge=0, le=100)
    timezone: str | None = Field(default=None, pattern=r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$")
    receipt_header: str | None = Field(default=None, max_length=64)

    def as_device_config(self) -> dict[str, str]:
        return {key: str(value) for key, value in self.model_dump(exclude_none=True).items()}


class ResendArgs(_Args):
    """Numbered messages to publish again (ingest.sequence): ranges of one stream."""

    stream: str = Field(pattern=r"^[0-9a-z]{1,32}$")
    ranges: list[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]] = Field(
        min_length=1, max_length=50
    )

    @model_validator(mode="after")
    def _ordered(self) -> ResendArgs:
        for first, last in self.ranges:
            if first > last:
                raise ValueError(f"range {first}-{last} ends before it starts")
        return self


class FirmwareArgs(_Args):
    """One firmware image for the agent to download, verify and install (agent/PROTOCOL.md).

    ``version``, ``models``, ``size`` and ``sha256`` are the signed manifest
    (shared.firmware_signature), ``signature`` its Ed25519 signature in base64. The agent
    fetches ``mirror_url`` first when given (without credentials), then ``url`` (the
    console's ``/agent/v1/firmware/<version>/image``, with the terminal's own login).
    ``download_only``: stop once the image is downloaded and verified (outside a store's
    maintenance window); a later command for the same version installs the kept file.
    """

    version: str = Field(pattern=f"^{VERSION.pattern}$")
    models: list[Annotated[str, Field(pattern=f"^{MODEL.pattern}$")]] = Field(
        min_length=1, max_length=32
    )
    size: int = Field(ge=1, le=MAX_IMAGE_BYTES)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(min_length=1, max_length=200)
    url: str = Field(max_length=2000)
    mirror_url: str | None = Field(default=None, max_length=2000)
    download_only: bool = False

    @field_validator("url", "mirror_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            # The agent sends its own credentials; a URL must not carry anyone's.
            raise ValueError("a URL without user:password@")
        return value

    def manifest(self) -> FirmwareManifest:
        return FirmwareManifest(
            self.version, tuple(sorted(set(self.models))), self.size, self.sha256
        )


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its arguments, the least role that may send it, and its timing.

    ``timeout_s``: with no result by then the command is sent again, up to
    ``max_attempts`` sends (the agent runs a command id once, so a repeat is safe).
    ``expires_in_s``: how long it may wait for an offline terminal by default.
    """

    name: str
    summary: str
    args: type[_Args]
    minimum_role: Role
    timeout_s: float
    max_attempts: int
    expires_in_s: float
    # Asked only by TMS itself (ingest's gap repair): offered to no role and no script.
    system: bool = False


_SPECS = (
    CommandSpec("ping", "Round trip to the agent", NoArgs, Role.SUPPORT, 15, 3, 300),
    CommandSpec(
        "diagnostics", "Checks of the agent and the TC-200", NoArgs, Role.SUPPORT, 60, 2, 3600
    ),
    CommandSpec(
        "fetch_logs", "The last lines of the agent's log", FetchLogsArgs, Role.SUPPORT, 30, 3, 3600
    ),
    CommandSpec("reboot", "Reboot the TC-200", NoArgs, Role.OPERATOR, 60, 3, 3600),
    CommandSpec("restart_agent", "Restart the store-PC agent", NoArgs, Role.OPERATOR, 60, 3, 3600),
    CommandSpec(
        "reset_usb", "Reset the USB link to the TC-200", NoArgs, Role.OPERATOR, 30, 3, 3600
    ),
    CommandSpec(
        "set_config", "Write TC-200 settings", TerminalConfig, Role.OPERATOR, 30, 3, 86_400
    ),
    # Sent by rollouts (issue 16), which take the manifest and signature from the firmware
    # library: nobody types a signature into a form. Up to a 16 MiB download, the USB
    # transfer and a reboot of up to 120 s: 15 minutes before the sender asks again (a
    # repeat of the id is answered, never installed twice).
    CommandSpec(
        "firmware",
        "Download, verify and install a firmware image",
        FirmwareArgs,
        Role.ADMIN,
        900,
        3,
        86_400,
        system=True,
    ),
    CommandSpec(
        "resend",
        "Publish numbered messages again",
        ResendArgs,
        Role.ADMIN,
        60,
        3,
        86_400,
        system=True,
    ),
)
CATALOG: Mapping[str, CommandSpec] = {spec.name: spec for spec in _SPECS}

# The longest a caller may ask a command to wait for its terminal.
MAX_EXPIRES_IN_S = 30 * 86_400


def spec_of(name: str) -> CommandSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise CommandRefused(
            f"unknown command {name!r}: choose one of {', '.join(CATALOG)}"
        ) from None


def check_args(name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments as they will be sent, or CommandRefused naming the bad one."""
    spec = spec_of(name)
    try:
        checked = spec.args.model_validate(dict(args or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "args"
        allowed = ", ".join(spec.args.model_fields) or "none"
        raise CommandRefused(
            f"{name}: bad argument {where}: {first['msg']} (allowed arguments: {allowed})"
        ) from None
    values = checked.model_dump(exclude_none=True)
    if spec.args is TerminalConfig and not values:
        raise CommandRefused(
            f"set_config needs at least one of: {', '.join(spec.args.model_fields)}"
        )
    return values


def check_expiry(name: str, expires_in_s: float | None) -> float:
    """How long the command may wait for its terminal: the caller's seconds, within
    bounds, or the command's default."""
    if expires_in_s is None:
        return spec_of(name).expires_in_s
    if not 1 <= expires_in_s <= MAX_EXPIRES_IN_S:
        raise CommandRefused(
            f"expires_in_s must be between 1 and {MAX_EXPIRES_IN_S} seconds, not {expires_in_s:g}"
        )
    return float(expires_in_s)


def _rank(role: str) -> int:
    try:
        return _RANK[Role(role)]
    except ValueError:
        return -1  # an unknown role may do nothing


def may_send(role: str, name: str) -> bool:
    """Viewers send nothing; support pings, runs diagnostics and fetches logs; operators
    and admins send every command."""
    spec = CATALOG.get(name)
    return spec is not None and not spec.system and _rank(role) >= _rank(spec.minimum_role)


def may_cancel(role: str, *, own: bool) -> bool:
    """Anyone who may send commands cancels their own; admins cancel anyone's."""
    if _rank(role) >= _RANK[Role.ADMIN]:
        return True
    return own and _rank(role) >= _RANK[Role.SUPPORT]


def check_request(role: str, name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Everything checked before a command is queued: the name, the role, the arguments."""
    spec = spec_of(name)
    if spec.system:
        raise CommandRefused(f"{name} is sent by TMS itself, not by people or scripts")
    if not may_send(role, name):
        raise CommandRefused(
            f"the {role} role may not send {name} (it needs {spec.minimum_role.value} or above)"
        )
    return check_args(name, args)
