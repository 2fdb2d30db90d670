"""webhooks: endpoints (soft-deleted, secrets sealed at rest), events (the exact envelope bytes, stored
once), deliveries (one per endpoint and event, with its lease) and attempts (the history).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE webhooks.endpoints (
        id uuid PRIMARY KEY,
        -- Creation order: the listing's position (page tokens carry it).
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        merchant_id text NOT NULL,
        url text NOT NULL,
        description text NOT NULL DEFAULT '',
        event_types text[] NOT NULL,
        -- Empty: every outlet of the merchant.
        outlet_ids text[] NOT NULL DEFAULT '{}',
        -- AES-256-GCM (secret_box) with the endpoint id as associated data.
        secret_sealed bytea NOT NULL,
        previous_secret_sealed bytea,
        previous_secret_expires_at timestamptz,
        disabled_at timestamptz,
        disabled_reason text,
        -- The first failed attempt since the last success (NULL while it succeeds): "failing for days".
        failing_since timestamptz,
        last_success_at timestamptz,
        deleted_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT endpoints_disabled_check CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL))
    );
    CREATE INDEX endpoints_merchant_idx ON webhooks.endpoints (merchant_id, seq) WHERE deleted_at IS NULL;

    CREATE TABLE webhooks.events (
        event_id uuid PRIMARY KEY,
        -- Arrival order: deliveries of one endpoint and outlet go out in this order.
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        event_type text NOT NULL,
        merchant_id text NOT NULL,
        outlet_id text,
        occurred_at timestamptz NOT NULL,
        -- The exact bytes POSTed by every attempt (byte-identical across retries and resends).
        envelope bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE webhooks.deliveries (
        id uuid PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        endpoint_id uuid NOT NULL REFERENCES webhooks.endpoints (id),
        merchant_id text NOT NULL,
        event_id uuid NOT NULL REFERENCES webhooks.events (event_id),
        event_seq bigint NOT NULL,
        event_type text NOT NULL,
        -- The event's outlet, '' for none: one attempt in flight per (endpoint, outlet_key).
        outlet_key text NOT NULL DEFAULT '',
        status text NOT NULL DEFAULT 'pending',
        attempt_count integer NOT NULL DEFAULT 0,
        resend integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        lease_id uuid,
        lease_owner text,
        lease_until timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz,
        CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'succeeded', 'failed')),
        CONSTRAINT deliveries_lease_check CHECK ((lease_id IS NULL) = (lease_until IS NULL)),
        CONSTRAINT deliveries_endpoint_event_key UNIQUE (endpoint_id, event_id)
    );
    -- The claim's scan: due pending deliveries, oldest event first.
    CREATE INDEX deliveries_due_idx ON webhooks.deliveries (event_seq) WHERE status = 'pending';
    -- The claim's ordering check: earlier pending deliveries of the same endpoint and outlet.
    CREATE INDEX deliveries_queue_idx ON webhooks.deliveries (endpoint_id, outlet_key, event_seq)
        WHERE status = 'pending';
    CREATE INDEX deliveries_endpoint_idx ON webhooks.deliveries (endpoint_id, seq);
    CREATE INDEX deliveries_failed_idx ON webhooks.deliveries (endpoint_id, completed_at)
        WHERE status = 'failed';

    CREATE TABLE webhooks.attempts (
        delivery_id uuid NOT NULL REFERENCES webhooks.deliveries (id),
        resend integer NOT NULL,
        number integer NOT NULL,
        started_at timestamptz NOT NULL,
        http_status integer NOT NULL DEFAULT 0,
        latency_ms integer NOT NULL DEFAULT 0,
        response_excerpt text NOT NULL DEFAULT '',
        error text NOT NULL DEFAULT '',
        PRIMARY KEY (delivery_id, resend, number)
    );
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE webhooks.attempts;
    DROP TABLE webhooks.deliveries;
    DROP TABLE webhooks.events;
    DROP TABLE webhooks.endpoints;
    """)
