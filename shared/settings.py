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
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

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

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Servers run with another working directory (PostgreSQL from /): a relative
        # path must mean what it meant where the command was typed.
        return value.expanduser().absolute()


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


class BridgeSettings(_Section):
    """A regional Mosquitto's bridge to the core broker (Mosquitto's own bridge, TLS).

    Terminals log in to the regional broker with their own credentials, checked against
    the same database and ACL as on the core; the bridge relays their messages to the
    core, where ingest reads them, and their commands back (docs/scaling.md).
    """

    # host:port of the core broker's TLS listener; empty: this broker bridges nowhere.
    address: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")
    # The CA certificate the core's listener is signed with (its <data-dir>/certs/ca.pem).
    cafile: Path | None = None
    # A bridge account on the core: `tms account add NAME --role bridge`.
    username: str | None = None
    password: SecretStr | None = None
    # The connection's name in Mosquitto's log and $SYS tree.
    name: str = Field(default="core", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    keepalive_s: int = Field(default=60, ge=5, le=3600)

    @model_validator(mode="after")
    def _complete(self) -> BridgeSettings:
        if self.address is not None:
            if not 1 <= int(self.address.rsplit(":", 1)[1]) <= 65535:
                raise ValueError(f"the bridge address {self.address} has no valid port")
            missing = [n for n in ("cafile", "username", "password") if getattr(self, n) is None]
            if missing:
                raise ValueError(
                    f"a bridge to {self.address} needs {', '.join(missing)} too: the bridge "
                    "always uses TLS and logs in with a bridge account"
                )
        return self


class BrokerSettings(_Section):
    kind: Literal["mosquitto", "amqtt"] = "mosquitto"
    # The plain listener: loopback development and same-host services only.
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    mosquitto_binary: str = "mosquitto"
    # The TLS listener terminals use; opened when `tms certs init` has made certificates.
    tls_host: str = "0.0.0.0"
    tls_port: int = Field(default=8883, ge=1, le=65535)
    # Default: <data_dir>/certs, where `tms certs init` writes.
    certs_dir: Path | None = None
    # Brute-force defence, per client id and per source address (amqtt: the auth plugin;
    # Mosquitto: the tms_auth plugin). Past delay_after failures within login_window_s a
    # key waits login_delay_step_s (doubling per failure on Mosquitto, linear on amqtt,
    # at most login_delay_max_s); past login_lockout_after it is refused login_lockout_s.
    login_delay_after: int = Field(default=5, ge=1)
    login_lockout_after: int = Field(default=10, ge=2)
    login_lockout_s: int = Field(default=300, ge=1)
    login_window_s: int = Field(default=60, ge=1, le=86_400)
    login_delay_step_s: float = Field(default=0.5, ge=0.001, le=60)
    login_delay_max_s: float = Field(default=5.0, ge=0.001, le=600)
    # Where `tms broker` compiles the Mosquitto plugin (default: <data-dir>/broker/plugin).
    mosquitto_plugin_dir: Path | None = None
    # Messages Mosquitto keeps per session beyond those in flight (~0.5 KB each); past
    # it a session's new messages are dropped. For ingest, it is the longest outage
    # ridden out: 1,000,000 is 100 s of 10,000 msg/s, ~50 min of 10,000 terminals
    # beating every 30 s (docs/ingest.md). 0: no limit but the broker's memory.
    max_queued_messages: int = Field(default=1_000_000, ge=0)
    # The largest MQTT packet Mosquitto takes: a message's 64 KiB payload limit
    # (shared.messages.MAX_PAYLOAD_BYTES) plus its topic and headers. A bigger publish
    # disconnects its client before the broker buffers it (a 100 MB publish was stored
    # whole). EMQX: mqtt.max_packet_size in deploy/emqx.
    max_packet_bytes: int = Field(default=69_632, ge=1024, le=268_435_455)
    # Mosquitto writes its persistence file (sessions, queues, retained) every this many
    # seconds, not only at a clean exit: a SIGKILL loses at most this much, and ingest's
    # session survives a crash soon after it was made. Each save writes the whole file.
    autosave_s: int = Field(default=2, ge=1, le=86_400)
    # Set on a regional broker only (Mosquitto): its bridge to the core broker.
    bridge: BridgeSettings = BridgeSettings()


class IngestSettings(_Section):
    mqtt: MqttClientSettings = MqttClientSettings()
    client_id: str = "tms-ingest"
    # Well under the broker's max_inflight_messages (20,000): the next batch is read
    # while one commits, since nothing is acknowledged before its commit.
    batch_max: int = Field(default=2000, ge=1, le=100_000)
    batch_interval_ms: int = Field(default=100, ge=1, le=60_000)
    # Longest wait between attempts to reach the broker or PostgreSQL again.
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    # How often the daemon logs its one-line summary of counters.
    summary_interval_s: float = Field(default=60.0, gt=0)
    # Opt-in: subscribe as $share/<group>/... so several ingest processes (each with its
    # own client_id) split the load. Off by default: on Mosquitto 2.0.11 the acl_file
    # does not check subscriptions, so any terminal could join the group (docs/ingest.md).
    shared_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # Processes `tms ingest` runs on one shared subscription (group shared_group, or
    # "ingest"): one process decodes on one core (ingest/workers.py, docs/ingest.md).
    workers: int = Field(default=1, ge=1, le=64)
    # Reading from the broker pauses while this many received messages wait for the
    # writer (~1.5 KB each decoded), and resumes below half: a resumed session's
    # backlog then waits at the broker, not in ingest's memory.
    max_pending: int = Field(default=50_000, ge=100, le=10_000_000)
    # Telemetry newer than the receive time by more than this is dead-lettered.
    max_future_s: float = Field(default=300.0, gt=0)
    # /metrics (Prometheus) and /healthz; port 0 switches the endpoint off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    # History: raw telemetry kept this long (monthly partitions), hourly rollups longer.
    retention_days: int = Field(default=365, ge=1)
    rollup_retention_days: int = Field(default=1825, ge=1)
    partitions_ahead_months: int = Field(default=3, ge=1, le=24)
    # How often the retention job runs inside ingest (apscheduler), hours.
    retention_interval_h: float = Field(default=24.0, gt=0)
    # Width of the fleet samples (terminals per status and customer) behind the
    # dashboard's uptime and online charts, seconds.
    fleet_sample_interval_s: int = Field(default=300, ge=10, le=3600)
    # How often the fleet report's uptime for the month is worked out (a second of
    # PostgreSQL at 100,000 terminals); the console works it out itself when the
    # snapshot is older than 15 minutes, so keep this well under that.
    uptime_snapshot_interval_s: float = Field(default=300.0, ge=1, le=600)
    # Gaps in a terminal's message numbers (docs/ingest.md, "Nothing lost"): a gap this
    # old is asked for again with a resend command (another worker may still be
    # committing the numbers); after resend_attempts answered requests, what is still
    # missing is counted lost. Resend commands wait this long for an offline terminal.
    gap_grace_s: float = Field(default=10.0, gt=0, le=3600)
    gap_check_interval_s: float = Field(default=5.0, gt=0, le=3600)
    resend_attempts: int = Field(default=3, ge=1, le=100)
    resend_expires_s: float = Field(default=86_400.0, ge=60, le=30 * 86_400)


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
    # Sign-in throttling: after this many failed sign-ins within the window, a username
    # (or an address, for any usernames) is refused until the oldest ages out.
    login_failures_per_user: int = Field(default=5, ge=1, le=1000)
    login_failures_per_address: int = Field(default=20, ge=1, le=10_000)
    login_failure_window_s: int = Field(default=900, ge=10, le=86_400)
    # Empty: any address. Else only these networks (CIDR) reach the console and the
    # API; others get 403 (and an audit line). /healthz stays open for the supervisor.
    # In the environment: a comma-separated list.
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    # Reverse proxies in front of the console (Caddy, nginx, an Ingress) that append the
    # client's address to X-Forwarded-For. 0: the connection's own address is the
    # client's. Behind a proxy, 0 would throttle, allow and audit the proxy's address;
    # more than the real count would let a client choose its address with a header.
    proxy_hops: int = Field(default=0, ge=0, le=5)

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list | tuple):
            return tuple(ip_network(str(part).strip(), strict=False) for part in value)
        return value


