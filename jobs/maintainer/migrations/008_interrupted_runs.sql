-- A run stopped by SIGTERM at a chunk boundary is recorded as 'interrupted'; it resumes from its
-- checkpoint like a failed one. Idempotent: the runs table is shared by every table of the schema.
ALTER TABLE {{schema}}.catalogsync_runs DROP CONSTRAINT IF EXISTS catalogsync_runs_status_check;
ALTER TABLE {{schema}}.catalogsync_runs ADD CONSTRAINT catalogsync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted'));
