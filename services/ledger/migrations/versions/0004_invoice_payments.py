"""ledger: invoice_payments, the mobile-money payments the payments service records against invoices
(issue #9). Not part of any signed body: GetInvoice/ListInvoices join them by (outlet_id,
client_invoice_id), so a payment recorded before its sale is sealed (an offline till) shows once it is.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE ledger.invoice_payments (
        payment_id text PRIMARY KEY,
        merchant_id uuid NOT NULL,
        outlet_id uuid NOT NULL,
        client_invoice_id text NOT NULL,
        invoice_id uuid,
        method text NOT NULL,
        provider_reference text NOT NULL DEFAULT '',
        amount numeric(20, 3) NOT NULL,
        currency varchar(3) NOT NULL,
        phone_masked text NOT NULL DEFAULT '',
        status text NOT NULL,
        confirmed_at timestamptz,
        amount_mismatch boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- The read side's one query per page: every payment of these (outlet, client_invoice_id) pairs.
    CREATE INDEX invoice_payments_sale ON ledger.invoice_payments (outlet_id, client_invoice_id);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE ledger.invoice_payments")
