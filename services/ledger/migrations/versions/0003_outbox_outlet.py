"""ledger: outbox.outlet_id, the outlet an event is about (NULL for none), so the outbox relay can
publish it without reading the payload, and webhook endpoints can filter on it.

Filled by every insert from now on; older rows get it from their payload's "outlet_id" (a malformed or
missing value leaves NULL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def upgrade() -> None:
    op.execute("ALTER TABLE ledger.outbox ADD COLUMN outlet_id uuid")
    op.execute(f"""
    UPDATE ledger.outbox SET outlet_id = (payload->>'outlet_id')::uuid
    WHERE outlet_id IS NULL AND payload->>'outlet_id' ~ '{UUID_PATTERN}'
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE ledger.outbox DROP COLUMN outlet_id")
