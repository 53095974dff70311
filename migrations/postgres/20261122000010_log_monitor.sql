-- Log monitoring (issue 5): divergences are raised once, published and alerted through an
-- outbox, and receipts still waiting for re-verification are found by index.

-- One divergence per evidence: the key is derived from the kind and what was seen, so a
-- fork served on every tick (or seen by several nodes) is raised once.
ALTER TABLE rekor_divergences ADD COLUMN dedupe_key VARCHAR(512);
CREATE UNIQUE INDEX uk_rekor_divergences_dedupe ON rekor_divergences (dedupe_key);

-- The outbox: the detecting node publishes `rekor.checkpoints.diverged` and POSTs the
-- webhook, then records each; a crash in between repeats the step, never skips it.
ALTER TABLE rekor_divergences ADD COLUMN published_at TIMESTAMPTZ;
ALTER TABLE rekor_divergences ADD COLUMN delivered_at TIMESTAMPTZ;
ALTER TABLE rekor_divergences ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rekor_divergences ADD COLUMN last_delivery_error TEXT;
CREATE INDEX idx_rekor_divergences_outbox ON rekor_divergences (detected_by, id)
    WHERE published_at IS NULL OR delivered_at IS NULL;

-- Receipts the log sync has not re-verified yet.
CREATE INDEX idx_rekor_entries_unverified ON rekor_entries (backend, shard_log_index)
    WHERE verified_at IS NULL;
