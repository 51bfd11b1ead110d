-- Berth metadata schema for SQLite, version 11: when a lifecycle policy was last run (ECR's
-- lastEvaluatedAt), unix seconds, NULL: never; and how many images that run expired and kept
-- (planned, but their tags had changed).
ALTER TABLE lifecycle_policies ADD COLUMN last_evaluated_at INTEGER;
ALTER TABLE lifecycle_policies ADD COLUMN last_expired INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lifecycle_policies ADD COLUMN last_kept INTEGER NOT NULL DEFAULT 0;
