-- Berth metadata schema for PostgreSQL, version 3: encryption at rest (sqlite_v2.sql).

-- The key whose blobs the repository reads, fixed at creation; NULL: plaintext.
ALTER TABLE repositories ADD COLUMN key_name TEXT COLLATE "C";

-- True while the blob's plaintext object exists at its content address.
ALTER TABLE blobs ADD COLUMN plain BOOLEAN NOT NULL DEFAULT true;

-- One sealed copy of a blob per key name, shared by the repositories using that key.
CREATE TABLE blob_copies (
    digest     TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    key_name   TEXT COLLATE "C" NOT NULL,
    object     TEXT NOT NULL,              -- the object's id (storage layout: sealed/<alg>/<xx>/<hex>/<object>)
    kek        TEXT COLLATE "C" NOT NULL,  -- the key-encryption key wrapping the data key
    wrapped    BYTEA NOT NULL,             -- the wrapped data key
    runs       BYTEA NOT NULL,             -- segment runs: first index and nonce prefix of each
    created_at BIGINT NOT NULL,
    PRIMARY KEY (digest, key_name)
);
CREATE INDEX blob_copies_kek ON blob_copies (kek);

-- Key-encryption keys by id and state. Their material is never stored here.
CREATE TABLE keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'inactive', 'retired')),
    check_value TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX keys_one_active ON keys (name) WHERE state = 'active';

-- An encrypted upload's sealing state (JSON), and the KEK wrapping its data key.
ALTER TABLE uploads ADD COLUMN sealing TEXT;
ALTER TABLE uploads ADD COLUMN sealing_kek TEXT COLLATE "C";
