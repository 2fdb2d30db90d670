"""counter: range leases. The open lease of a counter covers lease_number .. lease_last (a range the
ledger's group commit numbers a batch from); the lease history records the range's last number too.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE counter.counters ADD COLUMN lease_last bigint;
    UPDATE counter.counters SET lease_last = lease_number WHERE lease_number IS NOT NULL;
    ALTER TABLE counter.counters ADD CONSTRAINT counters_lease_range_check
        CHECK (lease_number IS NULL OR (lease_last IS NOT NULL AND lease_last >= lease_number));
    ALTER TABLE counter.leases ADD COLUMN last_number bigint;
    UPDATE counter.leases SET last_number = number;
    ALTER TABLE counter.leases ALTER COLUMN last_number SET NOT NULL;
    """)


def downgrade() -> None:
    op.execute("""
    ALTER TABLE counter.leases DROP COLUMN last_number;
    ALTER TABLE counter.counters DROP CONSTRAINT counters_lease_range_check;
    ALTER TABLE counter.counters DROP COLUMN lease_last;
    """)
