-- Receipts are found by entry ID or by the bare 64-hex UUID at its end (a Rekor v1 entry ID
-- is the tree ID and the UUID); index the suffix so that lookup is not a scan.
CREATE INDEX idx_rekor_entries_uuid_suffix ON rekor_entries (right(uuid, 64));