class AgentSettings(_Section):
    mqtt: MqttClientSettings = MqttClientSettings()
    serial: str | None = None
    heartbeat_interval_s: float = Field(default=300.0, gt=0)
    # The agent's own files; empty: $STATE_DIRECTORY (systemd), else <data_dir>/agent.
    state_dir: Path | None = None
    # The on-disk store-and-forward queue (SQLite); empty: <state_dir>/queue.sqlite3.
    queue_path: Path | None = None
    # How often the device is read to notice a change of status between heartbeats.
    status_poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # Messages queued while the broker is unreachable; beyond it old heartbeats are thinned.
    outbox_max: int = Field(default=10_000, ge=1, le=1_000_000)
    # Sent messages kept to publish again when ingest finds them missing (a broker that
    # crashed after acknowledging them): at a 300 s heartbeat, 10,000 is a month.
    resend_keep: int = Field(default=10_000, ge=0, le=1_000_000)
    # Upper bound of the reconnect delay (exponential backoff with full jitter).
    reconnect_max_s: float = Field(default=60.0, ge=1, le=3600)
    # The TC-200 on USB: ids, per-transfer timeout, and the longest wait between reopens.
    usb_vendor_id: int = Field(default=0x1209, ge=0, le=0xFFFF)
    usb_product_id: int = Field(default=0xC200, ge=0, le=0xFFFF)
    usb_timeout_ms: int = Field(default=1000, ge=10, le=60_000)
    usb_retry_max_s: float = Field(default=30.0, ge=1, le=3600)
    # Demos and tests: a simulated TC-200 (the real driver over a simulated USB bus).
    simulated_device: bool = False
    # A local log file, rotated at log_max_bytes keeping log_backups old files; empty: none.
    log_path: Path | None = None
    log_max_bytes: int = Field(default=10_000_000, ge=10_000)
    log_backups: int = Field(default=5, ge=1, le=100)
    # Firmware updates (agent/PROTOCOL.md, the firmware command). The platform's Ed25519
    # public key (PEM) that every image's manifest must be signed with; empty: the agent
    # refuses firmware commands.
    firmware_public_key: Path | None = None
    # Downloaded images; empty: <state_dir>/firmware.
    firmware_dir: Path | None = None
    # CA certificates for https downloads; empty: the system's trust store.
    firmware_tls_ca: Path | None = None
    # A download read that waits this long for data is cut (and resumed).
    firmware_read_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # How long the TC-200 may take to come back after booting a new image.
    firmware_boot_wait_s: float = Field(default=120.0, gt=0, le=3600)


