"""bounded history, alert scopes, incidents, notification outbox

Telemetry becomes a table partitioned by month on ``ts`` (existing rows are kept:
copied into the partitions of their months); a default partition catches rows
outside every month's partition. The unique key becomes (message_id, ts), as
PostgreSQL requires the partition key in it; a redelivered message carries the same
ts, so it is still written once. Alerts gain a ``scope`` (a terminal or a store PC),
so that one PC alert stands for all its terminals; storms group alerts into
incidents; notifications wait in an outbox until delivered.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (
    "id, terminal_id, message_id, ts, received_at, device_status, firmware_version, cpu_pct,"
    " memory_pct, disk_pct, host_cpu_pct, host_memory_pct, host_disk_pct, errors"
)
MONTHS_AHEAD = 3


def _add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def _partition(month: date) -> None:
    nxt = _add_months(month, 1)
    lo = datetime(month.year, month.month, 1, tzinfo=UTC).isoformat()
    hi = datetime(nxt.year, nxt.month, 1, tzinfo=UTC).isoformat()
    op.execute(
        f"CREATE TABLE telemetry_y{month.year:04d}m{month.month:02d} PARTITION OF telemetry"
        f" FOR VALUES FROM ('{lo}') TO ('{hi}')"
    )


def _partition_telemetry() -> None:
    op.execute("ALTER TABLE telemetry RENAME TO telemetry_unpartitioned")
    for old, new in (
        ("telemetry_pkey", "telemetry_unpartitioned_pkey"),
        ("telemetry_message_id_key", "telemetry_unpartitioned_message_id_key"),
        ("telemetry_terminal_id_fkey", "telemetry_unpartitioned_terminal_id_fkey"),
    ):
        op.execute(f"ALTER TABLE telemetry_unpartitioned RENAME CONSTRAINT {old} TO {new}")
    op.execute("ALTER INDEX telemetry_terminal_ts RENAME TO telemetry_unpartitioned_terminal_ts")
    op.execute(
        """
        CREATE TABLE telemetry (
            id bigint NOT NULL DEFAULT nextval('telemetry_id_seq'),
            terminal_id integer NOT NULL REFERENCES terminal (id),
            message_id varchar(64) NOT NULL,
            ts timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            device_status varchar(32) NOT NULL,
            firmware_version varchar(64),
            cpu_pct float8, memory_pct float8, disk_pct float8,
            host_cpu_pct float8, host_memory_pct float8, host_disk_pct float8,
            errors jsonb,
            CONSTRAINT telemetry_pkey PRIMARY KEY (id, ts),
            CONSTRAINT telemetry_message_id_ts_key UNIQUE (message_id, ts)
        ) PARTITION BY RANGE (ts)
        """
    )
    op.execute("ALTER SEQUENCE telemetry_id_seq OWNED BY telemetry.id")
    op.execute("CREATE INDEX telemetry_terminal_ts ON telemetry (terminal_id, ts)")
    op.execute("CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT")
    first = op.get_bind().execute(sa.text("SELECT min(ts) FROM telemetry_unpartitioned")).scalar()
    now = datetime.now(UTC)
    month = date((first or now).year, (first or now).month, 1)
    last = _add_months(date(now.year, now.month, 1), MONTHS_AHEAD)
    while month <= last:
        _partition(month)
        month = _add_months(month, 1)
    op.execute(f"INSERT INTO telemetry ({COLUMNS}) SELECT {COLUMNS} FROM telemetry_unpartitioned")
    op.execute("DROP TABLE telemetry_unpartitioned")


def _unpartition_telemetry() -> None:
    op.execute("ALTER TABLE telemetry RENAME TO telemetry_partitioned")
    op.execute("ALTER TABLE telemetry_partitioned RENAME CONSTRAINT telemetry_pkey TO tp_pkey")
    op.execute("ALTER INDEX telemetry_terminal_ts RENAME TO tp_terminal_ts")
    op.execute(
        """
        CREATE TABLE telemetry (
            id bigint NOT NULL DEFAULT nextval('telemetry_id_seq') PRIMARY KEY,
            terminal_id integer NOT NULL REFERENCES terminal (id),
            message_id varchar(64) NOT NULL UNIQUE,
            ts timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            device_status varchar(32) NOT NULL,
            firmware_version varchar(64),
            cpu_pct float8, memory_pct float8, disk_pct float8,
            host_cpu_pct float8, host_memory_pct float8, host_disk_pct float8,
            errors jsonb
        )
        """
    )
    op.execute("ALTER SEQUENCE telemetry_id_seq OWNED BY telemetry.id")
    op.execute("CREATE INDEX telemetry_terminal_ts ON telemetry (terminal_id, ts)")
    op.execute(
        f"INSERT INTO telemetry ({COLUMNS}) SELECT DISTINCT ON (message_id) {COLUMNS}"
        " FROM telemetry_partitioned ORDER BY message_id, id"
    )
    op.execute("DROP TABLE telemetry_partitioned")


def upgrade() -> None:
    _partition_telemetry()
    op.create_table(
        "telemetry_hourly",
        sa.Column("terminal_id", sa.Integer(), sa.ForeignKey("terminal.id"), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("error_samples", sa.Integer(), nullable=False),
        *(
            sa.Column(name, sa.Float(), nullable=True)
            for name in (
                "cpu_avg",
                "cpu_max",
                "memory_avg",
                "memory_max",
                "disk_avg",
                "disk_max",
                "host_cpu_avg",
                "host_memory_avg",
                "host_disk_avg",
            )
        ),
        sa.PrimaryKeyConstraint("terminal_id", "hour"),
    )
    op.create_table(
        "incident",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.String(length=2000), nullable=False),
        sa.Column("alert_count", sa.Integer(), nullable=False),
        sa.Column(
            "opened_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "last_alert_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_incident_status", "incident", ["status"])
    # Scope says what an alert is about: "terminal:<id>" or "host:<customer id>:<host name>".
    op.add_column(
        "alert", sa.Column("scope", sa.String(length=300), nullable=False, server_default="")
    )
    op.add_column("alert", sa.Column("host_name", sa.String(length=200), nullable=True))
    op.add_column(
        "alert", sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incident.id"), nullable=True)
    )
    op.add_column("alert", sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
    # When TMS raised the alert (first_seen_at is when its cause began).
    op.add_column(
        "alert",
        sa.Column(
            "raised_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("clock_timestamp()"),
        ),
    )
    op.execute("UPDATE alert SET scope = 'terminal:' || terminal_id WHERE terminal_id IS NOT NULL")
    op.create_index(
        "alert_one_open_per_scope",
        "alert",
        ["scope", "kind"],
        unique=True,
        postgresql_where=sa.text("status <> 'resolved'"),
    )
    op.create_index("ix_alert_raised_at", "alert", ["raised_at"])
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("alert_id", sa.Integer(), sa.ForeignKey("alert.id"), nullable=True),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incident.id"), nullable=True),
        sa.Column("route", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=1000), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("notification_outbox_due", "notification_outbox", ["status", "next_attempt_at"])
    op.create_index("ix_notification_outbox_alert_id", "notification_outbox", ["alert_id"])
    op.create_index("ix_notification_outbox_incident_id", "notification_outbox", ["incident_id"])
    op.create_table(
        "heartbeat_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=True, unique=True
        ),
        sa.Column(
            "terminal_id", sa.Integer(), sa.ForeignKey("terminal.id"), nullable=True, unique=True
        ),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint(
            "(customer_id IS NULL) <> (terminal_id IS NULL)", name="heartbeat_policy_one_target"
        ),
        sa.CheckConstraint("interval_s > 0 AND missed >= 1", name="heartbeat_policy_positive"),
    )


def downgrade() -> None:
    op.drop_table("heartbeat_policy")
    op.drop_table("notification_outbox")
    op.drop_index("ix_alert_raised_at", table_name="alert")
    op.drop_index("alert_one_open_per_scope", table_name="alert")
    for column in ("raised_at", "acknowledged_at", "incident_id", "host_name", "scope"):
        op.drop_column("alert", column)
    op.drop_table("incident")
    op.drop_table("telemetry_hourly")
    _unpartition_telemetry()
