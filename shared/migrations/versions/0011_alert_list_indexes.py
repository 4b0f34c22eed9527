"""indexes for the Alerts screen's keyset pages

The screen pages alerts newest first by (raised_at, id): the active ones (the default
view) and each incident's members, read on every page and every live refresh. Without
an index on incident_id each incident row read the whole alert table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX alert_active_raised_at_id ON alert (raised_at DESC, id DESC)"
        " WHERE status <> 'resolved'"
    )
    op.execute(
        "CREATE INDEX alert_incident_raised_at_id ON alert (incident_id, raised_at DESC, id DESC)"
        " WHERE incident_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS alert_incident_raised_at_id")
    op.execute("DROP INDEX IF EXISTS alert_active_raised_at_id")
