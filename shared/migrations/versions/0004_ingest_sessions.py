"""the broker sessions ingest has used, so that retired workers' sessions are drained

An ingest worker keeps a persistent session at the broker, and Mosquitto keeps
routing a share of a shared subscription's messages to a member that is offline.
After ``workers`` is lowered, the sessions of the workers no longer started would
hold their share for good (until the broker's queue limit drops them). Each worker
records its client id here; worker 0 drains and removes the sessions that are not
part of the current set (ingest/sessions.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_session",
        sa.Column("client_id", sa.String(length=128), primary_key=True),
        sa.Column(
            "registered_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
    )


def downgrade() -> None:
    op.drop_table("ingest_session")
