"""trigram indexes for the console's terminal search

The terminal list searches serials and store PC host names by substring
(``ILIKE '%x%'``); at 100,000 terminals a B-tree cannot help and every search read the
whole table. pg_trgm's GIN indexes answer it from the index. pg_trgm ships with
PostgreSQL (Debian's postgresql-15) and is a trusted extension: the database owner may
create it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        "CREATE INDEX ix_terminal_serial_trgm ON terminal USING gin (serial gin_trgm_ops)"
    )
    op.execute(
        "CREATE INDEX ix_terminal_host_trgm ON terminal USING gin (host_name gin_trgm_ops)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_terminal_host_trgm")
    op.execute("DROP INDEX IF EXISTS ix_terminal_serial_trgm")
