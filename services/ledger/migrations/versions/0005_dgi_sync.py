"""ledger: dgi_sync, each sealed document's upload to the DGI (issue #10). The sync worker makes a row
when it first finds a sealed document (the seal path never writes here), takes rows under a lease with
FOR UPDATE SKIP LOCKED, and records the DGI's answer. `kind` leaves room for reports.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE ledger.dgi_sync (
        invoice_id uuid PRIMARY KEY,
        seq bigint NOT NULL,
        merchant_id uuid NOT NULL,
        outlet_id uuid NOT NULL,
        kind text NOT NULL,
        status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'synced', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        lease_holder text,
        lease_until timestamptz,
        dgi_uid text NOT NULL DEFAULT '',
        dgi_code text NOT NULL DEFAULT '',
        dgi_counters text NOT NULL DEFAULT '',
        dgi_error_code text,
        reason text NOT NULL DEFAULT '',
        synced_at timestamptz,
        failed_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- The worker's queue: pending rows due, in seal order.
    CREATE INDEX dgi_sync_due ON ledger.dgi_sync (next_attempt_at, seq) WHERE status = 'pending';
    -- Finding sealed documents without a row starts from the highest seq seen.
    CREATE INDEX dgi_sync_seq ON ledger.dgi_sync (seq);
    -- ListInvoices?sync_status=
    CREATE INDEX dgi_sync_merchant_status ON ledger.dgi_sync (merchant_id, status, seq);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE ledger.dgi_sync")
