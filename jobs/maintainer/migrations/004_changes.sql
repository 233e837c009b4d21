-- Where a run's catalog came from: incremental runs start from the last successful run's
-- fetched_at (the moment its stream was requested from MediPim) of the same catalog and table.
ALTER TABLE {{schema}}.catalogsync_runs
    ADD COLUMN IF NOT EXISTS catalog text,
    ADD COLUMN IF NOT EXISTS mode text,
    ADD COLUMN IF NOT EXISTS fetched_at timestamptz;

CREATE INDEX IF NOT EXISTS catalogsync_runs_watermark
    ON {{schema}}.catalogsync_runs (table_name, catalog, fetched_at)
    WHERE status = 'succeeded';

-- The change feed: one row per product a run changed (or, in a dry run, would change), written
-- in the transaction of the change itself. No foreign key to the runs table: a dry run has no
-- run row, and the feed's retention is its own.
CREATE TABLE IF NOT EXISTS {{schema}}.catalogsync_changes (
    table_name text NOT NULL,
    run_id text NOT NULL,
    dry_run boolean NOT NULL DEFAULT false,
    product_id text NOT NULL,
    kind text NOT NULL
        CHECK (kind IN ('inserted', 'updated', 'status_changed', 'deleted', 'restored')),
    fields text[] NOT NULL DEFAULT '{}',
    old_status text,
    new_status text,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, run_id, dry_run, product_id)
);

CREATE INDEX IF NOT EXISTS catalogsync_changes_by_time
    ON {{schema}}.catalogsync_changes (table_name, changed_at);
