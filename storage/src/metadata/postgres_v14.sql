-- Berth metadata schema for PostgreSQL, version 14: the pull-through cache (issue 21).
--
-- Pull-through cache rules (ECR's CreatePullThroughCacheRule): a repository prefix (`ROOT` or a
-- namespace) whose missing content is fetched from an upstream registry. `credentials` is the
-- upstream's credentials sealed under the key ring (`sealed:v1:<base64>`), NULL for anonymous.
CREATE TABLE pull_through_rules (
    prefix          TEXT COLLATE "C" PRIMARY KEY,
    upstream_url    TEXT NOT NULL,
    upstream_prefix TEXT,
    credentials     TEXT,
    refresh_seconds BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- When each tag of a cached repository was last found current upstream: a tag is checked again
-- (HEAD) only once its rule's `refresh` has passed. Goes with the repository.
CREATE TABLE pull_through_tag_checks (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    tag           TEXT COLLATE "C" NOT NULL,
    checked_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, tag)
);
