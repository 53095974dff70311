-- This deployment's identity: PostgreSQL's `provd_deployment` in SQLite's terms. One row,
-- made when the file is first migrated: a random (version 4) UUID, hyphenated lowercase
-- text, built from `randomblob`. The in-process bus lives in this same file, so no other
-- deployment can reach its consumers; the id is still shown in the status report and the
-- start-up log, as in the distributed mode.
CREATE TABLE provd_deployment (
    singleton  INTEGER PRIMARY KEY DEFAULT 1
        CONSTRAINT provd_deployment_singleton_check CHECK (singleton = 1),
    id         TEXT    NOT NULL CONSTRAINT provd_deployment_id_check CHECK (
        length(id) = 36 AND id NOT GLOB '*[^0-9a-f-]*'),
    created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER))
) STRICT;
-- 8-4-4-4-12 hex digits: the version nibble is 4 and the variant nibble one of 8, 9, a, b
-- (`random() & 3` picks it; unlike `abs(random())` it cannot overflow).
INSERT INTO provd_deployment (id) VALUES (lower(
    hex(randomblob(4)) || '-' ||
    hex(randomblob(2)) || '-' ||
    '4' || substr(hex(randomblob(2)), 2) || '-' ||
    substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' ||
    hex(randomblob(6))));
