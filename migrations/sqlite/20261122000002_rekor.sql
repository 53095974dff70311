-- Rekor submissions, receipts, verified checkpoints and divergences in embedded mode: the
-- final shape of PostgreSQL's rekor_* tables (every migration up to entry_receipts applied),
-- with the same table, column, constraint and index names. Times are INTEGER microseconds
-- since the Unix epoch, JSON is TEXT, bytes are BLOB. The adapters bind every time
-- explicitly; the defaults only serve rows written by hand.

-- Rekor submissions: one row per submission id (derived from envelope and backend).
CREATE TABLE rekor_submissions (
    submission_id  TEXT    NOT NULL PRIMARY KEY,
    backend        TEXT    NOT NULL,
    status         TEXT    NOT NULL CONSTRAINT rekor_submissions_status_check
        CHECK (status IN ('queued', 'submitting', 'retrying', 'logged', 'dead_lettered')),
    envelope       TEXT    NOT NULL CHECK (json_valid(envelope)),
    verifier_keys  TEXT    NOT NULL CHECK (json_valid(verifier_keys)),
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    entry_uuid     TEXT,
    created_at     INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    updated_at     INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
);
CREATE INDEX idx_rekor_submissions_status ON rekor_submissions (status, updated_at);

-- Receipts of logged entries, column by column.
CREATE TABLE rekor_entries (
    uuid                    TEXT    NOT NULL PRIMARY KEY,
    backend                 TEXT    NOT NULL,
    submission_id           TEXT    REFERENCES rekor_submissions (submission_id),
    log_id                  TEXT    NOT NULL,
    log_index               INTEGER NOT NULL,
    shard_log_index         INTEGER NOT NULL,
    tree_id                 TEXT,
    integrated_time         INTEGER,
    body                    BLOB    NOT NULL,
    inclusion_proof         TEXT    NOT NULL CHECK (json_valid(inclusion_proof)),
    checkpoint              TEXT    NOT NULL,
    signed_entry_timestamp  TEXT,
    verified_at             INTEGER,
    created_at              INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
);
CREATE UNIQUE INDEX uk_rekor_entries_backend_index ON rekor_entries (backend, log_index);
CREATE INDEX idx_rekor_entries_submission ON rekor_entries (submission_id);
-- Receipts are found by entry ID or by the bare 64-hex UUID at its end (a Rekor v1 entry ID
-- is the tree ID and the UUID). PostgreSQL indexes right(uuid, 64); substr(uuid, -64) is
-- the same string here, and the lookup uses this exact expression so the index serves it.
CREATE INDEX idx_rekor_entries_uuid_suffix ON rekor_entries (substr(uuid, -64));
-- Receipts the log sync has not re-verified yet.
CREATE INDEX idx_rekor_entries_unverified ON rekor_entries (backend, shard_log_index)
    WHERE verified_at IS NULL;

-- Every verified checkpoint, per backend and origin, as observed by each node.
CREATE TABLE rekor_checkpoints (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    backend      TEXT    NOT NULL,
    origin       TEXT    NOT NULL,
    tree_size    INTEGER NOT NULL CHECK (tree_size >= 0),
    root_hash    TEXT    NOT NULL,
    note         TEXT    NOT NULL,
    observed_by  TEXT    NOT NULL,
    observed_at  INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    CONSTRAINT uk_rekor_checkpoint UNIQUE (backend, origin, tree_size, root_hash, observed_by)
);
CREATE INDEX idx_rekor_checkpoints_latest ON rekor_checkpoints (backend, origin, tree_size DESC);

-- Detected divergences with their evidence, raised once per dedupe key, and their outbox:
-- the detecting node publishes `rekor.checkpoints.diverged` and POSTs the webhook, then
-- records each.
CREATE TABLE rekor_divergences (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    backend              TEXT    NOT NULL,
    origin               TEXT    NOT NULL,
    kind                 TEXT    NOT NULL,
    evidence             TEXT    NOT NULL CHECK (json_valid(evidence)),
    detected_by          TEXT    NOT NULL,
    detected_at          INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    acknowledged_at      INTEGER,
    acknowledged_by      TEXT,
    dedupe_key           TEXT,
    published_at         INTEGER,
    delivered_at         INTEGER,
    delivery_attempts    INTEGER NOT NULL DEFAULT 0,
    last_delivery_error  TEXT
);
CREATE INDEX idx_rekor_divergences_open ON rekor_divergences (backend, origin)
    WHERE acknowledged_at IS NULL;
CREATE UNIQUE INDEX uk_rekor_divergences_dedupe ON rekor_divergences (dedupe_key);
CREATE INDEX idx_rekor_divergences_outbox ON rekor_divergences (detected_by, id)
    WHERE published_at IS NULL OR delivered_at IS NULL;
