-- Which Rekor receipt records a cached entry's attestation. Set by
-- `PUT /api/v1/provcache/entries/{veriKey}/receipt` once the attestation was logged; read by
-- the bundle export, which then carries the receipt and the log's key. Kept beside the
-- items rather than as a column on them, so the write-behind path and every hot tier stay as
-- they are; a link whose entry was invalidated is simply never read.
CREATE TABLE provcache.prov_entry_receipts (
    veri_key    VARCHAR(128) PRIMARY KEY,
    rekor_uuid  VARCHAR(128) NOT NULL REFERENCES rekor_entries (uuid),
    linked_at   TIMESTAMPTZ  NOT NULL DEFAULT now()
);
