-- Berth metadata schema for PostgreSQL, version 11: repository rules as ECR has them (tag
-- immutability, lifecycle policies, last pull times, repository creation templates).

-- ECR's imageTagMutability: MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION or
-- MUTABLE_WITH_EXCLUSION; the exclusion filters as a JSON array of wildcard strings.
ALTER TABLE repositories ADD COLUMN tag_mutability TEXT NOT NULL DEFAULT 'MUTABLE';
ALTER TABLE repositories ADD COLUMN tag_mutability_exclusions TEXT NOT NULL DEFAULT '[]';

-- When the manifest was last pulled (a GET by tag or digest), unix seconds, written in
-- batches; NULL: never since it was pushed.
ALTER TABLE manifests ADD COLUMN last_pulled_at BIGINT;

-- A repository's lifecycle policy, the JSON text as the user gave it (validated on the way
-- in); it goes with its repository.
CREATE TABLE lifecycle_policies (
    repository_id BIGINT PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    policy        TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Repository creation templates: `prefix` is `ROOT` or a namespace (no trailing slash); the
-- longest whose `applied_for` (JSON array of CREATE_ON_PUSH, PULL_THROUGH_CACHE,
-- REPLICATION) names the way a repository is being created gives it its settings.
-- `key_name` NULL: the registry's default key; `resource_tags` a JSON array of
-- {"Key","Value"}; the policies as the JSON text given.
CREATE TABLE repository_templates (
    prefix                    TEXT COLLATE "C" PRIMARY KEY,
    description               TEXT NOT NULL DEFAULT '',
    tag_mutability            TEXT NOT NULL DEFAULT 'MUTABLE',
    tag_mutability_exclusions TEXT NOT NULL DEFAULT '[]',
    key_name                  TEXT,
    lifecycle_policy          TEXT,
    repository_policy         TEXT,
    resource_tags             TEXT NOT NULL DEFAULT '[]',
    applied_for               TEXT NOT NULL DEFAULT '[]',
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);
