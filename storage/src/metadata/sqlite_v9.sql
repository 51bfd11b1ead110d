-- Berth metadata schema for SQLite, version 9: online garbage collection (ARCHITECTURE.md,
-- invariant "GC never deletes what a manifest or a client relies on").

-- When a client was last told the link exists (a HEAD or GET of the blob, a mount from it),
-- in unix seconds, written in batches; 0: not since its creation (`created_at` counts).
ALTER TABLE repository_blobs ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0;
-- The id of the collector run that marked the link for removal; a read of a marked link
-- clears it before it answers, so a link a client was told about survives the run.
ALTER TABLE repository_blobs ADD COLUMN gc_mark TEXT;
CREATE INDEX repository_blobs_gc_mark ON repository_blobs (gc_mark) WHERE gc_mark IS NOT NULL;

-- A writer about to dedupe against stored bytes (upload commit, monolithic push, mount,
-- sealed-copy sharing) holds the digest until its link is written; the collector dooms no
-- held digest. A hold older than 6 hours is dead (its writer died) and ignored.
CREATE TABLE gc_holds (
    id         TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX gc_holds_digest ON gc_holds (digest);

-- Digests whose objects the collector is deleting: `blob` (the blob goes whole: plaintext,
-- every copy, its rows) or `copies` (only the copies of the key names in `keys`, a JSON
-- array). No link is written for a doomed digest; a crash leaves the row for the next run.
CREATE TABLE gc_dooms (
    digest     TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('blob', 'copies')),
    keys       TEXT NOT NULL DEFAULT '[]',
    run_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- One collector at a time across replicas: the holder of this row until `expires_ms`.
CREATE TABLE gc_lease (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    acquired_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);

-- Collector runs, for `berth gc status` and `GET /api/v1/gc`.
CREATE TABLE gc_runs (
    id              TEXT PRIMARY KEY,
    started_ms      INTEGER NOT NULL,
    finished_ms     INTEGER,
    state           TEXT NOT NULL,
    dry_run         INTEGER NOT NULL,
    repository      TEXT,
    phase           TEXT NOT NULL,
    links           INTEGER NOT NULL DEFAULT 0,
    blobs           INTEGER NOT NULL DEFAULT 0,
    copies          INTEGER NOT NULL DEFAULT 0,
    unknown_objects INTEGER NOT NULL DEFAULT 0,
    uploads         INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    duration_ms     INTEGER NOT NULL DEFAULT 0,
    error           TEXT
);
CREATE INDEX gc_runs_started ON gc_runs (started_ms);
