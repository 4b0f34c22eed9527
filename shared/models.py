"""SQLModel tables: the TMS data model in PostgreSQL.

Tables are not wire formats (see ``shared.messages``). Every schema change goes
through an alembic migration in ``shared/migrations`` so that upgrades keep data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(*, nullable: bool = True, index: bool = False, server_now: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True),
            nullable=nullable,
            index=index,
            server_default=text("now()") if server_now else None,
        ),
    )


def _counter() -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


def _json() -> Any:
    return Field(default=None, sa_column=Column(JSONB, nullable=True))


class Role(StrEnum):
    """Console roles, most powerful first."""

    ADMIN = "admin"
    OPERATOR = "operator"
    SUPPORT = "support"
    VIEWER = "viewer"


class TerminalStatus(StrEnum):
    UNKNOWN = "unknown"  # provisioned, never heard from
    ONLINE = "online"
    OFFLINE = "offline"
    ERROR = "error"
    DECOMMISSIONED = "decommissioned"


class AccountKind(StrEnum):
    """Who a broker credential belongs to; the ACL rules are chosen by kind."""

    TERMINAL = "terminal"
    INGEST = "ingest"
    CONSOLE = "console"
    SUPPORT_SCRIPT = "support-script"
    # A regional broker's bridge to the core broker: relays its terminals' messages up
    # and their commands down (broker/bridge.py).
    BRIDGE = "bridge"


class ContractType(StrEnum):
    """A customer's service contract: what response the operations team owes it."""

    BASIC = "basic"
    STANDARD = "standard"
    PREMIUM = "premium"


# Problems first: the terminal list's default order, in SQL with literal values so that
# its expression index (ix_terminal_attention) serves it.
# The missed-heartbeat sweep's order (ingest.sweep): a terminal not worked out yet first.
OFFLINE_DUE_SQL = "COALESCE(offline_due_at, '-infinity'::timestamptz)"

ATTENTION_RANK_SQL = (
    "CASE status WHEN 'error' THEN 0 WHEN 'offline' THEN 1 WHEN 'unknown' THEN 2"
    " WHEN 'online' THEN 3 WHEN 'decommissioned' THEN 4 ELSE 5 END"
)


