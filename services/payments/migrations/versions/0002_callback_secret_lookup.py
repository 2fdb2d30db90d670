"""payments.payments.callback_secret_lookup: how a callback that names no request of ours finds its
payment. Orange Money's notification carries only its notif_token: the payment is looked up by the
token's SHA-256 (hex, set at initiation next to the sealed token), then authenticated against the
sealed token itself.

payments.payments.attach_checks: a payment recorded against a sale the ledger has not sealed yet (an
offline till) is recorded again, less and less often, until the ledger names its invoice.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE payments.payments ADD COLUMN callback_secret_lookup text NOT NULL DEFAULT '';
    ALTER TABLE payments.payments ADD COLUMN attach_checks integer NOT NULL DEFAULT 0;
    CREATE INDEX payments_callback_secret_idx ON payments.payments (provider, callback_secret_lookup)
        WHERE callback_secret_lookup <> '';
    """)


def downgrade() -> None:
    op.execute("""
    DROP INDEX payments.payments_callback_secret_idx;
    ALTER TABLE payments.payments DROP COLUMN attach_checks;
    ALTER TABLE payments.payments DROP COLUMN callback_secret_lookup;
    """)
