-- What a run that deleted left behind: the live products after its deletions, and the delete
-- limit it ran with. The next runs bound their deletions against the largest of these over a
-- window of recent runs, so a series of runs just under the limit cannot add up past it.
ALTER TABLE {{schema}}.catalogsync_runs
    ADD COLUMN IF NOT EXISTS live_after bigint,
    ADD COLUMN IF NOT EXISTS max_delete_fraction real;