class Customer(SQLModel, table=True):
    __tablename__ = "customer"
    __table_args__ = (
        CheckConstraint(
            "contract_type IN ('basic', 'standard', 'premium')", name="customer_contract_type"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    # Company details (migration 0008); name is the company name.
    contact_person: str = Field(
        default="", sa_column=Column(String(200), nullable=False, server_default="")
    )
    email: str = Field(default="", sa_column=Column(String(254), nullable=False, server_default=""))
    phone: str = Field(default="", sa_column=Column(String(64), nullable=False, server_default=""))
    contract_type: str = Field(
        default=ContractType.STANDARD.value,
        sa_column=Column(String(16), nullable=False, server_default=ContractType.STANDARD.value),
    )
    # An IANA zone name: the customer's reports and times are shown in it.
    timezone: str = Field(
        default="UTC", sa_column=Column(String(64), nullable=False, server_default="UTC")
    )
    updated_at: datetime | None = _ts()


class Store(SQLModel, table=True):
    __tablename__ = "store"
    __table_args__ = (UniqueConstraint("customer_id", "code"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    code: str = Field(max_length=64)
    name: str = Field(default="", max_length=200)
    timezone: str = Field(default="UTC", max_length=64)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    # When a firmware install may begin, in the store's own time zone, as
    # rollouts.windows.parse_window reads it ("Mon-Fri 02:00-05:00"); None: any time.
    maintenance_window: str | None = Field(default=None, max_length=100)


class Terminal(SQLModel, table=True):
    """One TC-200 and its latest known state (history lives in ``telemetry``)."""

    __tablename__ = "terminal"
    __table_args__ = (
        # The console's substring search (serial or host) at 100,000 terminals
        # (migration 0009, pg_trgm).
        Index(
            "ix_terminal_serial_trgm",
            "serial",
            postgresql_using="gin",
            postgresql_ops={"serial": "gin_trgm_ops"},
        ),
        Index(
            "ix_terminal_host_trgm",
            "host_name",
            postgresql_using="gin",
            postgresql_ops={"host_name": "gin_trgm_ops"},
        ),
        # The list's default order, problems first (console.fleet ATTENTION_RANK;
        # migration 0012).
        Index("ix_terminal_attention", text(ATTENTION_RANK_SQL), "serial"),
        # Rollout targets ask for terminals carrying every one of some tags (migration 0014).
        Index("ix_terminal_tags", "tags", postgresql_using="gin"),
        # The sweep's due times and a store PC's terminals (migration 0015, ingest.sweep).
        Index(
            "ix_terminal_offline_due",
            text(OFFLINE_DUE_SQL),
            postgresql_where=text("status IN ('online', 'error')"),
        ),
        Index(
            "ix_terminal_alert_check",
            "alert_check_at",
            postgresql_where=text("alert_check_at IS NOT NULL"),
        ),
        Index(
            "ix_terminal_customer_host",
            "customer_id",
            "host_name",
            postgresql_where=text("host_name IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    serial: str = Field(max_length=64, unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    store_id: int | None = Field(default=None, foreign_key="store.id", index=True)
    model: str = Field(default="TC-200", max_length=64, index=True)  # migration 0017
    status: str = Field(default=TerminalStatus.UNKNOWN.value, max_length=32, index=True)
    status_reason: str | None = Field(default=None, max_length=200)
    status_changed_at: datetime | None = _ts()
    device_status: str | None = Field(default=None, max_length=32)
    firmware_version: str | None = Field(default=None, max_length=64, index=True)
    # Not indexed: a heartbeat update then stays HOT (migration 0003).
    last_heartbeat_at: datetime | None = _ts()
    last_seen_at: datetime | None = _ts()
    cpu_pct: float | None = None
    memory_pct: float | None = None
    disk_pct: float | None = None
    host_name: str | None = Field(default=None, max_length=200)
    host_cpu_pct: float | None = None
    host_memory_pct: float | None = None
    host_disk_pct: float | None = None
    uptime_s: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    decommissioned_at: datetime | None = _ts()
    # Migration 0008: when it went into service at the store; under maintenance (the
    # operations team is working on it: shown as such, no offline or error alerts
    # expected to matter); when a person last changed its record.
    installed_at: datetime | None = _ts()
    maintenance: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    maintenance_note: str | None = Field(default=None, max_length=200)
    updated_at: datetime | None = _ts()
    # Message sequence (migration 0006): the agent's newest stream, the highest number
    # written of it, and counts of numbers found missing, got back, and given up on.
    # Free labels a rollout can target ("pilot", "pilot-hold"); migration 0014.
    tags: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(64)), nullable=False, server_default=text("'{}'")),
    )
    seq_stream: str | None = Field(default=None, max_length=32)
    # The sweep's due times (migration 0015): not before offline_due_at can an online
    # terminal have missed its heartbeats (set by the sweep, never by a heartbeat, so
    # that update stays HOT); alert_check_at is when the status alert rules look at it
    # next (a trigger sets it to now() on every change of status).
    offline_due_at: datetime | None = _ts()
    alert_check_at: datetime | None = _ts()
    seq_high: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    seq_gaps_found: int = _counter()
    seq_missing: int = _counter()
    seq_recovered: int = _counter()
    seq_lost: int = _counter()


class Credential(SQLModel, table=True):
    """A broker account: username plus a salted hash of a random secret.

    The hash is SHA-512 over secret + salt, the form Mosquitto's password file (``$6$``)
    and EMQX's PostgreSQL authenticator (sha512, salt suffix) both verify, so one stored
    value serves every supported broker. High-entropy secrets need no slow hash.
    """

    __tablename__ = "credential"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=32)
    terminal_id: int | None = Field(default=None, foreign_key="terminal.id", index=True)
    salt: str = Field(max_length=64)
    secret_hash: str = Field(max_length=128)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    revoked_at: datetime | None = _ts()


class Alert(SQLModel, table=True):
    __tablename__ = "alert"
    __table_args__ = (
        # One open alert per terminal and kind: a repeat bumps count and last_seen_at.
        Index(
            "alert_one_open_per_kind",
            "terminal_id",
            "kind",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
        ),
        # One open alert per scope (a terminal, or a whole store PC) and kind.
        Index(
            "alert_one_open_per_scope",
            "scope",
            "kind",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
        ),
        # The Alerts screen's keyset pages, newest first: active ones, and an
        # incident's members (migration 0011).
        Index(
            "alert_active_raised_at_id",
            text("raised_at DESC"),
            text("id DESC"),
            postgresql_where=text("status <> 'resolved'"),
        ),
        Index(
            "alert_incident_raised_at_id",
            "incident_id",
            text("raised_at DESC"),
            text("id DESC"),
            postgresql_where=text("incident_id IS NOT NULL"),
        ),
        # The sweep: open alerts of a kind (raised elsewhere, not told yet), and status
        # alerts resolved a moment ago (migration 0015, ingest.sweep).
        Index("ix_alert_open_kind", "kind", postgresql_where=text("status <> 'resolved'")),
        Index(
            "ix_alert_resolved_at", "resolved_at", postgresql_where=text("resolved_at IS NOT NULL")
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    terminal_id: int | None = Field(default=None, foreign_key="terminal.id", index=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    # "terminal:<id>" or "host:<customer id>:<host name>" (one alert for a down store PC).
    scope: str = Field(default="", max_length=300)
    host_name: str | None = Field(default=None, max_length=200)
    incident_id: int | None = Field(default=None, foreign_key="incident.id")
    kind: str = Field(max_length=32)
    severity: str = Field(default="warning", max_length=16)
    status: str = Field(default="open", max_length=16, index=True)
    message: str = Field(default="", max_length=2000)
    count: int = 1
    first_seen_at: datetime | None = _ts(nullable=False, server_now=True)
    last_seen_at: datetime | None = _ts(nullable=False, server_now=True)
    acknowledged_by: int | None = Field(default=None, foreign_key="user_account.id")
    assignee_id: int | None = Field(default=None, foreign_key="user_account.id")
    acknowledged_at: datetime | None = _ts()
    # When TMS raised it; first_seen_at is when its cause began.
    raised_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True),
            nullable=False,
            index=True,
            server_default=text("clock_timestamp()"),
        ),
    )
    resolved_at: datetime | None = _ts()
    resolution_note: str | None = Field(default=None, max_length=2000)


class CommandBulk(SQLModel, table=True):
    """One command for a selection of terminals, sent at a set rate per customer."""

    __tablename__ = "command_bulk"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    args: dict[str, Any] | None = _json()
    selection: dict[str, Any] | None = _json()  # the filter it was chosen by, as asked
    summary: str = Field(default="", max_length=500, sa_column_kwargs={"server_default": ""})
    rate_per_s: float
    total: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    requested_by: str = Field(max_length=64)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    cancelled_at: datetime | None = _ts()
    cancelled_by: str | None = Field(default=None, max_length=64)


class CommandRow(SQLModel, table=True):
    """A command is a row before it is a message (docs/commands.md); states in
    ``shared.command_states``."""

    __tablename__ = "command"
    __table_args__ = (
        Index("ix_command_created_at", "terminal_id", "created_at"),
        Index("command_due", "due_at", postgresql_where=text("status IN ('queued', 'sent')")),
        Index(
            "command_request_once",
            "requested_by",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    terminal_id: int = Field(foreign_key="terminal.id", index=True)
    name: str = Field(max_length=64)
    args: dict[str, Any] | None = _json()
    status: str = Field(
        default="queued", max_length=16, index=True, sa_column_kwargs={"server_default": "queued"}
    )
    created_by: int | None = Field(default=None, foreign_key="user_account.id")
    # Who asked: a console user's or API token owner's name, or an MQTT account.
    requested_by: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    requester_kind: str = Field(default="", max_length=16, sa_column_kwargs={"server_default": ""})
    token_name: str | None = Field(default=None, max_length=100)
    origin: str | None = Field(default=None, max_length=64)  # remote address, or "mqtt"
    request_id: str | None = Field(default=None, max_length=64)  # a support script's own id
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    max_attempts: int = Field(default=3, sa_column_kwargs={"server_default": "3"})
    timeout_s: float = Field(default=60.0, sa_column_kwargs={"server_default": "60"})
    # queued: when it may go out (a bulk paces its rows); sent: when its result is late.
    due_at: datetime | None = _ts(nullable=False, server_now=True)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    sent_at: datetime | None = _ts()  # the first send
    last_sent_at: datetime | None = _ts()
    expires_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()  # any final state
    cancelled_by: str | None = Field(default=None, max_length=64)
    bulk_id: int | None = Field(default=None, foreign_key="command_bulk.id", index=True)
    result: dict[str, Any] | None = _json()
    error: str | None = Field(default=None, max_length=2000)


class TerminalLog(SQLModel, table=True):
    """Device events and command results per terminal, partitioned by month like
    telemetry (migration 0005) and dropped with it by the retention job."""

    __tablename__ = "terminal_log"
    __table_args__ = (
        Index("terminal_log_terminal_at", "terminal_id", text("at DESC")),
        UniqueConstraint("kind", "source_id", "at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    terminal_id: int
    at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), primary_key=True)
    )
    received_at: datetime | None = _ts(nullable=False, server_now=True)
    kind: str = Field(max_length=16)  # event | command
    severity: str = Field(
        default="info", max_length=16, sa_column_kwargs={"server_default": "info"}
    )
    code: str | None = Field(default=None, max_length=200)
    message: str = Field(default="", max_length=2000, sa_column_kwargs={"server_default": ""})
    source_id: str | None = Field(default=None, max_length=64)  # the event or command id
    data: dict[str, Any] | None = _json()


class FirmwareState(StrEnum):
    """A firmware image's life: uploaded (draft), offered to rollouts (released), kept
    for the record but offered no more (deprecated). It only moves forward."""

    DRAFT = "draft"
    RELEASED = "released"
    DEPRECATED = "deprecated"


class Firmware(SQLModel, table=True):
    """A firmware image in the library: the image itself is a file named by its SHA-256
    in the firmware store ([firmware] store_dir), not a column (migration 0013)."""

    __tablename__ = "firmware"

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(max_length=64, unique=True)
    filename: str = Field(max_length=255)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    notes: str = Field(default="", max_length=4000)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    # The terminal models it fits, a JSON list of names (shared.firmware_signature).
    models: list[str] | None = _json()
    # Ed25519 over the manifest (version, models, size, SHA-256), base64; key_id names
    # the platform key that made it. The private key is a file, never in the database.
    signature: str = Field(default="", max_length=200)
    key_id: str = Field(default="", max_length=32)
    state: str = Field(default=FirmwareState.DRAFT.value, max_length=16, index=True)
    created_by: str = Field(default="", max_length=200)
    released_at: datetime | None = _ts()
    released_by: str | None = Field(default=None, max_length=200)
    deprecated_at: datetime | None = _ts()


class Rollout(SQLModel, table=True):
    """A release pushed to a set of terminals in waves (rollouts/, migration 0014).

    ``target`` and ``policy`` are the rollout's rules as JSON (rollouts.rollout_json), kept
    as they were when it started; ``seed`` fixes which terminals fall in which wave."""

    __tablename__ = "rollout"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    firmware_id: int = Field(foreign_key="firmware.id", index=True)
    # rollouts.decide.RolloutState
    state: str = Field(default="running", max_length=16, index=True)
    target: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    policy: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    wave_spec: str = Field(max_length=200)
    seed: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Terminals of the target left out at creation, counted per reason.
    excluded: dict[str, int] | None = _json()
    halt_reason: str | None = Field(default=None, max_length=2000)
    # What the driver last said it waits for ("wave 2 waits for approval").
    note: str | None = Field(default=None, max_length=2000)
    created_by: str = Field(max_length=200)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    updated_at: datetime | None = _ts(nullable=False, server_now=True)
    finished_at: datetime | None = _ts()


class RolloutWave(SQLModel, table=True):
    __tablename__ = "rollout_wave"

    rollout_id: int = Field(
        sa_column=Column(Integer, ForeignKey("rollout.id", ondelete="CASCADE"), primary_key=True)
    )
    number: int = Field(primary_key=True)  # 1-based
    size: int
    started_at: datetime | None = _ts()
    approved_at: datetime | None = _ts()
    approved_by: str | None = Field(default=None, max_length=200)


class UpdateTask(SQLModel, table=True):
    """One terminal's part in a rollout (rollouts.tasks has its states and moves)."""

    __tablename__ = "update_task"
    __table_args__ = (
        UniqueConstraint("rollout_id", "terminal_id", name="uq_update_task_rollout_terminal"),
        Index("ix_update_task_rollout_wave_state", "rollout_id", "wave", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: int = Field(
        sa_column=Column(Integer, ForeignKey("rollout.id", ondelete="CASCADE"), nullable=False)
    )
    firmware_id: int = Field(foreign_key="firmware.id", index=True)
    terminal_id: int = Field(foreign_key="terminal.id", index=True)
    wave: int
    state: str = Field(
        default="queued", sa_column=Column(String(32), nullable=False, server_default="queued")
    )
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    retry_at: datetime | None = _ts()
    command_id: str | None = Field(default=None, max_length=64, index=True)
    # The command in flight only downloads and verifies: the store's window was closed.
    download_only: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    percent: float | None = None  # of the download, while downloading
    from_version: str | None = Field(default=None, max_length=64)
    version_after: str | None = Field(default=None, max_length=64)
    failure: str | None = Field(default=None, max_length=64)  # one word, for counting
    reason: str | None = Field(default=None, max_length=2000)  # a sentence, for people
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    updated_at: datetime | None = _ts(nullable=False, server_now=True)
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()


class TelemetryRow(SQLModel, table=True):
    """Append-only heartbeat history; ``message_id`` makes redelivery idempotent."""

    __tablename__ = "telemetry"
    # Partitioned by month on ts (migration 0002), so ts is part of every unique key;
    # a redelivered message carries the same ts and is still written once.
    __table_args__ = (
        Index("telemetry_terminal_ts", "terminal_id", "ts"),
        UniqueConstraint("message_id", "ts"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    # No foreign key: a per-row lookup trigger on the hottest insert (migration 0003);
    # ingest writes rows only for terminals it holds locked.
    terminal_id: int
    message_id: str = Field(max_length=64)
    ts: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), primary_key=True)
    )
    received_at: datetime | None = _ts(nullable=False, server_now=True)
    device_status: str = Field(max_length=32)
    firmware_version: str | None = Field(default=None, max_length=64)
    cpu_pct: float | None = None
    memory_pct: float | None = None
    disk_pct: float | None = None
    host_cpu_pct: float | None = None
    host_memory_pct: float | None = None
    host_disk_pct: float | None = None
    errors: list[dict[str, Any]] | None = _json()


class StatusChange(SQLModel, table=True):
    """Every change of a terminal's status with its reason; kept for good."""

    __tablename__ = "status_change"
    # A terminal's changes in a period (reports' uptime; migration 0012).
    __table_args__ = (Index("ix_status_change_terminal_at", "terminal_id", "at"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    terminal_id: int = Field(foreign_key="terminal.id", index=True)
    at: datetime | None = _ts(nullable=False, server_now=True)
    old_status: str | None = Field(default=None, max_length=32)
    new_status: str = Field(max_length=32)
    reason: str = Field(default="", max_length=200)


class SeqGap(SQLModel, table=True):
    """A range of a terminal's message numbers that ingest has not received (yet)."""

    __tablename__ = "seq_gap"
    __table_args__ = (
        Index("ix_seq_gap_terminal", "terminal_id", "stream", "first_seq"),
        CheckConstraint("first_seq >= 1 AND first_seq <= last_seq", name="seq_gap_range"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    terminal_id: int = Field(
        sa_column=Column(Integer, ForeignKey("terminal.id", ondelete="CASCADE"), nullable=False)
    )
    stream: str = Field(max_length=32)
    first_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    found_at: datetime | None = _ts(nullable=False, index=True)
    requested_at: datetime | None = _ts()
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    command_id: str | None = Field(default=None, max_length=64)  # the last resend asked


class DeadLetter(SQLModel, table=True):
    """A message ingest could not use, kept with its payload and the reason."""

    __tablename__ = "dead_letter"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    received_at: datetime | None = _ts(nullable=False, server_now=True, index=True)
    topic: str = Field(max_length=1024)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    reason: str = Field(max_length=64, index=True)
    detail: str = Field(default="", max_length=2000)


class UserAccount(SQLModel, table=True):
    """A console user; ``password_hash`` is a werkzeug scrypt hash."""

    __tablename__ = "user_account"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    password_hash: str = Field(max_length=256)
    role: str = Field(max_length=16)
    active: bool = True
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    last_login_at: datetime | None = _ts()
    # Set by an admin's password reset: the next sign-in must choose a new password.
    must_change_password: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )


class ConsoleSession(SQLModel, table=True):
    """One browser's sign-in, kept on the server so that it can be ended there.

    The signed cookie carries a random token; only its SHA-256 is stored. Logout, a
    disabled account and a password change set ``ended_at`` on every session of the
    user, and a copied cookie stops working at once.
    """

    __tablename__ = "console_session"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    last_seen_at: datetime | None = _ts(nullable=False, server_now=True)
    ended_at: datetime | None = _ts()
    end_reason: str | None = Field(default=None, max_length=32)
    remote_addr: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=200)


class ApiToken(SQLModel, table=True):
    """A bearer token for the REST API; only its SHA-256 is stored."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    __table_args__ = (
        # Sign-in throttling counts recent failures per username and per address.
        Index(
            "ix_audit_login_failed_target",
            "target",
            "at",
            postgresql_where=text("action = 'login.failed'"),
        ),
        Index(
            "ix_audit_login_failed_addr",
            "remote_addr",
            "at",
            postgresql_where=text("action = 'login.failed'"),
        ),
        # A terminal's (or user's) own trail, newest first; the audit page's substring
        # search on the target (migration 0010).
        Index("ix_audit_target_id", "target", "id"),
        Index(
            "ix_audit_target_trgm",
            "target",
            postgresql_using="gin",
            postgresql_ops={"target": "gin_trgm_ops"},
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    at: datetime | None = _ts(nullable=False, server_now=True, index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=200)
    detail: dict[str, Any] | None = _json()
    remote_addr: str | None = Field(default=None, max_length=64)


class Incident(SQLModel, table=True):
    """Alerts grouped in a storm: notified once, with the count (issue 5)."""

    __tablename__ = "incident"

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default="open", max_length=16, index=True)
    severity: str = Field(default="critical", max_length=16)
    summary: str = Field(default="", max_length=2000)
    alert_count: int = 0
    opened_at: datetime | None = _ts(nullable=False, server_now=True)
    last_alert_at: datetime | None = _ts(nullable=False, server_now=True)
    closed_at: datetime | None = _ts()


class NotificationOutbox(SQLModel, table=True):
    """One notification to deliver (e-mail or webhook), kept until it is sent."""

    __tablename__ = "notification_outbox"
    __table_args__ = (Index("notification_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    alert_id: int | None = Field(default=None, foreign_key="alert.id", index=True)
    incident_id: int | None = Field(default=None, foreign_key="incident.id", index=True)
    route: str = Field(max_length=64)
    channel: str = Field(max_length=16)  # email | webhook
    target: str = Field(max_length=1000)
    payload: dict[str, Any] | None = _json()
    status: str = Field(default="pending", max_length=16)  # pending|sent|failed|merged
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(nullable=False, server_now=True)
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime | None = _ts(nullable=False, server_now=True)
    sent_at: datetime | None = _ts()


class HeartbeatPolicy(SQLModel, table=True):
    """Per-customer or per-terminal heartbeat interval for the missed-heartbeat sweep."""

    __tablename__ = "heartbeat_policy"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", unique=True)
    terminal_id: int | None = Field(default=None, foreign_key="terminal.id", unique=True)
    interval_s: float
    missed: int = 3


class TelemetryHourly(SQLModel, table=True):
    """Hourly rollup of ``telemetry``, kept longer than the raw rows."""

    __tablename__ = "telemetry_hourly"

    terminal_id: int = Field(foreign_key="terminal.id", primary_key=True)
    hour: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    samples: int = 0
    error_samples: int = 0
    cpu_avg: float | None = None
    cpu_max: float | None = None
    memory_avg: float | None = None
    memory_max: float | None = None
    disk_avg: float | None = None
    disk_max: float | None = None
    host_cpu_avg: float | None = None
    host_memory_avg: float | None = None
    host_disk_avg: float | None = None


class FleetSample(SQLModel, table=True):
    """Terminals per status for one customer, sampled every few minutes by ingest: the
    rollup the dashboard's uptime and online charts read, instead of the terminal table's
    history (migration 0008). Uptime of a period = sum(online) / sum(in_service)."""

    __tablename__ = "fleet_sample"

    bucket: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    customer_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True, index=True
        )
    )
    in_service: int = 0  # every terminal not decommissioned
    online: int = 0
    offline: int = 0
    error: int = 0
    unknown: int = 0
    maintenance: int = 0


class FleetSampleTotal(SQLModel, table=True):
    """The whole fleet per bucket: ``fleet_sample`` summed over customers, written with
    it, so that the dashboard's charts read 8,640 rows for 30 days, not 4 million."""

    __tablename__ = "fleet_sample_total"

    bucket: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    in_service: int = Field(sa_column=Column(BigInteger, nullable=False))
    online: int = Field(sa_column=Column(BigInteger, nullable=False))


class FleetSampleDaily(SQLModel, table=True):
    """Per customer and UTC day, the sums of its samples (uptime = online / in_service),
    added to as each sample is written: a month of uptime for 500 customers is 15,500
    rows."""

    __tablename__ = "fleet_sample_daily"

    day: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    customer_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True, index=True
        )
    )
    samples: int = Field(sa_column=Column(BigInteger, nullable=False))
    in_service: int = Field(sa_column=Column(BigInteger, nullable=False))
    online: int = Field(sa_column=Column(BigInteger, nullable=False))


class TerminalCount(SQLModel, table=True):
    """Signed changes of the number of terminals per customer, status and maintenance,
    added by triggers on ``terminal`` (migration 0016): a count is the sum of its key's
    rows, so the dashboard never scans the fleet. Ingest folds the rows back to one per
    key (shared.terminal_counts)."""

    __tablename__ = "terminal_count"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    customer_id: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(max_length=32)
    maintenance: bool = Field(sa_column=Column(Boolean, nullable=False))
    n: int = Field(sa_column=Column(BigInteger, nullable=False))


class FleetUptimeSnapshot(SQLModel, table=True):
    """The fleet report's uptime rows for a UTC month, as worked out at ``computed_at``
    up to ``through`` (shared.uptime_snapshot): kept fresh by ingest, read by the console."""

    __tablename__ = "fleet_uptime_snapshot"

    month: str = Field(max_length=7, primary_key=True)
    computed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    through: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    rows: list[Any] = Field(sa_column=Column(JSONB, nullable=False))  # customers, worst
    stores: list[Any] = Field(sa_column=Column(JSONB, nullable=False))  # the CSV's alone


class IngestSession(SQLModel, table=True):
    """A broker session an ingest worker has used (client id), for its later retirement."""

    __tablename__ = "ingest_session"

    client_id: str = Field(max_length=128, primary_key=True)
    registered_at: datetime | None = _ts(nullable=False, server_now=True)
