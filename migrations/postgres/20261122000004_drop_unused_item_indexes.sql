-- No query filters provcache items by proof root or by expiry (reads go by VeriKey, and
-- invalidations by policy hash, signer set and feed), yet every write-behind flush paid for
-- both indexes: together about a fifth of the insert's time in PostgreSQL on the benchmark
-- rows. A feature that needs one (an expiry sweep) adds it back with its query.
DROP INDEX IF EXISTS provcache.idx_items_proof_root;
DROP INDEX IF EXISTS provcache.idx_items_expires_at;
