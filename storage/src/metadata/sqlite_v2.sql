-- Berth metadata schema, version 2: encryption at rest.

-- The key whose blobs the repository reads, fixed at creation; NULL: plaintext.
ALTER TABLE repositories ADD COLUMN key_name TEXT;

-- 1 while the blob's plaintext object exists at its content address.
ALTER TABLE blobs ADD COLUMN plain INTEGER NOT NULL DEFAULT 1;

-- One sealed copy of a blob per key name, shared by the repositories using that key.
CREATE TABLE blob_copies (
    digest     TEXT NOT NULL REFERENCES blobs (digest),
    key_name   TEXT NOT NULL,
    object     TEXT NOT NULL,   -- the object's id (storage layout: sealed/<alg>/<xx>/<hex>/<object>)
    kek        TEXT NOT NULL,   -- the key-encryption key wrapping the data key
    wrapped    BLOB NOT NULL,   -- the wrapped data key
    runs       BLOB NOT NULL,   -- segment runs: first index and nonce prefix of each
    created_at INTEGER NOT NULL,
    PRIMARY KEY (digest, key_name)
) WITHOUT ROWID;
CREATE INDEX blob_copies_kek ON blob_copies (kek);

-- Key-encryption keys by id and state. Their material is never stored here.
CREATE TABLE keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'inactive', 'retired')),
    check_value TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX keys_one_active ON keys (name) WHERE state = 'active';

-- An encrypted upload's sealing state (JSON), and the KEK wrapping its data key.
ALTER TABLE uploads ADD COLUMN sealing TEXT;
ALTER TABLE uploads ADD COLUMN sealing_kek TEXT;
