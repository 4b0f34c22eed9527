"""the firmware library: the models an image fits, its signature, its state

Images are files in the firmware store named by their SHA-256; the table says what each
is: the models it fits (JSON list), the Ed25519 signature of its manifest and the id of
the key that made it, draft -> released -> deprecated with who and when.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("firmware", sa.Column("models", JSONB(), nullable=True))
    op.add_column(
        "firmware",
        sa.Column("signature", sa.String(length=200), nullable=False, server_default=""),
    )
    op.add_column(
        "firmware", sa.Column("key_id", sa.String(length=32), nullable=False, server_default="")
    )
    op.add_column(
        "firmware",
        sa.Column("state", sa.String(length=16), nullable=False, server_default="draft"),
    )
    op.add_column(
        "firmware",
        sa.Column("created_by", sa.String(length=200), nullable=False, server_default=""),
    )
    op.add_column("firmware", sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("firmware", sa.Column("released_by", sa.String(length=200), nullable=True))
    op.add_column(
        "firmware", sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_firmware_state", "firmware", ["state"])


def downgrade() -> None:
    op.drop_index("ix_firmware_state", table_name="firmware")
    for column in (
        "deprecated_at", "released_by", "released_at", "created_by", "state", "key_id",
        "signature", "models",
    ):  # fmt: skip
        op.drop_column("firmware", column)
