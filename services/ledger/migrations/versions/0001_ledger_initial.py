"""ledger: tenancy, API keys, invoices with their hash chain, terminals, the event outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE ledger.merchants (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE ledger.outlets (
        id uuid PRIMARY KEY,
        merchant_id uuid NOT NULL REFERENCES ledger.merchants(id),
        code text NOT NULL UNIQUE,
        name text NOT NULL,
        taxpayer_id text NOT NULL,
        currency char(3) NOT NULL,
        time_zone text NOT NULL DEFAULT 'UTC',
        address text NOT NULL DEFAULT '',
        offline_grace_seconds integer NOT NULL DEFAULT 259200,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX outlets_merchant ON ledger.outlets (merchant_id);
    CREATE TABLE ledger.tax_groups (
        merchant_id uuid NOT NULL REFERENCES ledger.merchants(id),
        code text NOT NULL,
        label text NOT NULL,
        rate numeric(6, 3),            -- NULL: exempt
        PRIMARY KEY (merchant_id, code)
    );
    CREATE TABLE ledger.cashiers (
        outlet_id uuid NOT NULL REFERENCES ledger.outlets(id),
        cashier_id text NOT NULL,
        name text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (outlet_id, cashier_id)
    );
    CREATE TABLE ledger.terminals (
        outlet_id uuid NOT NULL REFERENCES ledger.outlets(id),
        pos_terminal_id text NOT NULL,
        first_seen_at timestamptz NOT NULL DEFAULT now(),
        last_seen_at timestamptz NOT NULL DEFAULT now(),
        last_cashier_id text NOT NULL DEFAULT '',
        last_seal_at timestamptz,
        last_heartbeat_at timestamptz,
        draft_count integer NOT NULL DEFAULT 0,
        oldest_draft_age_seconds bigint NOT NULL DEFAULT 0,
        rejected_count integer NOT NULL DEFAULT 0,
        state text NOT NULL DEFAULT '',
        sdk_version text NOT NULL DEFAULT '',
        PRIMARY KEY (outlet_id, pos_terminal_id)
    );
    CREATE TABLE ledger.api_keys (
        id uuid PRIMARY KEY,
        merchant_id uuid NOT NULL REFERENCES ledger.merchants(id),
        outlet_id uuid REFERENCES ledger.outlets(id),
        scope text NOT NULL CHECK (scope IN ('merchant:admin', 'outlet:pos', 'merchant:read')),
        key_hash bytea NOT NULL UNIQUE,
        key_prefix text NOT NULL,
        name text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz,
        CHECK ((scope = 'outlet:pos') = (outlet_id IS NOT NULL))
    );
    CREATE TABLE ledger.invoices (
        seq bigserial UNIQUE,
        id uuid PRIMARY KEY,
        merchant_id uuid NOT NULL REFERENCES ledger.merchants(id),
        outlet_id uuid NOT NULL REFERENCES ledger.outlets(id),
        kind text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
        series text NOT NULL,
        number bigint NOT NULL CHECK (number > 0),
        fiscal_number text NOT NULL UNIQUE,
        client_invoice_id text NOT NULL,
        request_hash bytea NOT NULL,
        pos_terminal_id text NOT NULL,
        cashier_id text NOT NULL,
        currency char(3) NOT NULL,
        total numeric(20, 3) NOT NULL,
        total_tax numeric(20, 3) NOT NULL,
        payment_status text NOT NULL,
        status text NOT NULL DEFAULT 'sealed',
        sold_at timestamptz NOT NULL,
        sealed_at timestamptz NOT NULL,
        original_invoice_id uuid REFERENCES ledger.invoices(id),
        body text NOT NULL,              -- the canonical JSON the body digest covers, byte for byte
        statement text NOT NULL,         -- what was signed (its SHA-256), rebuilt from the QR alone
        body_digest bytea NOT NULL,
        prev_hash bytea NOT NULL,
        hash bytea NOT NULL UNIQUE,
        signature bytea NOT NULL,
        key_id text NOT NULL,
        auth_code text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (outlet_id, series, number),
        UNIQUE (outlet_id, client_invoice_id)
    );
    CREATE INDEX invoices_merchant_seq ON ledger.invoices (merchant_id, seq DESC);
    CREATE INDEX invoices_outlet_seq ON ledger.invoices (outlet_id, seq DESC);
    CREATE INDEX invoices_original ON ledger.invoices (original_invoice_id) WHERE original_invoice_id IS NOT NULL;
    CREATE TABLE ledger.outbox (
        seq bigserial PRIMARY KEY,
        event_id uuid NOT NULL UNIQUE,
        event_type text NOT NULL,
        merchant_id uuid NOT NULL,
        aggregate_id uuid NOT NULL,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz
    );
    CREATE INDEX outbox_unpublished ON ledger.outbox (seq) WHERE published_at IS NULL;
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE ledger.outbox; DROP TABLE ledger.invoices; DROP TABLE ledger.api_keys;
    DROP TABLE ledger.terminals; DROP TABLE ledger.cashiers; DROP TABLE ledger.tax_groups;
    DROP TABLE ledger.outlets; DROP TABLE ledger.merchants;
    """)
