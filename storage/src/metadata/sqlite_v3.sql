-- Berth metadata schema, version 3: authentication and authorization records.

-- People and services that sign in. A password is kept only as an argon2id PHC string;
-- NULL: no password login (access keys only).
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- Access keys: the id is public, the secret kept only as its SHA-256 (hex). `delete_user`
-- removes a user's keys itself (with their policies); the cascade is a backstop.
CREATE TABLE access_keys (
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    secret_digest TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE INDEX access_keys_user ON access_keys (user_name, id);

-- Policy documents by what they are attached to: a user (target = name), an access key
-- (target = id), a repository (target = name; it need not exist yet) or the registry
-- (target = ''). No foreign key can span the kinds: user and key policies are deleted with
-- their owner, in the same transaction.
CREATE TABLE policies (
    target_kind TEXT NOT NULL CHECK (target_kind IN ('user', 'access_key', 'repository', 'registry')),
    target      TEXT NOT NULL,
    name        TEXT NOT NULL,
    document    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (target_kind, target, name)
) WITHOUT ROWID;

-- Repository tags (resource tags, for policy conditions), by repository name: no foreign
-- key, since repositories are created on first push and may be tagged before it.
CREATE TABLE repository_tags (
    repository TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (repository, key)
) WITHOUT ROWID;

-- The token service's signing keys (PKCS#8 DER), shared by every process using this store.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    pkcs8      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
