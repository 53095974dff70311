-- provd schema, PostgreSQL. The provenance-cache tables live in schema `provcache` as in the
-- seed; the Rekor tables live in `public`.

CREATE SCHEMA IF NOT EXISTS provcache;

-- Cached policy verdicts, keyed by VeriKey.
CREATE TABLE provcache.provcache_items (
    veri_key         VARCHAR(128) PRIMARY KEY,
    verdict          JSONB        NOT NULL,
    verdict_hash     VARCHAR(128) NOT NULL,
    proof_root       VARCHAR(128),
    trust_score      SMALLINT     NOT NULL CHECK (trust_score BETWEEN 0 AND 100),
    source_artifact  VARCHAR(256),
    sbom_digest      VARCHAR(256),
    policy_hash      VARCHAR(128) NOT NULL,
    signer_set_hash  VARCHAR(128) NOT NULL,
    feed_id          VARCHAR(128),
    feed_epoch       VARCHAR(64),
    created_at       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ  NOT NULL
);
CREATE INDEX idx_items_policy_hash     ON provcache.provcache_items (policy_hash);
CREATE INDEX idx_items_signer_set_hash ON provcache.provcache_items (signer_set_hash);
CREATE INDEX idx_items_feed            ON provcache.provcache_items (feed_id, feed_epoch);
CREATE INDEX idx_items_expires_at      ON provcache.provcache_items (expires_at);
CREATE INDEX idx_items_proof_root      ON provcache.provcache_items (proof_root);

-- Which key IDs make up a signer set: revoking one key invalidates every set containing it.
CREATE TABLE provcache.prov_signer_set_members (
    signer_set_hash  VARCHAR(128) NOT NULL,
    key_id           VARCHAR(256) NOT NULL,
    PRIMARY KEY (signer_set_hash, key_id)
);
CREATE INDEX idx_signer_members_key_id ON provcache.prov_signer_set_members (key_id);

