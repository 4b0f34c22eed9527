"""console sessions kept on the server, forced password changes, sign-in throttling

A browser's sign-in becomes a ``console_session`` row (its token's SHA-256), so that
logout, disabling a user and a password change end every session of that user on the
server, not only in the browser that asked. ``must_change_password`` is set by an
admin's password reset. Two partial indexes let the sign-in form count the recent
failures of a username and of an address without scanning the audit trail.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "user_account",
        sa.Column(
            "must_change_password", sa.Boolean(), nullable=False, server_default=sa.text("false")
        ),
    )
    op.create_table(
        "console_session",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("user_account.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(200), nullable=True),
    )
    op.create_index("ix_console_session_user_id", "console_session", ["user_id"])
    op.create_index(
        "ix_audit_login_failed_target",
        "audit_event",
        ["target", "at"],
        postgresql_where=sa.text("action = 'login.failed'"),
    )
    op.create_index(
        "ix_audit_login_failed_addr",
        "audit_event",
        ["remote_addr", "at"],
        postgresql_where=sa.text("action = 'login.failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_login_failed_addr", table_name="audit_event")
    op.drop_index("ix_audit_login_failed_target", table_name="audit_event")
    op.drop_table("console_session")
    op.drop_column("user_account", "must_change_password")
