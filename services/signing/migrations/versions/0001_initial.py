"""signing.keys: key references and public keys, at most one active.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("kid", sa.Text, primary_key=True),  # RFC 7638 JWK thumbprint, base64url
        sa.Column("backend", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("crv", sa.Text, nullable=False, server_default="P-256"),
        sa.Column("x", sa.Text, nullable=False),
        sa.Column("y", sa.Text, nullable=False),
        # software backend: PKCS#8 PEM encrypted with FISCAL_SOFT_KEYSTORE_PASSPHRASE
        sa.Column("private_pem", sa.LargeBinary, nullable=True),
        # pkcs11 backend: where the private key lives in the token (it never leaves the HSM)
        sa.Column("hsm_label", sa.Text, nullable=True),
        sa.Column("hsm_id", sa.Text, nullable=True),  # CKA_ID, hex
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('active', 'retired')", name="keys_status_check"),
        sa.CheckConstraint("backend IN ('software', 'pkcs11')", name="keys_backend_check"),
        sa.CheckConstraint("(status = 'retired') = (retired_at IS NOT NULL)", name="keys_retired_at_check"),
        sa.CheckConstraint(
            "(backend = 'software' AND private_pem IS NOT NULL)"
            " OR (backend = 'pkcs11' AND hsm_label IS NOT NULL AND private_pem IS NULL)",
            name="keys_reference_check",
        ),
        schema="signing",
    )
    op.create_index(
        "keys_one_active", "keys", ["status"], unique=True, schema="signing",
        postgresql_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_index("keys_one_active", table_name="keys", schema="signing")
    op.drop_table("keys", schema="signing")
