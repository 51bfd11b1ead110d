-- Berth metadata schema for PostgreSQL, version 1: the tables of sqlite_v1.sql.
-- Names, tags and digests are COLLATE "C" so that ordering and `>` comparisons are by
-- bytes, as in SQLite, whatever the database's default collation is.
CREATE TABLE repositories (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Every verified blob whose bytes are in the object store, once per registry.
CREATE TABLE blobs (
    digest     TEXT COLLATE "C" PRIMARY KEY,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Which repositories may read which blobs (pushed there or mounted).
CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

-- Manifests, byte-exact, per repository.
CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT COLLATE "C" NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    size          BIGINT NOT NULL,
    content       BYTEA NOT NULL,
    subject       TEXT COLLATE "C",
    annotations   TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repository_id, subject) WHERE subject IS NOT NULL;

-- What each manifest references (config, layers, child manifests): the roots of GC marking.
CREATE TABLE manifest_references (
    repository_id   BIGINT NOT NULL,
    manifest_digest TEXT COLLATE "C" NOT NULL,
    child_digest    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (repository_id, manifest_digest, child_digest),
    FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_child ON manifest_references (child_digest);

CREATE TABLE tags (
    repository_id BIGINT NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    digest        TEXT COLLATE "C" NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest) REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
-- The cascade from a deleted manifest finds its tags through this.
CREATE INDEX tags_digest ON tags (repository_id, digest);

-- Upload sessions: where each chunked upload stands, so any process can continue it.
CREATE TABLE uploads (
    id          TEXT COLLATE "C" PRIMARY KEY,
    repository  TEXT COLLATE "C" NOT NULL,
    byte_offset BIGINT NOT NULL,
    hash_state  BYTEA NOT NULL,
    parts       TEXT[] NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX uploads_updated_at ON uploads (updated_at);
