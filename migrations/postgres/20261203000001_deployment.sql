-- This deployment's identity: one row, made when the database is first migrated, so every
-- node on this database reads the same id. provd writes it into the description of every
-- JetStream consumer it creates and, at start, refuses streams whose consumers carry another
-- deployment's id: two deployments (two databases) on one NATS server with the same
-- `nats_prefix` would otherwise apply each other's events and take each other's queued
-- writes. Never change the id: this deployment's own consumers would then look foreign.
CREATE TABLE provd_deployment (
    -- The primary key on a column that can only be true keeps the table at one row.
    singleton  BOOLEAN     PRIMARY KEY DEFAULT TRUE
        CONSTRAINT provd_deployment_singleton_check CHECK (singleton),
    id         UUID        NOT NULL DEFAULT gen_random_uuid(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO provd_deployment DEFAULT VALUES;
