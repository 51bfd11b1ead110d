-- Berth metadata schema for PostgreSQL, version 8: who opened each upload session, so the
-- sessions one principal (and one repository) holds open can be bounded when a new one
-- starts. Sessions from before carry '' (as anonymous ones do).
ALTER TABLE uploads ADD COLUMN principal TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX uploads_repository ON uploads (repository);
CREATE INDEX uploads_principal ON uploads (principal);