class SimulateSettings(_Section):
    terminals: int = Field(default=10, ge=0, le=100_000)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    customer: str = "Demo Retail"
    # Faults (error or unplugged) per simulated terminal per second; 0 disables them.
    fault_rate: float = Field(default=0.0, ge=0, le=1)
    # Connects are spread evenly over this many seconds so a large fleet does not stampede.
    connect_spread_s: float = Field(default=2.0, ge=0, le=600)
    # How often each simulated terminal's status is read over (simulated) USB.
    status_poll_interval_s: float = Field(default=5.0, gt=0, le=3600)
    # Simulated USB glitches (a timeout or a corrupt frame) per request; 0 disables them.
    usb_glitch_rate: float = Field(default=0.0, ge=0, le=1)
    # Worker processes sharing the fleet; 0: one per CPU for fleets over 2,000 terminals.
    processes: int = Field(default=0, ge=0, le=64)


class AlertSettings(_Section):
    """Where the alert rules live and how often the offline sweep runs."""

    # The rules, storm limits and notification routes (see config/alerts.toml);
    # empty: the built-in defaults, which config/alerts.toml repeats.
    rules_file: Path | None = None
    # How often ingest sweeps for missed heartbeats and raises/resolves status alerts.
    sweep_interval_s: float = Field(default=1.0, gt=0, le=3600)


class NotifySettings(_Section):
    """The mail server and delivery policy of alert notifications (outbox, retried)."""

    smtp_host: str | None = None  # empty: e-mail routes stay queued and are reported
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "tms@localhost"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Delivery is retried with exponential backoff; after max_attempts the row is failed.
    max_attempts: int = Field(default=30, ge=1, le=1000)
    retry_first_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=900.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600)


class CommandSettings(_Section):
    """The command sender (``tms commands``); it uses the console's MQTT account."""

    # Rows claimed, published and recorded per transaction.
    batch_size: int = Field(default=500, ge=1, le=10_000)
    # Wakes this often even with nothing due: a lost NOTIFY costs at most this long.
    idle_check_s: float = Field(default=5.0, gt=0, le=300)
    # How long a batch waits for the broker's PUBACKs; unacknowledged rows stay queued.
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Support scripts over MQTT: requests per second per account, and the burst allowed.
    request_rate_per_s: float = Field(default=5.0, gt=0, le=1000)
    request_burst: int = Field(default=20, ge=1, le=10_000)


