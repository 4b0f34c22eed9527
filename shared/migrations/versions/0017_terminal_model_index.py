"""terminals by model: the list's model filter and its box of models

The terminal list offers the fleet's models in a filter box; without an index that was a
DISTINCT over every terminal (38 ms at 100,000, at each page view). With it, the box is
a loose index scan (console.fleet.distinct_values), one probe per model, and the filter
an index range. A heartbeat writes the model it already has, so its update stays HOT.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_terminal_model", "terminal", ["model"])


def downgrade() -> None:
    op.drop_index("ix_terminal_model", table_name="terminal")
