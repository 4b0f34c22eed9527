"""terminals counted per customer, status and maintenance, kept by triggers

The dashboard counted the fleet with a GROUP BY over the terminal table at every
refresh: 100,000 rows, the larger part of its 150 ms budget, for figures that change
only when a terminal's status, maintenance flag or customer does. ``terminal_count``
holds signed changes of those counts instead: triggers add a row for each statement
that inserts or deletes terminals (summed per key from its transition table) and two
for each terminal whose counted columns an update changes (-1 under the old key, +1
under the new). A count is the sum of its key's rows.

Rows are only ever added by the triggers, so concurrent writers never wait for each
other on a shared counter row (ingest's status batches and the sweep would otherwise
lock per-customer rows in different orders). Ingest folds them back to one row per key
every few minutes (shared.terminal_counts.SQL_COMPACT). A heartbeat's update sets none
of the counted columns and fires nothing.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "terminal_count",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("maintenance", sa.Boolean(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.execute(
        """
        CREATE FUNCTION tms_terminal_count_added() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO terminal_count (customer_id, status, maintenance, n)
            SELECT customer_id, status, maintenance, count(*) FROM counted_rows
            GROUP BY customer_id, status, maintenance;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION tms_terminal_count_removed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO terminal_count (customer_id, status, maintenance, n)
            SELECT customer_id, status, maintenance, -count(*) FROM counted_rows
            GROUP BY customer_id, status, maintenance;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION tms_terminal_count_moved() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO terminal_count (customer_id, status, maintenance, n) VALUES
                (OLD.customer_id, OLD.status, OLD.maintenance, -1),
                (NEW.customer_id, NEW.status, NEW.maintenance, 1);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION tms_terminal_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM terminal_count;
            RETURN NULL;
        END $$
        """
    )
    # A transition table cannot serve a trigger of several events, nor one with a column
    # list: inserts and deletes get one each, an update one row trigger that fires only
    # when a counted column really changes.
    op.execute(
        "CREATE TRIGGER terminal_count_added AFTER INSERT ON terminal"
        " REFERENCING NEW TABLE AS counted_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION tms_terminal_count_added()"
    )
    op.execute(
        "CREATE TRIGGER terminal_count_removed AFTER DELETE ON terminal"
        " REFERENCING OLD TABLE AS counted_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION tms_terminal_count_removed()"
    )
    op.execute(
        "CREATE TRIGGER terminal_count_moved AFTER UPDATE OF customer_id, status, maintenance"
        " ON terminal FOR EACH ROW"
        " WHEN (NEW.customer_id IS DISTINCT FROM OLD.customer_id"
        " OR NEW.status IS DISTINCT FROM OLD.status"
        " OR NEW.maintenance IS DISTINCT FROM OLD.maintenance)"
        " EXECUTE FUNCTION tms_terminal_count_moved()"
    )
    op.execute(
        "CREATE TRIGGER terminal_count_truncated AFTER TRUNCATE ON terminal"
        " FOR EACH STATEMENT EXECUTE FUNCTION tms_terminal_count_truncated()"
    )
    # The fleet as it is, counted once with writers kept out until the triggers exist.
    op.execute("LOCK TABLE terminal IN SHARE MODE")
    op.execute(
        "INSERT INTO terminal_count (customer_id, status, maintenance, n)"
        " SELECT customer_id, status, maintenance, count(*) FROM terminal"
        " GROUP BY customer_id, status, maintenance"
    )


def downgrade() -> None:
    for trigger in ("added", "removed", "moved", "truncated"):
        op.execute(f"DROP TRIGGER IF EXISTS terminal_count_{trigger} ON terminal")
        op.execute(f"DROP FUNCTION IF EXISTS tms_terminal_count_{trigger}()")
    op.drop_table("terminal_count")
