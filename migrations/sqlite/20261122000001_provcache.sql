-- provd schema, SQLite (embedded mode): the provenance-cache tables of
-- migrations/postgres in their final state, with the same table and column names but no
-- `provcache.` schema. Times are INTEGER microseconds since the Unix epoch, UUIDs hyphenated
-- TEXT, JSON TEXT. Tables are STRICT, so a value bound with the wrong type fails loudly
-- instead of being stored in a form no query compares correctly.

-- Cached policy verdicts, keyed by VeriKey. `updated_at` holds the accepted time of the
-- stored version: an older write arriving late never replaces a newer one.
CREATE TABLE provcache_items (
    veri_key         TEXT    NOT NULL PRIMARY KEY,
    verdict          TEXT    NOT NULL,
    verdict_hash     TEXT    NOT NULL,
    proof_root       TEXT,
    trust_score      INTEGER NOT NULL CHECK (trust_score BETWEEN 0 AND 100),
    source_artifact  TEXT,
    sbom_digest      TEXT,
    policy_hash      TEXT    NOT NULL,
    signer_set_hash  TEXT    NOT NULL,
    feed_id          TEXT,
    feed_epoch       TEXT,
    created_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    updated_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    expires_at       INTEGER NOT NULL
) STRICT;
-- Invalidations go by policy hash, signer set and feed; reads by VeriKey (the key). As in
-- PostgreSQL, no index on proof root or expiry: no query filters by them.
CREATE INDEX idx_items_policy_hash     ON provcache_items (policy_hash);
CREATE INDEX idx_items_signer_set_hash ON provcache_items (signer_set_hash);
CREATE INDEX idx_items_feed            ON provcache_items (feed_id, feed_epoch);

-- Which key IDs make up a signer set: revoking one key invalidates every set containing it.
CREATE TABLE prov_signer_set_members (
    signer_set_hash  TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    PRIMARY KEY (signer_set_hash, key_id)
) STRICT;
CREATE INDEX idx_signer_members_key_id ON prov_signer_set_members (key_id);

-- Evidence chunks.
CREATE TABLE prov_evidence_chunks (
    chunk_id        TEXT    NOT NULL PRIMARY KEY,
    proof_root      TEXT    NOT NULL,
    chunk_index     INTEGER NOT NULL,
    chunk_hash      TEXT    NOT NULL,
    blob            BLOB    NOT NULL,
    blob_size       INTEGER NOT NULL,
    content_type    TEXT    NOT NULL,
    created_at      INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    CONSTRAINT uk_proof_chunk UNIQUE (proof_root, chunk_index)
) STRICT;
CREATE INDEX idx_evidence_proof_root ON prov_evidence_chunks (proof_root);

-- One manifest per evidence Merkle root.
CREATE TABLE prov_evidence_manifests (
    proof_root      TEXT    NOT NULL PRIMARY KEY,
    total_chunks    INTEGER NOT NULL CHECK (total_chunks >= 0),
    total_size      INTEGER NOT NULL CHECK (total_size >= 0),
    chunk_size      INTEGER NOT NULL CHECK (chunk_size > 0),
    content_type    TEXT    NOT NULL,
    chunk_hashes    TEXT    NOT NULL,
    created_at      INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;

-- The revocation ledger, append-only. AUTOINCREMENT keeps `seq_no` from ever being reused,
-- which readers paging by `seq_no > since` rely on.
CREATE TABLE prov_revocations (
    seq_no              INTEGER PRIMARY KEY AUTOINCREMENT,
    revocation_id       TEXT    NOT NULL,
    revocation_type     TEXT    NOT NULL,
    revoked_key         TEXT    NOT NULL,
    reason              TEXT,
    entries_invalidated INTEGER NOT NULL,
    source              TEXT    NOT NULL,
    correlation_id      TEXT,
    revoked_at          INTEGER NOT NULL,
    metadata            TEXT
) STRICT;
-- One row per revocation id: a redelivered event invalidates once.
CREATE UNIQUE INDEX uk_revocations_revocation_id ON prov_revocations (revocation_id);
CREATE INDEX idx_revocations_type ON prov_revocations (revocation_type);
CREATE INDEX idx_revocations_revoked_at ON prov_revocations (revoked_at);

CREATE TRIGGER prov_revocations_no_update BEFORE UPDATE ON prov_revocations
BEGIN
    SELECT RAISE(ABORT, 'prov_revocations is append-only');
END;
CREATE TRIGGER prov_revocations_no_delete BEFORE DELETE ON prov_revocations
BEGIN
    SELECT RAISE(ABORT, 'prov_revocations is append-only');
END;

-- Per node: the last ledger seq_no applied to its hot tier.
CREATE TABLE prov_replay_checkpoints (
    node_id      TEXT    NOT NULL PRIMARY KEY,
    last_seq_no  INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;

-- Inbound events that were refused, for operators.
CREATE TABLE prov_rejected_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subject      TEXT    NOT NULL,
    event_id     TEXT,
    reason       TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    rejected_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX idx_rejected_events_at ON prov_rejected_events (rejected_at);

-- The ledger outbox: how far the revocation ledger has been published. One row.
CREATE TABLE prov_ledger_outbox (
    id                INTEGER NOT NULL PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    published_seq_no  INTEGER NOT NULL DEFAULT 0 CHECK (published_seq_no >= 0),
    updated_at        INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;
INSERT INTO prov_ledger_outbox (id, published_seq_no) VALUES (1, 0);

-- Which Rekor receipt records a cached entry's attestation. `rekor_entries` is created by
-- the next migration; SQLite resolves the reference when a row is written, not here.
CREATE TABLE prov_entry_receipts (
    veri_key    TEXT    NOT NULL PRIMARY KEY,
    rekor_uuid  TEXT    NOT NULL REFERENCES rekor_entries (uuid),
    linked_at   INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;
