-- Berth metadata schema for SQLite, version 6: credentials that can be revoked.

-- A stable id per user (`AIDA` and 16 characters), never reused: refresh and login tokens
-- carry it, so a user deleted and created again under the same name does not inherit them.
-- Users created before this version get a random one here.
ALTER TABLE users ADD COLUMN id TEXT NOT NULL DEFAULT '';
UPDATE users SET id = 'AIDA' || upper(hex(randomblob(8)));
CREATE UNIQUE INDEX users_id ON users (id);

-- The credential generation, moved on by a password change or removal and by disabling:
-- refresh and login tokens issued at an older one are refused.
ALTER TABLE users ADD COLUMN credential_generation INTEGER NOT NULL DEFAULT 0;
