"""staged rollouts: the rollout and its waves, one task per terminal, terminal tags and
each store's maintenance window

``update_task`` existed since 0001 but nothing wrote it; its rows (none in practice) are
dropped and the table becomes one terminal's part in one rollout: its wave, state,
attempts and the time before which it is not retried, the firmware command in flight,
the versions before and after, and the failure in one word and in a sentence.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "terminal",
        sa.Column(
            "tags", ARRAY(sa.String(length=64)), nullable=False, server_default=sa.text("'{}'")
        ),
    )
    # Rollout targets ask "carries every one of these tags": an array containment (@>).
    op.create_index("ix_terminal_tags", "terminal", ["tags"], postgresql_using="gin")
    op.add_column("store", sa.Column("maintenance_window", sa.String(length=100), nullable=True))

    op.create_table(
        "rollout",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("firmware_id", sa.Integer(), sa.ForeignKey("firmware.id"), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False, server_default="running"),
        sa.Column("target", JSONB(), nullable=False),
        sa.Column("policy", JSONB(), nullable=False),
        sa.Column("wave_spec", sa.String(length=200), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("excluded", JSONB(), nullable=True),
        sa.Column("halt_reason", sa.String(length=2000), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("finished_at", _TS, nullable=True),
    )
    op.create_index("ix_rollout_firmware_id", "rollout", ["firmware_id"])
    op.create_index("ix_rollout_state", "rollout", ["state"])
    op.create_table(
        "rollout_wave",
        sa.Column(
            "rollout_id",
            sa.Integer(),
            sa.ForeignKey("rollout.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("approved_at", _TS, nullable=True),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
    )

    op.execute("DELETE FROM update_task")
    op.drop_index("ix_update_task_status", table_name="update_task")
    op.drop_column("update_task", "progress_pct")
    op.drop_column("update_task", "error")
    op.drop_column("update_task", "status")
    op.add_column(
        "update_task",
        sa.Column(
            "rollout_id",
            sa.Integer(),
            sa.ForeignKey("rollout.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.add_column("update_task", sa.Column("wave", sa.Integer(), nullable=False))
    op.add_column(
        "update_task",
        sa.Column("state", sa.String(length=32), nullable=False, server_default="queued"),
    )
    op.add_column(
        "update_task",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("update_task", sa.Column("retry_at", _TS, nullable=True))
    op.add_column("update_task", sa.Column("command_id", sa.String(length=64), nullable=True))
    # True while the command in flight only downloads (the store's window was closed).
    op.add_column(
        "update_task",
        sa.Column("download_only", sa.Boolean(), nullable=False, server_default="false"),
    )
    op.add_column("update_task", sa.Column("percent", sa.Float(), nullable=True))
    op.add_column("update_task", sa.Column("from_version", sa.String(length=64), nullable=True))
    op.add_column("update_task", sa.Column("version_after", sa.String(length=64), nullable=True))
    op.add_column("update_task", sa.Column("failure", sa.String(length=64), nullable=True))
    op.add_column("update_task", sa.Column("reason", sa.String(length=2000), nullable=True))
    op.add_column("update_task", sa.Column("started_at", _TS, nullable=True))
    op.add_column("update_task", sa.Column("finished_at", _TS, nullable=True))
    op.create_unique_constraint(
        "uq_update_task_rollout_terminal", "update_task", ["rollout_id", "terminal_id"]
    )
    op.create_index(
        "ix_update_task_rollout_wave_state", "update_task", ["rollout_id", "wave", "state"]
    )
    op.create_index("ix_update_task_command_id", "update_task", ["command_id"])


def downgrade() -> None:
    op.drop_index("ix_update_task_command_id", table_name="update_task")
    op.drop_index("ix_update_task_rollout_wave_state", table_name="update_task")
    op.drop_constraint("uq_update_task_rollout_terminal", "update_task")
    op.execute("DELETE FROM update_task")
    for column in (
        "finished_at", "started_at", "reason", "failure", "version_after", "from_version",
        "percent", "download_only", "command_id", "retry_at", "attempts", "state", "wave",
        "rollout_id",
    ):  # fmt: skip
        op.drop_column("update_task", column)
    op.add_column(
        "update_task",
        sa.Column("status", sa.String(length=32), nullable=False, server_default="pending"),
    )
    op.add_column("update_task", sa.Column("error", sa.String(length=2000), nullable=True))
    op.add_column(
        "update_task",
        sa.Column("progress_pct", sa.Float(), nullable=False, server_default="0"),
    )
    op.create_index("ix_update_task_status", "update_task", ["status"])
    op.drop_table("rollout_wave")
    op.drop_index("ix_rollout_state", table_name="rollout")
    op.drop_index("ix_rollout_firmware_id", table_name="rollout")
    op.drop_table("rollout")
    op.drop_column("store", "maintenance_window")
    op.drop_index("ix_terminal_tags", table_name="terminal")
    op.drop_column("terminal", "tags")
