-- Berth metadata schema for PostgreSQL, version 12: when a lifecycle policy was last run
-- (ECR's lastEvaluatedAt), unix seconds, NULL: never; and how many images that run expired
-- and kept (planned, but their tags had changed).
ALTER TABLE lifecycle_policies ADD COLUMN last_evaluated_at BIGINT;
ALTER TABLE lifecycle_policies ADD COLUMN last_expired BIGINT NOT NULL DEFAULT 0;
ALTER TABLE lifecycle_policies ADD COLUMN last_kept BIGINT NOT NULL DEFAULT 0;
