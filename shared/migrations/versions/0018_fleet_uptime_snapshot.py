"""the fleet's monthly uptime kept as a snapshot

The fleet report worked out every terminal's uptime from its status changes at each
view: 1.1 s of SQL at 100,000 terminals. Ingest now keeps the month's figures here
(shared.uptime_snapshot) and the console reads them.

The snapshot holds names, and sums made by the terminals' present customers, stores and
dates of service, as a report worked out now would. Triggers forget every month's
snapshot when one of those changes (a rename, a move, a terminal deleted), so the next
view works the month out again; a heartbeat changes none of them and fires nothing.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_uptime_snapshot",
        sa.Column("month", sa.String(length=7), primary_key=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("through", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", JSONB(), nullable=False),
        sa.Column("stores", JSONB(), nullable=False),
    )


    op.execute(
        """
        CREATE FUNCTION forget_fleet_uptime() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM fleet_uptime_snapshot;
            RETURN NULL;
        END $$;

        CREATE TRIGGER terminal_forgets_fleet_uptime
        AFTER UPDATE OF customer_id, store_id, installed_at, decommissioned_at, serial,
                        created_at ON terminal
        FOR EACH ROW
        WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id
              OR OLD.store_id IS DISTINCT FROM NEW.store_id
              OR OLD.installed_at IS DISTINCT FROM NEW.installed_at
              OR OLD.decommissioned_at IS DISTINCT FROM NEW.decommissioned_at
              OR OLD.serial IS DISTINCT FROM NEW.serial
              OR OLD.created_at IS DISTINCT FROM NEW.created_at)
        EXECUTE FUNCTION forget_fleet_uptime();

        CREATE TRIGGER terminal_deleted_forgets_fleet_uptime
        AFTER DELETE ON terminal
        FOR EACH STATEMENT EXECUTE FUNCTION forget_fleet_uptime();

        CREATE TRIGGER customer_forgets_fleet_uptime
        AFTER UPDATE OF name ON customer
        FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
        EXECUTE FUNCTION forget_fleet_uptime();

        CREATE TRIGGER store_forgets_fleet_uptime
        AFTER UPDATE OF code, name, customer_id ON store
        FOR EACH ROW
        WHEN (OLD.code IS DISTINCT FROM NEW.code OR OLD.name IS DISTINCT FROM NEW.name
              OR OLD.customer_id IS DISTINCT FROM NEW.customer_id)
        EXECUTE FUNCTION forget_fleet_uptime();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER store_forgets_fleet_uptime ON store;
        DROP TRIGGER customer_forgets_fleet_uptime ON customer;
        DROP TRIGGER terminal_deleted_forgets_fleet_uptime ON terminal;
        DROP TRIGGER terminal_forgets_fleet_uptime ON terminal;
        DROP FUNCTION forget_fleet_uptime();
        """
    )
    op.drop_table("fleet_uptime_snapshot")
