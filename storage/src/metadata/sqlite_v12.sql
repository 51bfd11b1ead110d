-- Berth metadata schema for SQLite, version 12: what ECR's own API (issue 19) keeps.
--
-- An access key's secret, sealed under the key ring (`sealed:v1:<base64>`, bound to the key's
-- id), so Signature Version 4 can recompute a request's signature; NULL for a key created
-- before this version (sealed at its next sign-in with the secret) or without a KEK. The
-- digest stays what Basic sign-ins check.
ALTER TABLE access_keys ADD COLUMN secret_sealed TEXT;

-- ECR's imageScanningConfiguration.scanOnPush, stored and answered as given (Berth does not
-- scan images).
ALTER TABLE repositories ADD COLUMN scan_on_push INTEGER NOT NULL DEFAULT 0;

-- Registry-wide settings by name, each a JSON document: `scanning` (ECR's registry scanning
-- configuration, stored as given).
CREATE TABLE registry_settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The last lifecycle policy preview of each repository (ECR's StartLifecyclePolicyPreview):
-- the policy text it ran, the plan it found (JSON), and when.
CREATE TABLE lifecycle_previews (
    repository_id INTEGER PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    policy        TEXT NOT NULL,
    result        TEXT NOT NULL,
    started_at    INTEGER NOT NULL
);
