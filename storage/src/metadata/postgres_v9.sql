-- Berth metadata schema for PostgreSQL, version 9: usage and quotas (sqlite_v8.sql).
--
-- The counters move with statement-level triggers over transition tables: one UPDATE per
-- repository a statement touches, however many rows it adds or removes (a repository
-- delete, a garbage-collection batch). What is counted once for the whole registry (distinct
-- blobs, sealed copies per key) is spread over USAGE_SHARDS rows: a statement adds to the
-- shard of its backend (`pg_backend_pid() % 16`), so concurrent pushes on different
-- connections do not queue on one row lock, and a transaction locks one shard row only.
-- A link's or copy's bytes are its blob's size, read from `blobs`: delete links and copies
-- in statements before the one that deletes their blob rows (foreign keys require that
-- order anyway, except inside one statement's common table expressions).

CREATE TABLE repository_usage (
    repository_id BIGINT PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    bytes         BIGINT NOT NULL DEFAULT 0,
    blobs         BIGINT NOT NULL DEFAULT 0,
    manifests     BIGINT NOT NULL DEFAULT 0,
    tags          BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE usage_totals (
    shard INTEGER PRIMARY KEY,
    bytes BIGINT NOT NULL DEFAULT 0,
    blobs BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE key_usage (
    key_name TEXT COLLATE "C" NOT NULL,
    shard    INTEGER NOT NULL,
    bytes    BIGINT NOT NULL DEFAULT 0,
    copies   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, shard)
);

-- What the rows held before this version (the migration holds its lock: nothing writes meanwhile).
INSERT INTO repository_usage (repository_id, bytes, blobs, manifests, tags)
SELECT r.id,
       COALESCE((SELECT SUM(b.size) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                 WHERE rb.repository_id = r.id), 0),
       (SELECT COUNT(*) FROM repository_blobs rb WHERE rb.repository_id = r.id),
       (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id),
       (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id)
FROM repositories r;
INSERT INTO usage_totals (shard) SELECT generate_series(0, 15);
UPDATE usage_totals SET bytes = (SELECT COALESCE(SUM(size), 0) FROM blobs), blobs = (SELECT COUNT(*) FROM blobs)
 WHERE shard = 0;
INSERT INTO key_usage (key_name, shard, bytes, copies)
SELECT c.key_name, 0, SUM(b.size), COUNT(*) FROM blob_copies c JOIN blobs b ON b.digest = c.digest GROUP BY c.key_name;

CREATE FUNCTION berth_usage_shard() RETURNS INTEGER LANGUAGE sql STABLE AS $$ SELECT pg_backend_pid() % 16 $$;

CREATE FUNCTION berth_usage_repository() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO repository_usage (repository_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER repositories_usage AFTER INSERT ON repositories
    FOR EACH ROW EXECUTE FUNCTION berth_usage_repository();

-- TG_ARGV[0]: 1 for rows added, -1 for rows removed; `changed` is the transition table.
CREATE FUNCTION berth_usage_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign BIGINT := TG_ARGV[0]::BIGINT;
BEGIN
    UPDATE repository_usage u SET bytes = u.bytes + sign * d.bytes, blobs = u.blobs + sign * d.n
      FROM (SELECT c.repository_id, COALESCE(SUM(b.size), 0) AS bytes, COUNT(*) AS n
              FROM changed c LEFT JOIN blobs b ON b.digest = c.digest GROUP BY c.repository_id) d
     WHERE u.repository_id = d.repository_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER repository_blobs_usage_insert AFTER INSERT ON repository_blobs
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_links('1');
CREATE TRIGGER repository_blobs_usage_delete AFTER DELETE ON repository_blobs
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_links('-1');

CREATE FUNCTION berth_usage_manifests() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign BIGINT := TG_ARGV[0]::BIGINT;
BEGIN
    UPDATE repository_usage u SET manifests = u.manifests + sign * d.n
      FROM (SELECT repository_id, COUNT(*) AS n FROM changed GROUP BY repository_id) d
     WHERE u.repository_id = d.repository_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER manifests_usage_insert AFTER INSERT ON manifests
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_manifests('1');
CREATE TRIGGER manifests_usage_delete AFTER DELETE ON manifests
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_manifests('-1');

CREATE FUNCTION berth_usage_tags() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign BIGINT := TG_ARGV[0]::BIGINT;
BEGIN
    UPDATE repository_usage u SET tags = u.tags + sign * d.n
      FROM (SELECT repository_id, COUNT(*) AS n FROM changed GROUP BY repository_id) d
     WHERE u.repository_id = d.repository_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER tags_usage_insert AFTER INSERT ON tags
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_tags('1');
CREATE TRIGGER tags_usage_delete AFTER DELETE ON tags
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_tags('-1');

CREATE FUNCTION berth_usage_blobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign BIGINT := TG_ARGV[0]::BIGINT;
    added_bytes BIGINT;
    added BIGINT;
BEGIN
    SELECT COALESCE(SUM(size), 0), COUNT(*) INTO added_bytes, added FROM changed;
    IF added > 0 THEN
        UPDATE usage_totals SET bytes = bytes + sign * added_bytes, blobs = blobs + sign * added
         WHERE shard = berth_usage_shard();
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER blobs_usage_insert AFTER INSERT ON blobs
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_blobs('1');
CREATE TRIGGER blobs_usage_delete AFTER DELETE ON blobs
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_blobs('-1');

CREATE FUNCTION berth_usage_copies() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign BIGINT := TG_ARGV[0]::BIGINT;
BEGIN
    INSERT INTO key_usage AS k (key_name, shard, bytes, copies)
    SELECT c.key_name, berth_usage_shard(), sign * COALESCE(SUM(b.size), 0), sign * COUNT(*)
      FROM changed c LEFT JOIN blobs b ON b.digest = c.digest GROUP BY c.key_name
    ON CONFLICT (key_name, shard) DO UPDATE SET bytes = k.bytes + excluded.bytes, copies = k.copies + excluded.copies;
    RETURN NULL;
END
$$;
CREATE TRIGGER blob_copies_usage_insert AFTER INSERT ON blob_copies
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_copies('1');
CREATE TRIGGER blob_copies_usage_delete AFTER DELETE ON blob_copies
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION berth_usage_copies('-1');

CREATE TABLE quotas (
    scope      TEXT COLLATE "C" PRIMARY KEY,
    max_bytes  BIGINT,
    max_images BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE quota_warnings (
    scope      TEXT COLLATE "C" NOT NULL,
    dimension  TEXT COLLATE "C" NOT NULL CHECK (dimension IN ('bytes', 'images')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, dimension)
);
