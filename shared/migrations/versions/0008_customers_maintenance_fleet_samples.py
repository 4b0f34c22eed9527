"""customer details, terminal installation and maintenance, fleet samples for uptime

Customers get their contact person, e-mail, phone, contract type and time zone.
Terminals get the date they went into service, a maintenance flag with a note, and when
a person last changed them. ``fleet_sample`` holds, per customer and five-minute
bucket, how many terminals were in each status: the dashboard's uptime and online
charts read it instead of the terminals' history.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, length in (("contact_person", 200), ("email", 254), ("phone", 64)):
        op.add_column(
            "customer", sa.Column(name, sa.String(length), nullable=False, server_default="")
        )
    op.add_column(
        "customer",
        sa.Column("contract_type", sa.String(16), nullable=False, server_default="standard"),
    )
    op.add_column(
        "customer", sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC")
    )
    op.add_column("customer", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        "customer_contract_type", "customer", "contract_type IN ('basic', 'standard', 'premium')"
    )
    op.add_column("terminal", sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "terminal",
        sa.Column("maintenance", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.add_column("terminal", sa.Column("maintenance_note", sa.String(200), nullable=True))
    op.add_column("terminal", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    # What went into service before this migration went in when it was registered.
    op.execute("UPDATE terminal SET installed_at = created_at")
    op.create_table(
        "fleet_sample",
        sa.Column("bucket", sa.DateTime(timezone=True), primary_key=True),
        sa.Column(
            "customer_id",
            sa.Integer(),
            sa.ForeignKey("customer.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("in_service", "online", "offline", "error", "unknown", "maintenance")
        ),
    )
    op.create_index("ix_fleet_sample_customer_id", "fleet_sample", ["customer_id"])


def downgrade() -> None:
    op.drop_table("fleet_sample")
    for name in ("updated_at", "maintenance_note", "maintenance", "installed_at"):
        op.drop_column("terminal", name)
    op.drop_constraint("customer_contract_type", "customer")
    for name in ("updated_at", "timezone", "contract_type", "phone", "email", "contact_person"):
        op.drop_column("customer", name)
