"""indexes for reading the audit trail by target

A terminal's page lists the audit rows that name its serial, newest first; without an
index that read walked the whole trail backwards for a terminal nobody had touched.
The audit page's target search is a substring search: a trigram index answers it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index("ix_audit_target_id", "audit_event", ["target", "id"])
    op.execute(
        "CREATE INDEX ix_audit_target_trgm ON audit_event USING gin (target gin_trgm_ops)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_audit_target_trgm")
    op.drop_index("ix_audit_target_id", table_name="audit_event")
