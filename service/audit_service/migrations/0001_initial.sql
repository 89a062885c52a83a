-- Tenants, API keys (only hashes), per-tenant chain heads and the partitioned event table.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash    text NOT NULL UNIQUE,          -- sha256 hex of the key; the key itself is never stored
    key_prefix  text NOT NULL,                 -- first characters, to tell keys apart in listings
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- The newest link of each tenant's hash chain. Workers lock this row while appending, so
-- concurrent workers serialise per tenant and a chain never forks.
CREATE TABLE chain_heads (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seq         bigint NOT NULL DEFAULT 0,
    hash        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- created_at is the time the API received the event (its received_at); partitions are by month.
CREATE TABLE audit_logs (
    tenant_id       uuid NOT NULL,
    seq             bigint NOT NULL,
    event_id        uuid NOT NULL,
    created_at      timestamptz NOT NULL,
    occurred_at     timestamptz NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    target          text,
    outcome         text NOT NULL CHECK (outcome IN ('success', 'failure', 'unknown')),
    source_ip       text,
    user_agent      text,
    metadata        jsonb,
    correlation_id  text,
    stream_seq      bigint NOT NULL,           -- JetStream sequence: replay from here after a restore
    prev_hash       text NOT NULL,
    hash            text NOT NULL,
    CONSTRAINT audit_logs_natural_key UNIQUE (tenant_id, event_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX idx_audit_logs_tenant_created ON audit_logs (tenant_id, created_at);
CREATE INDEX idx_audit_logs_tenant_seq ON audit_logs (tenant_id, seq);

-- The last link that retention removed from each chain: verification starts from it, so rows
-- removed on purpose are told apart from rows deleted from the start of a chain.
CREATE TABLE chain_anchors (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    hash        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What each retention run removed, for reports.
CREATE TABLE retention_runs (
    id                  bigserial PRIMARY KEY,
    ran_at              timestamptz NOT NULL DEFAULT now(),
    cutoff              timestamptz NOT NULL,
    dropped_partitions  text[] NOT NULL,
    deleted_rows        bigint NOT NULL
);
