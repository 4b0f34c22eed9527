"""Settings: a TOML file plus ``TMS_<SECTION>_<KEY>`` variables, one frozen object per component.

Precedence, lowest first: the defaults below, the TOML file (``--config`` or
``TMS_CONFIG``), then environment variables. ``config/tms.toml`` documents every key.
Secrets have no defaults: a component that needs one and does not get it refuses to
start and says which variable to set.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from shared.errors import SettingsError

Port = int  # validated by Field bounds where declared


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def default_data_dir() -> Path:
    """Root keeps system state in /var/lib; a person keeps it under XDG data home."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/tms")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tms"


class PathSettings(_Section):
    data_dir: Path = Field(default_factory=default_data_dir)


class DatabaseSettings(_Section):
    # Empty: `tms up` runs its own PostgreSQL cluster in the data directory.
    url: SecretStr | None = None
    port: int = Field(default=5433, ge=1, le=65535)


class MqttClientSettings(_Section):
    """How one service reaches the broker; each service has its own account."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls_ca: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)


class BrokerSettings(_Section):
    kind: Literal["mosquitto", "amqtt"] = "mosquitto"
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    mosquitto_binary: str = "mosquitto"


class IngestSettings(_Section):
    mqtt: MqttClientSettings = MqttClientSettings()
    client_id: str = "tms-ingest"
    batch_max: int = Field(default=5000, ge=1, le=100_000)
    batch_interval_ms: int = Field(default=100, ge=1, le=60_000)
    queue_max: int = Field(default=50_000, ge=100)
    # Longest wait between attempts to reach the broker or PostgreSQL again.
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    # How often the daemon logs its one-line summary of counters.
    summary_interval_s: float = Field(default=60.0, gt=0)


class ConsoleSettings(_Section):
    mqtt: MqttClientSettings = MqttClientSettings()
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    secret_key: SecretStr | None = None
    refresh_s: int = Field(default=5, ge=1, le=3600)
    # Sign-in lasts this long without activity, then the user signs in again.
    session_lifetime_min: int = Field(default=720, ge=5, le=43_200)
    # True when the console is served over HTTPS (e.g. behind a TLS proxy).
    cookie_secure: bool = False
    # Worker threads of the waitress server: concurrent requests in flight.
    threads: int = Field(default=8, ge=1, le=64)


class AgentSettings(_Section):
    mqtt: MqttClientSettings = MqttClientSettings()
    serial: str | None = None
    heartbeat_interval_s: float = Field(default=300.0, gt=0)
    queue_path: Path | None = None
    # How often the device is read to notice a change of status between heartbeats.
    status_poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # Telemetry kept in memory while the broker is unreachable; the oldest is dropped.
    outbox_max: int = Field(default=1000, ge=1, le=1_000_000)
    # Upper bound of the reconnect delay (exponential backoff with full jitter).
    reconnect_max_s: float = Field(default=60.0, ge=1, le=3600)


class SimulateSettings(_Section):
    terminals: int = Field(default=10, ge=0, le=100_000)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    customer: str = "Demo Retail"
    # Faults (error or unplugged) per simulated terminal per second; 0 disables them.
    fault_rate: float = Field(default=0.0, ge=0, le=1)
    # Connects are spread evenly over this many seconds so a large fleet does not stampede.
    connect_spread_s: float = Field(default=2.0, ge=0, le=600)


class Settings(_Section):
    """Everything, loaded once at start-up; each component takes only its own section."""

    paths: PathSettings = PathSettings()
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    ingest: IngestSettings = IngestSettings()
    console: ConsoleSettings = ConsoleSettings()
    agent: AgentSettings = AgentSettings()
    simulate: SimulateSettings = SimulateSettings()


ENV_PREFIX = "TMS_"


def _env_overrides(model: type[BaseModel], env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """Collect ``TMS_SECTION_KEY`` (and ``TMS_SECTION_MQTT_KEY``) values for one model."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = _env_overrides(annotation, env, key + "_")
            if nested:
                found[name] = nested
        elif key in env:
            found[name] = env[key]
    return found


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | str | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from an optional TOML file and the environment."""
    env = os.environ if env is None else env
    if config_file is None and env.get("TMS_CONFIG"):
        config_file = env["TMS_CONFIG"]
    raw: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"configuration file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from exc
    overrides: dict[str, Any] = {}
    if "TMS_DATA_DIR" in env:
        overrides["paths"] = {"data_dir": env["TMS_DATA_DIR"]}
    for section, field in Settings.model_fields.items():
        assert isinstance(field.annotation, type)
        found = _env_overrides(field.annotation, env, f"{ENV_PREFIX}{section.upper()}_")
        if found:
            overrides = _merge(overrides, {section: found})
    try:
        return Settings.model_validate(_merge(raw, overrides))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        where = f"[{'.'.join(loc[:-1])}] {loc[-1]}" if len(loc) > 1 else loc[0]
        env_name = ENV_PREFIX + "_".join(loc).upper()
        raise SettingsError(
            f"bad setting {where} (environment variable {env_name}): {first['msg']}"
        ) from None
