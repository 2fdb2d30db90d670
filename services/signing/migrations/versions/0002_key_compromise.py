"""signing.keys: a `compromised` status with its time and reason; retired_at may lie in the future.

retired_at is now the end of a key's signing window (rotation time + a short grace during which other
replicas may still sign with it), so it can be later than now() for a few seconds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("keys", sa.Column("compromised_at", sa.DateTime(timezone=True), nullable=True), schema="signing")
    op.add_column("keys", sa.Column("compromise_reason", sa.Text, nullable=True), schema="signing")
    op.drop_constraint("keys_status_check", "keys", schema="signing")
    op.drop_constraint("keys_retired_at_check", "keys", schema="signing")
    op.create_check_constraint("keys_status_check", "keys", "status IN ('active', 'retired', 'compromised')",
                               schema="signing")
    op.create_check_constraint("keys_retired_at_check", "keys", "(status = 'active') = (retired_at IS NULL)",
                               schema="signing")
    op.create_check_constraint(
        "keys_compromised_check", "keys",
        "(status = 'compromised') = (compromised_at IS NOT NULL AND compromise_reason IS NOT NULL)",
        schema="signing")


def downgrade() -> None:
    op.execute("UPDATE signing.keys SET status = 'retired' WHERE status = 'compromised'")
    op.drop_constraint("keys_compromised_check", "keys", schema="signing")
    op.drop_constraint("keys_retired_at_check", "keys", schema="signing")
    op.drop_constraint("keys_status_check", "keys", schema="signing")
    op.create_check_constraint("keys_status_check", "keys", "status IN ('active', 'retired')", schema="signing")
    op.create_check_constraint("keys_retired_at_check", "keys", "(status = 'retired') = (retired_at IS NOT NULL)",
                               schema="signing")
    op.drop_column("keys", "compromise_reason", schema="signing")
    op.drop_column("keys", "compromised_at", schema="signing")
