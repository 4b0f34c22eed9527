"""The alert rules, storm limits and notification routes, read from ``config/alerts.toml``.

One frozen, validated object built at start-up. Without a file the built-in defaults
apply; ``config/alerts.toml`` repeats them with comments (a unit test keeps the two
equal). Webhook secrets are never in the file: a route names the environment
variable that holds its secret, and loading fails if that variable is missing.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ingest.errors import IngestConfigError

KIND_OFFLINE = "offline"
KIND_ERROR = "error"
KIND_PC_OFFLINE = "pc-offline"
METRICS = ("cpu_pct", "memory_pct", "disk_pct", "host_cpu_pct", "host_memory_pct", "host_disk_pct")


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StatusRule(_Config):
    """An alert while a terminal is offline (or in error): opens after ``for_s``, and
    resolves after it has been back for ``clear_for_s`` (so a flapping link is one alert
    whose count grows, not a stream of new ones)."""

    kind: Literal["offline", "error"]
    severity: Severity
    for_s: float = Field(default=0.0, ge=0)
    clear_for_s: float = Field(default=60.0, ge=0)


class MetricRule(_Config):
    """``metric`` above ``above`` for ``for_s`` opens; at or below ``clear_below`` for
    ``clear_for_s`` resolves. Between the two lines nothing changes (hysteresis)."""

    kind: str = Field(min_length=1, max_length=32)
    metric: Literal[
        "cpu_pct", "memory_pct", "disk_pct", "host_cpu_pct", "host_memory_pct", "host_disk_pct"
    ]
    above: float
    clear_below: float
    for_s: float = Field(default=0.0, ge=0)
    clear_for_s: float = Field(default=0.0, ge=0)
    severity: Severity = Severity.WARNING

    @model_validator(mode="after")
    def _band(self) -> MetricRule:
        if self.clear_below > self.above:
            raise ValueError(f"rule {self.kind}: clear_below must not be above 'above'")
        return self


class EventRule(_Config):
    """An agent event of ``event_kind`` at ``min_severity`` or worse opens; the same kind at
    a lower severity (e.g. the next update succeeded) resolves."""

    kind: str = Field(min_length=1, max_length=32)
    event_kind: str
    min_event_severity: Literal["warning", "error", "critical"] = "error"
    severity: Severity = Severity.MAJOR


class HostRule(_Config):
    """All terminals of one store PC offline together: one alert for the PC."""

    severity: Severity = Severity.CRITICAL
    min_terminals: int = Field(default=2, ge=2)
    # A terminal of a multi-terminal PC waits this long for its siblings before it
    # alerts on its own (their last wills arrive a keepalive apart at worst).
    group_wait_s: float = Field(default=5.0, ge=0)


class HeartbeatDefaults(_Config):
    interval_s: float = Field(default=300.0, gt=0)
    missed: int = Field(default=3, ge=1)


class StormRule(_Config):
    """More than ``max_alerts_per_minute`` new alerts within ``window_s`` open an incident
    that groups the alerts after them; it is notified when it opens, every
    ``summary_interval_s`` while it grows, and when it closes (see ``ingest.alerts.storm``)."""

    max_alerts_per_minute: int = Field(default=20, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    # The opening notification waits this long so that its first count is meaningful.
    settle_s: float = Field(default=30.0, ge=0)
    # While alerts keep joining, a summary of what joined goes out this often.
    summary_interval_s: float = Field(default=300.0, gt=0)
    # An incident closes after this long without a new alert...
    quiet_s: float = Field(default=300.0, gt=0)
    # ...or at this age, so that a storm that never ends is still told in bounded
    # pieces: if it goes on, the next alerts open a new incident.
    max_duration_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _lengths(self) -> StormRule:
        if self.max_duration_s <= self.settle_s:
            raise ValueError("max_duration_s must be longer than settle_s")
        return self


class Route(_Config):
    name: str = Field(min_length=1, max_length=64)
    customer: str | None = None  # None: every customer
    min_severity: Severity = Severity.WARNING
    email: list[str] = []
    webhook: str | None = Field(default=None, pattern=r"^https?://")
    secret_env: str | None = None
    # Also receives storm incidents (which span customers); false: each alert alone, always.
    incidents: bool = True

    @model_validator(mode="after")
    def _target(self) -> Route:
        if not self.email and self.webhook is None:
            raise ValueError(f"route {self.name}: give email addresses or a webhook URL")
        if self.webhook is not None and not self.secret_env:
            raise ValueError(f"route {self.name}: a webhook needs secret_env (its HMAC key)")
        return self

    def accepts(self, severity: Severity, customer: str | None) -> bool:
        if severity.rank < self.min_severity.rank:
            return False
        return self.customer is None or self.customer == customer


class AlertConfig(_Config):
    heartbeat: HeartbeatDefaults = HeartbeatDefaults()
    storm: StormRule = StormRule()
    host: HostRule = HostRule()
    status_rules: list[StatusRule] = Field(default=[], alias="status")
    metric_rules: list[MetricRule] = Field(default=[], alias="metric")
    event_rules: list[EventRule] = Field(default=[], alias="event")
    routes: list[Route] = Field(default=[], alias="route")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def status_rule(self, kind: str) -> StatusRule | None:
        return next((rule for rule in self.status_rules if rule.kind == kind), None)

    def route(self, name: str) -> Route | None:
        return next((route for route in self.routes if route.name == name), None)


DEFAULT_RULES: dict[str, Any] = {
    "status": [
        {"kind": "offline", "severity": "critical", "for_s": 0, "clear_for_s": 60},
        {"kind": "error", "severity": "major", "for_s": 0, "clear_for_s": 60},
    ],
    "metric": [
        {
            "kind": "high-cpu",
            "metric": "cpu_pct",
            "above": 90,
            "clear_below": 80,
            "for_s": 600,
            "clear_for_s": 300,
            "severity": "warning",
        },
        {
            "kind": "high-memory",
            "metric": "memory_pct",
            "above": 90,
            "clear_below": 80,
            "for_s": 600,
            "clear_for_s": 300,
            "severity": "warning",
        },
        {
            "kind": "high-disk",
            "metric": "disk_pct",
            "above": 90,
            "clear_below": 85,
            "for_s": 0,
            "clear_for_s": 0,
            "severity": "major",
        },
    ],
    "event": [
        {
            "kind": "update-failed",
            "event_kind": "update",
            "min_event_severity": "error",
            "severity": "major",
        },
    ],
}


def parse_alert_config(raw: Mapping[str, Any], env: Mapping[str, str]) -> AlertConfig:
    try:
        config = AlertConfig.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise IngestConfigError(f"bad alert rules at {where}: {first['msg']}") from None
    kinds: list[str] = [rule.kind for rule in config.status_rules]
    kinds += [rule.kind for rule in config.metric_rules]
    kinds += [rule.kind for rule in config.event_rules]
    duplicates = sorted({kind for kind in kinds if kinds.count(kind) > 1})
    if duplicates:
        raise IngestConfigError(f"alert rule kinds must be unique; repeated: {duplicates}")
    for route in config.routes:
        if route.secret_env and not env.get(route.secret_env):
            raise IngestConfigError(
                f"route {route.name!r} signs its webhook with ${route.secret_env}, which is not"
                " set: export it (a long random value shared with the receiver)"
            )
    return config


def load_alert_config(path: Path | None, env: Mapping[str, str] | None = None) -> AlertConfig:
    """The rules in ``path``, or the built-in defaults when it is None."""
    env = os.environ if env is None else env
    if path is None:
        return parse_alert_config(DEFAULT_RULES, env)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IngestConfigError(f"alert rules file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise IngestConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_alert_config(raw, env)
