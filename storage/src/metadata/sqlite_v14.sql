-- Berth metadata schema for SQLite, version 14: replication to other registries (issue 21).
-- (Version 13 is the pull-through cache's.)
--
-- The registry-wide replication configuration: one row, the document as JSON (rules and
-- destinations without credentials: those are sealed in each destination's subscription,
-- a subscription of kind replication in `subscriptions`).
CREATE TABLE replication_config (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    document   TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('api', 'config')),
    updated_at INTEGER NOT NULL
);

-- Where each image (manifest digest of a repository) stands at each destination, as the
-- copier last recorded it. Deleted with the destination.
CREATE TABLE replication_status (
    destination TEXT NOT NULL,
    repository  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('PENDING', 'IN_PROGRESS', 'COMPLETE', 'FAILED')),
    reason      TEXT,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (repository, digest, destination)
);
