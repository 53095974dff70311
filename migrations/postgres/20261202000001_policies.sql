-- Policies as stored, versioned documents (`PUT /api/v1/policies/{name}`). Every version
-- stays, so an old verdict's `policy_hash` can always be explained; the highest version of
-- a name is its current policy. A PUT serialises per name (an advisory lock keyed by the
-- name), so concurrent PUTs give versions 1, 2, 3… with no gap or duplicate; the primary
-- key is the last line of defence.
CREATE TABLE provcache.prov_policies (
    name         VARCHAR(128) NOT NULL
        CONSTRAINT prov_policies_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    version      BIGINT       NOT NULL CONSTRAINT prov_policies_version_check CHECK (version >= 1),
    -- `sha256:` + lowercase hex of the document's RFC 8785 canonical JSON: one spelling only,
    -- so lookups by hash never depend on case.
    policy_hash  VARCHAR(71)  NOT NULL
        CONSTRAINT prov_policies_hash_check CHECK (policy_hash ~ '^sha256:[0-9a-f]{64}$'),
    document     JSONB        NOT NULL
        CONSTRAINT prov_policies_document_check CHECK (jsonb_typeof(document) = 'object'),
    created_at   TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
-- Explaining a verdict: which policy had this hash.
CREATE INDEX idx_policies_policy_hash ON provcache.prov_policies (policy_hash);
