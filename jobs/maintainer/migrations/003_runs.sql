-- Bookkeeping shared by every products table of the schema, keyed by the table's name.
CREATE TABLE IF NOT EXISTS {{schema}}.catalogsync_runs (
    table_name text NOT NULL,
    run_id text NOT NULL,
    object text,
    object_size bigint,
    chunk_size integer NOT NULL,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    message text,
    attempts integer NOT NULL DEFAULT 1,
    total bigint,
    processed bigint NOT NULL DEFAULT 0,
    inserted bigint NOT NULL DEFAULT 0,
    updated bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    invalid bigint NOT NULL DEFAULT 0,
    undeleted bigint NOT NULL DEFAULT 0,
    deleted bigint NOT NULL DEFAULT 0,
    chunks_done integer NOT NULL DEFAULT 0,
    checkpoint_line bigint NOT NULL DEFAULT 0,
    complete boolean,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    timings jsonb,
    PRIMARY KEY (table_name, run_id)
);

-- One row per committed chunk, written in the chunk's own transaction: the checkpoint.
CREATE TABLE IF NOT EXISTS {{schema}}.catalogsync_chunks (
    table_name text NOT NULL,
    run_id text NOT NULL,
    chunk integer NOT NULL,
    first_line bigint NOT NULL,
    last_line bigint NOT NULL,
    processed integer NOT NULL,
    inserted integer NOT NULL,
    updated integer NOT NULL,
    skipped integer NOT NULL,
    duplicates integer NOT NULL,
    invalid integer NOT NULL,
    undeleted integer NOT NULL,
    seconds real,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, run_id, chunk),
    FOREIGN KEY (table_name, run_id)
        REFERENCES {{schema}}.catalogsync_runs (table_name, run_id) ON DELETE CASCADE
);

-- Lines that could not become products, so nothing is dropped silently.
CREATE TABLE IF NOT EXISTS {{schema}}.catalogsync_rejects (
    table_name text NOT NULL,
    run_id text NOT NULL,
    line bigint NOT NULL,
    error text NOT NULL,
    raw text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, run_id, line),
    FOREIGN KEY (table_name, run_id)
        REFERENCES {{schema}}.catalogsync_runs (table_name, run_id) ON DELETE CASCADE
);
