"""ledger: chain_heads, the last (number, hash) sealed in each (outlet, series).

Written in the same statement as every seal, so that deleting the newest entries of a chain (its tail)
leaves a head that no remaining entry matches, and `fiscal verify` reports it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE ledger.chain_heads (
        outlet_id uuid NOT NULL REFERENCES ledger.outlets(id),
        series text NOT NULL,
        number bigint NOT NULL CHECK (number > 0),
        hash bytea NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (outlet_id, series)
    );
    INSERT INTO ledger.chain_heads (outlet_id, series, number, hash)
    SELECT DISTINCT ON (outlet_id, series) outlet_id, series, number, hash
    FROM ledger.invoices ORDER BY outlet_id, series, number DESC;
    """)


def downgrade() -> None:
    op.execute("DROP TABLE ledger.chain_heads")
