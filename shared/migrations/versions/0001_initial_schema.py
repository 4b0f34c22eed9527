"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_audit_event_action'), 'audit_event', ['action'], unique=False)
    op.create_index(op.f('ix_audit_event_at'), 'audit_event', ['at'], unique=False)
    op.create_table('customer',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('dead_letter',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('topic', sa.String(length=1024), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.String(length=2000), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_dead_letter_reason'), 'dead_letter', ['reason'], unique=False)
    op.create_index(op.f('ix_dead_letter_received_at'), 'dead_letter', ['received_at'], unique=False)
    op.create_table('firmware',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('notes', sa.String(length=4000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('version')
    )
    op.create_table('user_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_api_token_user_id'), 'api_token', ['user_id'], unique=False)
    op.create_table('store',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('customer_id', 'code')
    )
    op.create_index(op.f('ix_store_customer_id'), 'store', ['customer_id'], unique=False)
    op.create_table('terminal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('store_id', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('status_reason', sa.String(length=200), nullable=True),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('device_status', sa.String(length=32), nullable=True),
    sa.Column('firmware_version', sa.String(length=64), nullable=True),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cpu_pct', sa.Float(), nullable=True),
    sa.Column('memory_pct', sa.Float(), nullable=True),
    sa.Column('disk_pct', sa.Float(), nullable=True),
    sa.Column('host_name', sa.String(length=200), nullable=True),
    sa.Column('host_cpu_pct', sa.Float(), nullable=True),
    sa.Column('host_memory_pct', sa.Float(), nullable=True),
    sa.Column('host_disk_pct', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('decommissioned_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['store_id'], ['store.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('serial')
    )
    op.create_index(op.f('ix_terminal_customer_id'), 'terminal', ['customer_id'], unique=False)
    op.create_index(op.f('ix_terminal_firmware_version'), 'terminal', ['firmware_version'], unique=False)
    op.create_index(op.f('ix_terminal_last_heartbeat_at'), 'terminal', ['last_heartbeat_at'], unique=False)
    op.create_index(op.f('ix_terminal_status'), 'terminal', ['status'], unique=False)
    op.create_index(op.f('ix_terminal_store_id'), 'terminal', ['store_id'], unique=False)
    op.create_table('alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('terminal_id', sa.Integer(), nullable=True),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message', sa.String(length=2000), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('acknowledged_by', sa.Integer(), nullable=True),
    sa.Column('assignee_id', sa.Integer(), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution_note', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['acknowledged_by'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['assignee_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminal.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('alert_one_open_per_kind', 'alert', ['terminal_id', 'kind'], unique=True, postgresql_where=sa.text("status <> 'resolved'"))
    op.create_index(op.f('ix_alert_customer_id'), 'alert', ['customer_id'], unique=False)
    op.create_index(op.f('ix_alert_status'), 'alert', ['status'], unique=False)
    op.create_index(op.f('ix_alert_terminal_id'), 'alert', ['terminal_id'], unique=False)
    op.create_table('command',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('terminal_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminal.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_command_status'), 'command', ['status'], unique=False)
    op.create_index(op.f('ix_command_terminal_id'), 'command', ['terminal_id'], unique=False)
    op.create_table('credential',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('terminal_id', sa.Integer(), nullable=True),
    sa.Column('salt', sa.String(length=64), nullable=False),
    sa.Column('secret_hash', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminal.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_index(op.f('ix_credential_terminal_id'), 'credential', ['terminal_id'], unique=False)
    op.create_table('status_change',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('terminal_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('old_status', sa.String(length=32), nullable=True),
    sa.Column('new_status', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminal.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_status_change_terminal_id'), 'status_change', ['terminal_id'], unique=False)
    op.create_table('telemetry',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('terminal_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('device_status', sa.String(length=32), nullable=False),
    sa.Column('firmware_version', sa.String(length=64), nullable=True),
    sa.Column('cpu_pct', sa.Float(), nullable=True),
    sa.Column('memory_pct', sa.Float(), nullable=True),
    sa.Column('disk_pct', sa.Float(), nullable=True),
    sa.Column('host_cpu_pct', sa.Float(), nullable=True),
    sa.Column('host_memory_pct', sa.Float(), nullable=True),
    sa.Column('host_disk_pct', sa.Float(), nullable=True),
    sa.Column('errors', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminal.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    op.create_index('telemetry_terminal_ts', 'telemetry', ['terminal_id', 'ts'], unique=False)
    op.create_table('update_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('firmware_id', sa.Integer(), nullable=False),
    sa.Column('terminal_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('progress_pct', sa.Float(), nullable=False),
    sa.Column('error', sa.String(length=2000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['firmware_id'], ['firmware.id'], ),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminal.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_update_task_firmware_id'), 'update_task', ['firmware_id'], unique=False)
    op.create_index(op.f('ix_update_task_status'), 'update_task', ['status'], unique=False)
    op.create_index(op.f('ix_update_task_terminal_id'), 'update_task', ['terminal_id'], unique=False)

    # Any change to broker accounts wakes the broker service, which rewrites its
    # password and ACL files and reloads them, so a revoke takes effect in seconds.
    op.execute(
        """
        CREATE FUNCTION tms_notify_credentials() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('tms_credentials', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER credential_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
        " ON credential FOR EACH STATEMENT EXECUTE FUNCTION tms_notify_credentials()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS credential_changed ON credential")
    op.execute("DROP FUNCTION IF EXISTS tms_notify_credentials()")
    op.drop_index(op.f('ix_update_task_terminal_id'), table_name='update_task')
    op.drop_index(op.f('ix_update_task_status'), table_name='update_task')
    op.drop_index(op.f('ix_update_task_firmware_id'), table_name='update_task')
    op.drop_table('update_task')
    op.drop_index('telemetry_terminal_ts', table_name='telemetry')
    op.drop_table('telemetry')
    op.drop_index(op.f('ix_status_change_terminal_id'), table_name='status_change')
    op.drop_table('status_change')
    op.drop_index(op.f('ix_credential_terminal_id'), table_name='credential')
    op.drop_table('credential')
    op.drop_index(op.f('ix_command_terminal_id'), table_name='command')
    op.drop_index(op.f('ix_command_status'), table_name='command')
    op.drop_table('command')
    op.drop_index(op.f('ix_alert_terminal_id'), table_name='alert')
    op.drop_index(op.f('ix_alert_status'), table_name='alert')
    op.drop_index(op.f('ix_alert_customer_id'), table_name='alert')
    op.drop_index('alert_one_open_per_kind', table_name='alert', postgresql_where=sa.text("status <> 'resolved'"))
    op.drop_table('alert')
    op.drop_index(op.f('ix_terminal_store_id'), table_name='terminal')
    op.drop_index(op.f('ix_terminal_status'), table_name='terminal')
    op.drop_index(op.f('ix_terminal_last_heartbeat_at'), table_name='terminal')
    op.drop_index(op.f('ix_terminal_firmware_version'), table_name='terminal')
    op.drop_index(op.f('ix_terminal_customer_id'), table_name='terminal')
    op.drop_table('terminal')
    op.drop_index(op.f('ix_store_customer_id'), table_name='store')
    op.drop_table('store')
    op.drop_index(op.f('ix_api_token_user_id'), table_name='api_token')
    op.drop_table('api_token')
    op.drop_table('user_account')
    op.drop_table('firmware')
    op.drop_index(op.f('ix_dead_letter_received_at'), table_name='dead_letter')
    op.drop_index(op.f('ix_dead_letter_reason'), table_name='dead_letter')
    op.drop_table('dead_letter')
    op.drop_table('customer')
    op.drop_index(op.f('ix_audit_event_at'), table_name='audit_event')
    op.drop_index(op.f('ix_audit_event_action'), table_name='audit_event')
    op.drop_table('audit_event')
