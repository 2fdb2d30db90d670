"""payments: merchants (their callback route token), provider settings per outlet (credentials sealed at
rest), payments, the callbacks received (deduplicated by the provider's transaction id), callback counts
per provider and outcome, and the event outbox (the runtime outbox relay's columns).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE payments.merchants (
        merchant_id text PRIMARY KEY,
        -- SHA-256 of the route token: what a callback is looked up by.
        callback_token_hash bytea NOT NULL UNIQUE,
        -- The token itself, sealed (secret_box, associated data = merchant_id): SetProviderSettings shows
        -- the callback URLs again.
        callback_token_sealed bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE payments.provider_settings (
        id uuid PRIMARY KEY,
        merchant_id text NOT NULL,
        outlet_id text NOT NULL,
        provider text NOT NULL,
        enabled boolean NOT NULL DEFAULT true,
        -- '' : the deployment's URL for the provider.
        api_base_url text NOT NULL DEFAULT '',
        -- JSON object of the credentials, sealed (secret_box, associated data = id).
        secrets_sealed bytea,
        -- {"consumer_secret": "…abcd", ...}: what the API shows of them.
        credentials_hint jsonb NOT NULL DEFAULT '{}',
        settings jsonb NOT NULL DEFAULT '{}',
        callback_source_cidrs text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT provider_settings_outlet_provider_key UNIQUE (outlet_id, provider)
    );
    CREATE INDEX provider_settings_merchant_idx ON payments.provider_settings (merchant_id, provider);

    CREATE TABLE payments.payments (
        id uuid PRIMARY KEY,
        -- Creation order: the listing's position (page tokens carry it).
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        merchant_id text NOT NULL,
        outlet_id text NOT NULL,
        provider text NOT NULL,
        client_payment_id text NOT NULL,
        amount numeric(20, 3) NOT NULL,
        currency text NOT NULL,
        -- The whole number, sealed (associated data = id): status queries need it. Shown masked only.
        phone_sealed bytea,
        phone_masked text NOT NULL DEFAULT '',
        status text NOT NULL DEFAULT 'pending',
        status_reason text NOT NULL DEFAULT '',
        invoice_id text NOT NULL DEFAULT '',
        client_invoice_id text NOT NULL DEFAULT '',
        provider_reference text NOT NULL DEFAULT '',
        provider_request_id text NOT NULL DEFAULT '',
        merchant_request_id text NOT NULL DEFAULT '',
        confirmed_amount numeric(20, 6),
        amount_mismatch boolean NOT NULL DEFAULT false,
        payment_url text NOT NULL DEFAULT '',
        -- Orange Money's notif_token, sealed (associated data = id).
        callback_secret_sealed bytea,
        -- Pay-first: the sale (SealInvoiceRequest, serialized) and where it stands.
        sale bytea,
        sale_state text NOT NULL DEFAULT 'not_applicable',
        -- The ledger has heard of the payment's state when ledger_recorded_version = ledger_version.
        ledger_version integer NOT NULL DEFAULT 0,
        ledger_recorded_version integer NOT NULL DEFAULT 0,
        -- Background work (reconcile.py): when each job may next look at the row (replicas claim rows with
        -- SKIP LOCKED and move this forward).
        query_at timestamptz NOT NULL DEFAULT now(),
        ledger_retry_at timestamptz NOT NULL DEFAULT now(),
        seal_retry_at timestamptz NOT NULL DEFAULT now(),
        query_count integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        confirmed_at timestamptz,
        final_at timestamptz,
        CONSTRAINT payments_client_payment_key UNIQUE (outlet_id, client_payment_id),
        CONSTRAINT payments_status_check CHECK (status IN ('pending', 'confirmed', 'failed', 'cancelled', 'expired')),
        CONSTRAINT payments_sale_state_check CHECK (
            sale_state IN ('not_applicable', 'waiting', 'sealed', 'not_sealed', 'retrying'))
    );
    CREATE INDEX payments_merchant_idx ON payments.payments (merchant_id, seq);
    CREATE INDEX payments_request_idx ON payments.payments (provider, provider_request_id)
        WHERE provider_request_id <> '';
    CREATE INDEX payments_invoice_idx ON payments.payments (merchant_id, invoice_id) WHERE invoice_id <> '';
    CREATE INDEX payments_client_invoice_idx ON payments.payments (outlet_id, client_invoice_id)
        WHERE client_invoice_id <> '';
    CREATE INDEX payments_pending_idx ON payments.payments (query_at) WHERE status = 'pending';
    CREATE INDEX payments_ledger_due_idx ON payments.payments (ledger_retry_at)
        WHERE ledger_recorded_version < ledger_version;
    CREATE INDEX payments_seal_due_idx ON payments.payments (seal_retry_at)
        WHERE status = 'confirmed' AND sale_state IN ('waiting', 'retrying');

    CREATE TABLE payments.callbacks (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        provider text NOT NULL,
        kind text NOT NULL,
        -- The provider's transaction id (or request id and result code): one row per provider event.
        dedupe_key text NOT NULL,
        merchant_id text NOT NULL,
        payment_id uuid,
        status text NOT NULL,
        result_code text NOT NULL DEFAULT '',
        -- accepted, amount_tampered, or ignored (authentic, but the payment was already final).
        outcome text NOT NULL,
        -- callback, or query (a reconciliation answer, stored so that the callback after it is a duplicate)
        source text NOT NULL DEFAULT 'callback',
        received_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT callbacks_dedupe_key UNIQUE (provider, dedupe_key)
    );
    CREATE INDEX callbacks_payment_idx ON payments.callbacks (payment_id);

    CREATE TABLE payments.callback_counts (
        provider text NOT NULL,
        outcome text NOT NULL,
        count bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (provider, outcome)
    );

    CREATE TABLE payments.outbox (
        seq bigserial PRIMARY KEY,
        event_id uuid NOT NULL UNIQUE,
        event_type text NOT NULL,
        merchant_id uuid NOT NULL,
        outlet_id uuid,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz
    );
    CREATE INDEX outbox_unpublished ON payments.outbox (seq) WHERE published_at IS NULL;
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE payments.outbox; DROP TABLE payments.callback_counts; DROP TABLE payments.callbacks;
    DROP TABLE payments.payments; DROP TABLE payments.provider_settings; DROP TABLE payments.merchants;
    """)
