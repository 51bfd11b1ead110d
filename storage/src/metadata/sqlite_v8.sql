-- Berth metadata schema for SQLite, version 8: usage, kept as counters that triggers move
-- with every row added or removed (whoever removes it: a request, a repository delete, the
-- garbage collector), so reading usage never scans blobs; and quotas.

-- Per repository: the bytes and number of the blobs it links (each once), its manifests
-- and its tags. One row per repository, made by a trigger when the repository is.
CREATE TABLE repository_usage (
    repository_id INTEGER PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    bytes         INTEGER NOT NULL DEFAULT 0,
    blobs         INTEGER NOT NULL DEFAULT 0,
    manifests     INTEGER NOT NULL DEFAULT 0,
    tags          INTEGER NOT NULL DEFAULT 0
);

-- What is stored once whoever links it: the bytes and number of distinct blobs. In shards
-- (PostgreSQL spreads concurrent writers over several rows); SQLite has one writer and uses
-- shard 0 only. Readers add the shards up.
CREATE TABLE usage_totals (
    shard INTEGER PRIMARY KEY,
    bytes INTEGER NOT NULL DEFAULT 0,
    blobs INTEGER NOT NULL DEFAULT 0
);

-- Per key name: the bytes (plaintext sizes) and number of the copies sealed for it, sharded
-- like usage_totals.
CREATE TABLE key_usage (
    key_name TEXT NOT NULL,
    shard    INTEGER NOT NULL,
    bytes    INTEGER NOT NULL DEFAULT 0,
    copies   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, shard)
) WITHOUT ROWID;

-- What the rows held before this version.
INSERT INTO repository_usage (repository_id, bytes, blobs, manifests, tags)
SELECT r.id,
       COALESCE((SELECT SUM(b.size) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                 WHERE rb.repository_id = r.id), 0),
       (SELECT COUNT(*) FROM repository_blobs rb WHERE rb.repository_id = r.id),
       (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id),
       (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id)
FROM repositories r;
INSERT INTO usage_totals (shard, bytes, blobs) SELECT 0, COALESCE(SUM(size), 0), COUNT(*) FROM blobs;
INSERT INTO key_usage (key_name, shard, bytes, copies)
SELECT c.key_name, 0, SUM(b.size), COUNT(*) FROM blob_copies c JOIN blobs b ON b.digest = c.digest GROUP BY c.key_name;

CREATE TRIGGER repositories_usage AFTER INSERT ON repositories BEGIN
    INSERT OR IGNORE INTO repository_usage (repository_id) VALUES (NEW.id);
END;

-- A link's bytes are its blob's size: the blob row exists while a link or copy refers to it
-- (foreign keys), so it is there when either is removed.
CREATE TRIGGER repository_blobs_usage_insert AFTER INSERT ON repository_blobs BEGIN
    UPDATE repository_usage
       SET bytes = bytes + COALESCE((SELECT size FROM blobs WHERE digest = NEW.digest), 0), blobs = blobs + 1
     WHERE repository_id = NEW.repository_id;
END;
CREATE TRIGGER repository_blobs_usage_delete AFTER DELETE ON repository_blobs BEGIN
    UPDATE repository_usage
       SET bytes = bytes - COALESCE((SELECT size FROM blobs WHERE digest = OLD.digest), 0), blobs = blobs - 1
     WHERE repository_id = OLD.repository_id;
END;

CREATE TRIGGER manifests_usage_insert AFTER INSERT ON manifests BEGIN
    UPDATE repository_usage SET manifests = manifests + 1 WHERE repository_id = NEW.repository_id;
END;
CREATE TRIGGER manifests_usage_delete AFTER DELETE ON manifests BEGIN
    UPDATE repository_usage SET manifests = manifests - 1 WHERE repository_id = OLD.repository_id;
END;

CREATE TRIGGER tags_usage_insert AFTER INSERT ON tags BEGIN
    UPDATE repository_usage SET tags = tags + 1 WHERE repository_id = NEW.repository_id;
END;
CREATE TRIGGER tags_usage_delete AFTER DELETE ON tags BEGIN
    UPDATE repository_usage SET tags = tags - 1 WHERE repository_id = OLD.repository_id;
END;

CREATE TRIGGER blobs_usage_insert AFTER INSERT ON blobs BEGIN
    UPDATE usage_totals SET bytes = bytes + NEW.size, blobs = blobs + 1 WHERE shard = 0;
END;
CREATE TRIGGER blobs_usage_delete AFTER DELETE ON blobs BEGIN
    UPDATE usage_totals SET bytes = bytes - OLD.size, blobs = blobs - 1 WHERE shard = 0;
END;

CREATE TRIGGER blob_copies_usage_insert AFTER INSERT ON blob_copies BEGIN
    INSERT OR IGNORE INTO key_usage (key_name, shard) VALUES (NEW.key_name, 0);
    UPDATE key_usage
       SET bytes = bytes + COALESCE((SELECT size FROM blobs WHERE digest = NEW.digest), 0), copies = copies + 1
     WHERE key_name = NEW.key_name AND shard = 0;
END;
CREATE TRIGGER blob_copies_usage_delete AFTER DELETE ON blob_copies BEGIN
    UPDATE key_usage
       SET bytes = bytes - COALESCE((SELECT size FROM blobs WHERE digest = OLD.digest), 0), copies = copies - 1
     WHERE key_name = OLD.key_name AND shard = 0;
END;

-- Quotas set through the admin API (those of the configuration are not stored): a
-- repository name, or a prefix written `team-a/*` (`*`: every repository together).
-- NULL: no limit on that dimension.
CREATE TABLE quotas (
    scope      TEXT PRIMARY KEY,
    max_bytes  INTEGER,
    max_images INTEGER,
    updated_at INTEGER NOT NULL
);

-- The quotas whose use is at or past the warning threshold, per dimension: a `quota.warning`
-- event is written when a row is made (crossing upwards) and the row removed when use falls
-- back below, so each crossing warns once.
CREATE TABLE quota_warnings (
    scope      TEXT NOT NULL,
    dimension  TEXT NOT NULL CHECK (dimension IN ('bytes', 'images')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, dimension)
) WITHOUT ROWID;
