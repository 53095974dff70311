-- Policies as stored, versioned documents: PostgreSQL's `provcache.prov_policies` without
-- the schema, with the same constraints written in SQLite's terms (GLOB instead of regular
-- expressions). Times are INTEGER microseconds, the document TEXT holding a JSON object.
-- Writes go through the store's one writer connection, so a PUT's read-then-insert is
-- already serialised; the primary key is the last line of defence.
CREATE TABLE prov_policies (
    name         TEXT    NOT NULL CONSTRAINT prov_policies_name_check CHECK (
        length(name) BETWEEN 1 AND 128
        AND substr(name, 1, 1) GLOB '[A-Za-z0-9]'
        AND name NOT GLOB '*[^A-Za-z0-9._-]*'),
    version      INTEGER NOT NULL CONSTRAINT prov_policies_version_check CHECK (version >= 1),
    policy_hash  TEXT    NOT NULL CONSTRAINT prov_policies_hash_check CHECK (
        length(policy_hash) = 71
        AND substr(policy_hash, 1, 7) = 'sha256:'
        AND substr(policy_hash, 8) NOT GLOB '*[^0-9a-f]*'),
    document     TEXT    NOT NULL CONSTRAINT prov_policies_document_check CHECK (
        json_valid(document) AND json_type(document) = 'object'),
    created_at   INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    PRIMARY KEY (name, version)
) STRICT;
CREATE INDEX idx_policies_policy_hash ON prov_policies (policy_hash);
