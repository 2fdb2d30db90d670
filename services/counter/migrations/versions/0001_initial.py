"""counter.counters (one row per (outlet, series), with its open lease) and counter.leases (history).

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("outlet_id", sa.Text, primary_key=True),
        sa.Column("series", sa.Text, primary_key=True),
        sa.Column("last_committed", sa.BigInteger, nullable=False, server_default="0"),
        # The one open lease (at most one per counter: that is what keeps the numbers gapless).
        sa.Column("lease_id", postgresql.UUID(as_uuid=False), nullable=True),
        sa.Column("lease_number", sa.BigInteger, nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_holder", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("last_committed >= 0", name="counters_last_committed_check"),
        sa.CheckConstraint(
            "(lease_id IS NULL AND lease_number IS NULL AND lease_expires_at IS NULL)"
            " OR (lease_id IS NOT NULL AND lease_number IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="counters_lease_check",
        ),
        schema="counter",
    )
    op.create_index("counters_lease_id_key", "counters", ["lease_id"], unique=True, schema="counter",
                    postgresql_where=sa.text("lease_id IS NOT NULL"))
    op.create_table(
        "leases",
        sa.Column("lease_id", postgresql.UUID(as_uuid=False), primary_key=True),
        sa.Column("outlet_id", sa.Text, nullable=False),
        sa.Column("series", sa.Text, nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.CheckConstraint("status IN ('open', 'committed', 'released', 'expired')", name="leases_status_check"),
        schema="counter",
    )
    op.create_index("leases_counter_idx", "leases", ["outlet_id", "series", "number"], schema="counter")


def downgrade() -> None:
    op.drop_table("leases", schema="counter")
    op.drop_table("counters", schema="counter")
