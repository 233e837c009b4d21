-- How many products of a chunk (and of a run) had U+0000 in a string or key, which PostgreSQL's
-- text and jsonb cannot hold: each such character was stored as U+FFFD.
ALTER TABLE {{schema}}.catalogsync_runs
    ADD COLUMN IF NOT EXISTS nul_replaced bigint NOT NULL DEFAULT 0;
ALTER TABLE {{schema}}.catalogsync_chunks
    ADD COLUMN IF NOT EXISTS nul_replaced integer NOT NULL DEFAULT 0;
