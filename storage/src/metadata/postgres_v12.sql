-- Berth metadata schema for PostgreSQL, version 12: when a lifecycle policy was last run
-- (ECR's lastEvaluatedAt), unix seconds; NULL: never.
ALTER TABLE lifecycle_policies ADD COLUMN last_evaluated_at BIGINT;
