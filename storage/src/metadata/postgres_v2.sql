-- Berth metadata schema for PostgreSQL, version 2: every change to a repository's manifests
-- or tags sends the repository's name on channel `berth_manifests` when its transaction
-- commits, so that each replica drops what its manifest cache holds for that repository.
-- A trigger rather than a call in each statement: no writer can forget it.
CREATE FUNCTION berth_notify_manifest_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    repo_id BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        repo_id := OLD.repository_id;
    ELSE
        repo_id := NEW.repository_id;
    END IF;
    -- An empty payload (the repository itself is gone) means: forget everything.
    PERFORM pg_notify('berth_manifests', COALESCE((SELECT name FROM repositories WHERE id = repo_id), ''));
    RETURN NULL;
END
$$;

CREATE TRIGGER manifests_changed AFTER INSERT OR UPDATE OR DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION berth_notify_manifest_change();
CREATE TRIGGER tags_changed AFTER INSERT OR UPDATE OR DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION berth_notify_manifest_change();
