"""the sweep looks only at terminals that are due: two due times on the terminal row

At 100,000 terminals the one-second sweep read the whole fleet every time: every
online terminal for missed heartbeats, every offline one with its store PC and every
open alert for the status alert rules (31% of a core for ingest, 10% for PostgreSQL,
with no traffic at all). Now each terminal says when it is next due:

- ``offline_due_at``: not before this time can an online (or error) terminal have
  missed its heartbeats. The sweep sets it from the last message and the heartbeat
  policy when it looks, and looks again only once it has passed; NULL means "not
  worked out yet". Heartbeats never write it: their update stays HOT (migration
  0003), and since the last message only ever moves later, a stored time is never
  later than the real deadline. Indexed only while online or in error.
- ``alert_check_at``: when the status alert rules must next look at the terminal and
  its store PC. A trigger sets it to now() whenever the status or status_changed_at
  changes, whoever writes them (ingest, the sweep, the registry); the sweep sets it to
  the next age at which a rule could decide otherwise (for_s, group_wait_s,
  clear_for_s), or NULL when none is ahead. The trigger fires only for statements that
  set those columns, so never for a heartbeat's update. Indexed only while set.

Also: a terminal's store PC by ``(customer_id, host_name)`` (the sweep plans a PC's
terminals together), open alerts by kind (alerts other processes raise, waiting for
their notifications), and resolved alerts by ``resolved_at`` (one resolved by a person
while its terminal is still down is raised again, as before).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
OFFLINE_DUE = "COALESCE(offline_due_at, '-infinity'::timestamptz)"


def upgrade() -> None:
    op.add_column("terminal", sa.Column("offline_due_at", _TS, nullable=True))
    op.add_column("terminal", sa.Column("alert_check_at", _TS, nullable=True))
    op.execute(
        f"CREATE INDEX ix_terminal_offline_due ON terminal (({OFFLINE_DUE}))"
        " WHERE status IN ('online', 'error')"
    )
    op.create_index(
        "ix_terminal_alert_check",
        "terminal",
        ["alert_check_at"],
        postgresql_where=sa.text("alert_check_at IS NOT NULL"),
    )
    op.create_index(
        "ix_terminal_customer_host",
        "terminal",
        ["customer_id", "host_name"],
        postgresql_where=sa.text("host_name IS NOT NULL"),
    )
    op.create_index(
        "ix_alert_open_kind", "alert", ["kind"], postgresql_where=sa.text("status <> 'resolved'")
    )
    op.create_index(
        "ix_alert_resolved_at",
        "alert",
        ["resolved_at"],
        postgresql_where=sa.text("resolved_at IS NOT NULL"),
    )
    op.execute(
        """
        CREATE FUNCTION tms_terminal_alert_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.alert_check_at := now();
            RETURN NEW;
        END $$
        """
    )
    # Two triggers: an INSERT has no OLD row for the WHEN clause to compare.
    op.execute(
        "CREATE TRIGGER terminal_alert_check_new BEFORE INSERT ON terminal FOR EACH ROW"
        " WHEN (NEW.status <> 'unknown') EXECUTE FUNCTION tms_terminal_alert_check()"
    )
    op.execute(
        "CREATE TRIGGER terminal_alert_check BEFORE UPDATE OF status, status_changed_at"
        " ON terminal FOR EACH ROW"
        " WHEN (NEW.status IS DISTINCT FROM OLD.status"
        " OR NEW.status_changed_at IS DISTINCT FROM OLD.status_changed_at)"
        " EXECUTE FUNCTION tms_terminal_alert_check()"
    )
    # Every terminal is looked at once by ingest's first sweep after a start; nothing
    # is backfilled here, so the upgrade does not rewrite a big fleet's rows.


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS terminal_alert_check ON terminal")
    op.execute("DROP TRIGGER IF EXISTS terminal_alert_check_new ON terminal")
    op.execute("DROP FUNCTION IF EXISTS tms_terminal_alert_check()")
    op.drop_index("ix_alert_resolved_at", table_name="alert")
    op.drop_index("ix_alert_open_kind", table_name="alert")
    op.drop_index("ix_terminal_customer_host", table_name="terminal")
    op.drop_index("ix_terminal_alert_check", table_name="terminal")
    op.execute("DROP INDEX IF EXISTS ix_terminal_offline_due")
    op.drop_column("terminal", "alert_check_at")
    op.drop_column("terminal", "offline_due_at")
