-- Berth metadata schema for PostgreSQL, version 7: credentials that can be revoked
-- (sqlite_v6.sql).

-- A stable id per user (`AIDA` and 16 characters), never reused: refresh and login tokens
-- carry it, so a user deleted and created again under the same name does not inherit them.
-- Users created before this version get a random one here.
ALTER TABLE users ADD COLUMN id TEXT COLLATE "C";
UPDATE users SET id = 'AIDA' || upper(substr(md5(gen_random_uuid()::text), 1, 16));
ALTER TABLE users ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX users_id ON users (id);

-- The credential generation, moved on by a password change or removal and by disabling:
-- refresh and login tokens issued at an older one are refused.
ALTER TABLE users ADD COLUMN credential_generation BIGINT NOT NULL DEFAULT 0;
