-- Berth metadata schema for PostgreSQL, version 4: authentication and authorization records
-- (sqlite_v3.sql).

-- People and services that sign in. A password is kept only as an argon2id PHC string;
-- NULL: no password login (access keys only).
CREATE TABLE users (
    name          TEXT COLLATE "C" PRIMARY KEY,
    password_hash TEXT,
    disabled      BOOLEAN NOT NULL DEFAULT false,
    created_at    BIGINT NOT NULL
);

-- Access keys: the id is public, the secret kept only as its SHA-256 (hex). `delete_user`
-- removes a user's keys itself (with their policies); the cascade is a backstop.
CREATE TABLE access_keys (
    id            TEXT COLLATE "C" PRIMARY KEY,
    user_name     TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    secret_digest TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT false,
    created_at    BIGINT NOT NULL
);
CREATE INDEX access_keys_user ON access_keys (user_name, id);

-- Policy documents by what they are attached to: a user (target = name), an access key
-- (target = id), a repository (target = name; it need not exist yet) or the registry
-- (target = ''). No foreign key can span the kinds: user and key policies are deleted with
-- their owner, in the same transaction, which locks the owner's row first.
CREATE TABLE policies (
    target_kind TEXT COLLATE "C" NOT NULL CHECK (target_kind IN ('user', 'access_key', 'repository', 'registry')),
    target      TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    document    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (target_kind, target, name)
);

-- Repository tags (resource tags, for policy conditions), by repository name: no foreign
-- key, since repositories are created on first push and may be tagged before it.
CREATE TABLE repository_tags (
    repository TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (repository, key)
);

-- The token service's signing keys (PKCS#8 DER), shared by every replica.
CREATE TABLE signing_keys (
    kid        TEXT COLLATE "C" PRIMARY KEY,
    pkcs8      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