-- Evidence chunks (the seed's schema).
CREATE TABLE provcache.prov_evidence_chunks (
    chunk_id        UUID PRIMARY KEY,
    proof_root      VARCHAR(128) NOT NULL,
    chunk_index     INTEGER NOT NULL,
    chunk_hash      VARCHAR(128) NOT NULL,
    blob            BYTEA NOT NULL,
    blob_size       INTEGER NOT NULL,
    content_type    VARCHAR(64) NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT uk_proof_chunk UNIQUE (proof_root, chunk_index)
);
CREATE INDEX idx_evidence_proof_root ON provcache.prov_evidence_chunks (proof_root);

-- One manifest per evidence Merkle root.
CREATE TABLE provcache.prov_evidence_manifests (
    proof_root      VARCHAR(128) PRIMARY KEY,
    total_chunks    INTEGER NOT NULL CHECK (total_chunks >= 0),
    total_size      BIGINT  NOT NULL CHECK (total_size >= 0),
    chunk_size      INTEGER NOT NULL CHECK (chunk_size > 0),
    content_type    VARCHAR(64) NOT NULL,
    chunk_hashes    JSONB   NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The revocation ledger (the seed's schema), append-only.
CREATE TABLE provcache.prov_revocations (
    seq_no              BIGSERIAL PRIMARY KEY,
    revocation_id       UUID NOT NULL,
    revocation_type     VARCHAR(32) NOT NULL,
    revoked_key         VARCHAR(512) NOT NULL,
    reason              VARCHAR(1024),
    entries_invalidated INTEGER NOT NULL,
    source              VARCHAR(128) NOT NULL,
    correlation_id      VARCHAR(128),
    revoked_at          TIMESTAMPTZ NOT NULL,
    metadata            JSONB
);
-- One row per revocation id: a redelivered event invalidates once.
CREATE UNIQUE INDEX uk_revocations_revocation_id ON provcache.prov_revocations (revocation_id);
CREATE INDEX idx_revocations_type ON provcache.prov_revocations (revocation_type);
CREATE INDEX idx_revocations_revoked_at ON provcache.prov_revocations (revoked_at);

CREATE FUNCTION provcache.prov_revocations_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'prov_revocations is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER prov_revocations_no_update_delete
    BEFORE UPDATE OR DELETE ON provcache.prov_revocations
    FOR EACH ROW EXECUTE FUNCTION provcache.prov_revocations_append_only();
CREATE TRIGGER prov_revocations_no_truncate
    BEFORE TRUNCATE ON provcache.prov_revocations
    FOR EACH STATEMENT EXECUTE FUNCTION provcache.prov_revocations_append_only();

-- Per node: the last ledger seq_no applied to its hot tier.
CREATE TABLE provcache.prov_replay_checkpoints (
    node_id      VARCHAR(128) PRIMARY KEY,
    last_seq_no  BIGINT NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Inbound events that were refused, for operators.
CREATE TABLE provcache.prov_rejected_events (
    id           BIGSERIAL PRIMARY KEY,
    subject      VARCHAR(256) NOT NULL,
    event_id     VARCHAR(128),
    reason       VARCHAR(64)  NOT NULL,
    detail       TEXT         NOT NULL,
    payload      BYTEA        NOT NULL,
    rejected_at  TIMESTAMPTZ  NOT NULL
);
CREATE INDEX idx_rejected_events_at ON provcache.prov_rejected_events (rejected_at);

-- Rekor submissions: one row per submission id (derived from envelope and backend).
CREATE TABLE rekor_submissions (
    submission_id  VARCHAR(128) PRIMARY KEY,
    backend        VARCHAR(128) NOT NULL,
    status         VARCHAR(32)  NOT NULL CHECK (status IN ('queued', 'submitting', 'logged', 'dead_lettered')),
    envelope       JSONB        NOT NULL,
    verifier_keys  JSONB        NOT NULL,
    attempts       INTEGER      NOT NULL DEFAULT 0,
    last_error     TEXT,
    entry_uuid     VARCHAR(128),
    created_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_rekor_submissions_status ON rekor_submissions (status, updated_at);

-- Receipts of logged entries.
CREATE TABLE rekor_entries (
    uuid              VARCHAR(128) PRIMARY KEY,
    backend           VARCHAR(128) NOT NULL,
    submission_id     VARCHAR(128) REFERENCES rekor_submissions (submission_id),
    log_id            VARCHAR(128) NOT NULL,
    log_index         BIGINT       NOT NULL,
    shard_log_index   BIGINT       NOT NULL,
    tree_id           VARCHAR(64),
    integrated_time   BIGINT,
    body              BYTEA        NOT NULL,
    inclusion_proof   JSONB        NOT NULL,
    checkpoint        TEXT         NOT NULL,
    signed_entry_timestamp TEXT,
    verified_at       TIMESTAMPTZ,
    created_at        TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX uk_rekor_entries_backend_index ON rekor_entries (backend, log_index);
CREATE INDEX idx_rekor_entries_submission ON rekor_entries (submission_id);

-- Every verified checkpoint, per backend and origin, as observed by each node.
CREATE TABLE rekor_checkpoints (
    id           BIGSERIAL PRIMARY KEY,
    backend      VARCHAR(128) NOT NULL,
    origin       VARCHAR(256) NOT NULL,
    tree_size    BIGINT       NOT NULL CHECK (tree_size >= 0),
    root_hash    VARCHAR(64)  NOT NULL,
    note         TEXT         NOT NULL,
    observed_by  VARCHAR(128) NOT NULL,
    observed_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT uk_rekor_checkpoint UNIQUE (backend, origin, tree_size, root_hash, observed_by)
);
CREATE INDEX idx_rekor_checkpoints_latest ON rekor_checkpoints (backend, origin, tree_size DESC);

-- Detected divergences with their evidence.
CREATE TABLE rekor_divergences (
    id               BIGSERIAL PRIMARY KEY,
    backend          VARCHAR(128) NOT NULL,
    origin           VARCHAR(256) NOT NULL,
    kind             VARCHAR(32)  NOT NULL,
    evidence         JSONB        NOT NULL,
    detected_by      VARCHAR(128) NOT NULL,
    detected_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    acknowledged_at  TIMESTAMPTZ,
    acknowledged_by  VARCHAR(128)
);
CREATE INDEX idx_rekor_divergences_open ON rekor_divergences (backend, origin) WHERE acknowledged_at IS NULL;
