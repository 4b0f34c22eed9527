"""message sequence numbers: each terminal's stream, the gaps in it, and what was repaired

An agent numbers what it publishes (heartbeats, events, command results) per stream (one
stream per agent store: a reinstalled agent starts a new one, named so that a later
stream sorts after an earlier one). Ingest keeps, on the terminal row it already locks
per batch, the newest stream and the highest number written, and counts the numbers it
found missing, got back, and gave up on. ``seq_gap`` holds the ranges still missing:
ingest asks the agent to send them again (a ``resend`` command) until they arrive or
the agent says it no longer has them (docs/ingest.md, "Nothing lost").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COUNTERS = ("seq_gaps_found", "seq_missing", "seq_recovered", "seq_lost")


def upgrade() -> None:
    # Not indexed, so the heartbeat's update of the row stays HOT (migration 0003).
    op.add_column("terminal", sa.Column("seq_stream", sa.String(32), nullable=True))
    op.add_column("terminal", sa.Column("seq_high", sa.BigInteger(), nullable=True))
    for name in _COUNTERS:
        op.add_column(
            "terminal", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "seq_gap",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "terminal_id",
            sa.Integer(),
            sa.ForeignKey("terminal.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("stream", sa.String(32), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("command_id", sa.String(64), nullable=True),
        sa.CheckConstraint("first_seq >= 1 AND first_seq <= last_seq", name="seq_gap_range"),
    )
    op.create_index("ix_seq_gap_terminal", "seq_gap", ["terminal_id", "stream", "first_seq"])
    op.create_index("ix_seq_gap_found_at", "seq_gap", ["found_at"])


def downgrade() -> None:
    op.drop_table("seq_gap")
    for name in (*_COUNTERS, "seq_high", "seq_stream"):
        op.drop_column("terminal", name)