class FirmwareSettings(_Section):
    """The firmware library (`tms firmware`, the console's firmware screen and download)."""

    # Image files, named by their SHA-256. Empty: <data_dir>/firmware.
    store_dir: Path | None = None
    # The platform's Ed25519 signing key (`tms firmware keygen`); only the processes that
    # add images read it. Empty: <data_dir>/firmware-signing.key.
    signing_key: Path | None = None
    # The terminal models an image may name; a typo would otherwise make an image no
    # terminal takes.
    models: tuple[str, ...] = ("TC-200",)
    # A TC-200 stages at most 16 MiB (agent/PROTOCOL.md).
    max_image_bytes: int = Field(default=16 * 1024 * 1024, ge=1, le=16 * 1024 * 1024)
    # Where agents fetch images: the console as the store PCs reach it (e.g.
    # "https://tms.example.com"). Empty: http://<console host>:<console port>.
    download_base_url: str = ""
    # A mirror (a CDN, a store's own cache) serving <mirror>/<sha256>.img without a
    # login; agents try it first and fall back to the console. Empty: none.
    mirror_base_url: str = ""

    def download_url_of(self, console: ConsoleSettings, version: str) -> str:
        # A console listening on every address is reached on this host's loopback.
        host = "127.0.0.1" if console.host in ("0.0.0.0", "::", "") else console.host
        base = self.download_base_url or f"http://{host}:{console.port}"
        return f"{base.rstrip('/')}/agent/v1/firmware/{quote(version, safe='')}/image"

    def mirror_url_of(self, sha256: str) -> str | None:
        return f"{self.mirror_base_url.rstrip('/')}/{sha256}.img" if self.mirror_base_url else None

    def store_dir_in(self, data_dir: Path) -> Path:
        return (self.store_dir or data_dir / "firmware").expanduser().absolute()

    def signing_key_in(self, data_dir: Path) -> Path:
        return (self.signing_key or data_dir / "firmware-signing.key").expanduser().absolute()


class SupervisionSettings(_Section):
    """How `tms up` restarts a part that dies (tms/supervision_policy.py)."""

    # First restart after this long, doubled after each quick failure, up to the cap.
    restart_delay_s: float = Field(default=0.5, gt=0, le=3600)
    restart_delay_max_s: float = Field(default=30.0, gt=0, le=3600)
    # A part that ran this long after it became ready starts again from the first delay.
    healthy_after_s: float = Field(default=60.0, gt=0)
    # A part that fails this many starts in a row (exits or is not ready in time)
    # stops the platform: it cannot start at all, and restarting it would only hide why.
    give_up_after: int = Field(default=5, ge=1, le=1000)
    start_timeout_s: float = Field(default=60.0, gt=0, le=3600)


class BackupSettings(_Section):
    """`tms db backup` and the daily backup `tms up` runs (docs/operations.md)."""

    # Where backups go; empty: <data_dir>/backups.
    dir: Path | None = None
    # Rotation after each backup: the newest `keep` are kept, and none older than
    # max_age_days (0: no age limit); the backup just made is never deleted.
    keep: int = Field(default=7, ge=1, le=100_000)
    max_age_days: int = Field(default=0, ge=0, le=36_500)
    # When `tms up` backs up each day, "HH:MM" in the host's local time; "": never.
    daily_at: str = Field(default="03:30", pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9])?$")

    def dir_in(self, data_dir: Path) -> Path:
        return (self.dir or data_dir / "backups").expanduser().absolute()


class Settings(_Section):
    """Everything, loaded once at start-up; each component takes only its own section."""

    paths: PathSettings = PathSettings()
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    ingest: IngestSettings = IngestSettings()
    console: ConsoleSettings = ConsoleSettings()
    commands: CommandSettings = CommandSettings()
    agent: AgentSettings = AgentSettings()
    simulate: SimulateSettings = SimulateSettings()
    alerts: AlertSettings = AlertSettings()
    notify: NotifySettings = NotifySettings()
    supervision: SupervisionSettings = SupervisionSettings()
    firmware: FirmwareSettings = FirmwareSettings()
    backup: BackupSettings = BackupSettings()


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
