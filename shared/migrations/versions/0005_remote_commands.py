"""remote commands: the command queue, bulk commands, and the terminal's log

``command`` becomes the queue the sender works from (docs/commands.md): who asked and
from where, attempts and their limit, and ``due_at``, the one time the sender looks
at (when a queued command may go out, or when a sent one's result is overdue), so a
single partial index serves its claim query however long the history grows. Rows
left as ``pending`` by earlier versions (nothing sent them) become ``queued``.

``command_bulk`` is one command for a selection of terminals, paced per customer.
``terminal_log`` keeps device events and command results per terminal, partitioned
by month like telemetry and dropped with it by the retention job. The heartbeat's
``uptime_s`` is stored on the terminal (``model`` already had a column).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Months of terminal_log partitions made now; the retention job keeps making them.
MONTHS_AHEAD = 3


def _add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def _log_partition(month: date) -> None:
    nxt = _add_months(month, 1)
    lo = datetime(month.year, month.month, 1, tzinfo=UTC).isoformat()
    hi = datetime(nxt.year, nxt.month, 1, tzinfo=UTC).isoformat()
    op.execute(
        f"CREATE TABLE IF NOT EXISTS terminal_log_y{month.year:04d}m{month.month:02d}"
        f" PARTITION OF terminal_log FOR VALUES FROM ('{lo}') TO ('{hi}')"
    )


def upgrade() -> None:
    op.create_table(
        "command_bulk",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("args", postgresql.JSONB(), nullable=True),
        sa.Column("selection", postgresql.JSONB(), nullable=True),
        sa.Column("summary", sa.String(500), nullable=False, server_default=""),
        sa.Column("rate_per_s", sa.Float(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by", sa.String(64), nullable=True),
    )
    op.execute("UPDATE command SET status = 'queued' WHERE status = 'pending'")
    op.alter_column("command", "status", server_default="queued")
    add = op.add_column
    add("command", sa.Column("requested_by", sa.String(64), nullable=False, server_default=""))
    # user (console), token (REST API), mqtt (a support script's request), system
    add("command", sa.Column("requester_kind", sa.String(16), nullable=False, server_default=""))
    add("command", sa.Column("token_name", sa.String(100), nullable=True))
    add("command", sa.Column("origin", sa.String(64), nullable=True))
    add("command", sa.Column("request_id", sa.String(64), nullable=True))
    add("command", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    add("command", sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"))
    add("command", sa.Column("timeout_s", sa.Float(), nullable=False, server_default="60"))
    add(
        "command",
        sa.Column(
            "due_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
    )
    add("command", sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True))
    add("command", sa.Column("cancelled_by", sa.String(64), nullable=True))
    add(
        "command",
        sa.Column("bulk_id", sa.Integer(), sa.ForeignKey("command_bulk.id"), nullable=True),
    )
    op.create_index("ix_command_bulk_id", "command", ["bulk_id"])
    op.create_index("ix_command_created_at", "command", ["terminal_id", "created_at"])
    # The sender's claim: only the live rows, in the order they fall due.
    op.create_index(
        "command_due",
        "command",
        ["due_at"],
        postgresql_where=sa.text("status IN ('queued', 'sent')"),
    )
    # A support script that repeats a request (its own retry) gets the one command.
    op.create_index(
        "command_request_once",
        "command",
        ["requested_by", "request_id"],
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.add_column("terminal", sa.Column("uptime_s", sa.BigInteger(), nullable=True))

    op.execute(
        """
        CREATE TABLE terminal_log (
            id bigserial,
            terminal_id integer NOT NULL,
            at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            kind varchar(16) NOT NULL,
            severity varchar(16) NOT NULL DEFAULT 'info',
            code varchar(200),
            message varchar(2000) NOT NULL DEFAULT '',
            source_id varchar(64),
            data jsonb,
            PRIMARY KEY (id, at),
            UNIQUE (kind, source_id, at)
        ) PARTITION BY RANGE (at)
        """
    )
    op.execute("CREATE INDEX terminal_log_terminal_at ON terminal_log (terminal_id, at DESC)")
    op.execute("CREATE TABLE terminal_log_default PARTITION OF terminal_log DEFAULT")
    today = datetime.now(UTC).date().replace(day=1)
    for offset in range(-1, MONTHS_AHEAD + 1):
        _log_partition(_add_months(today, offset))
    # The sender wakes on these; ingest says when a command finished (the relay
    # tells the support script that asked).
    op.execute(
        """
        CREATE FUNCTION tms_command_queued() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('tms_commands', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER command_queued AFTER INSERT ON command"
        " FOR EACH STATEMENT EXECUTE FUNCTION tms_command_queued()"
    )
    # A terminal back online: its waiting commands go out now, not at the next timer.
    # The WHEN clause is evaluated per heartbeat update, the function only on the change.
    op.execute(
        "CREATE TRIGGER terminal_reachable AFTER UPDATE OF status ON terminal FOR EACH ROW"
        " WHEN (NEW.status IN ('online', 'error')"
        " AND OLD.status NOT IN ('online', 'error'))"
        " EXECUTE FUNCTION tms_command_queued()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS terminal_reachable ON terminal")
    op.execute("DROP TRIGGER IF EXISTS command_queued ON command")
    op.execute("DROP FUNCTION IF EXISTS tms_command_queued()")
    op.execute("DROP TABLE terminal_log")
    op.drop_column("terminal", "uptime_s")
    op.drop_index("command_request_once", table_name="command")
    op.drop_index("command_due", table_name="command")
    op.drop_index("ix_command_created_at", table_name="command")
    op.drop_index("ix_command_bulk_id", table_name="command")
    for column in (
        "bulk_id",
        "cancelled_by",
        "last_sent_at",
        "due_at",
        "timeout_s",
        "max_attempts",
        "attempts",
        "request_id",
        "origin",
        "token_name",
        "requester_kind",
        "requested_by",
    ):
        op.drop_column("command", column)
    op.alter_column("command", "status", server_default="pending")
    op.execute("UPDATE command SET status = 'pending' WHERE status = 'queued'")
    op.drop_table("command_bulk")
