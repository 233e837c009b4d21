-- The products table in the shape the original sync created, so its readers keep working.
-- An existing table of that shape is kept as it is; columns it lacks are added.
-- The schema exists by now: migrate() creates it, only when missing, before any migration runs.

CREATE TABLE IF NOT EXISTS {{table}} (
    id text PRIMARY KEY,
    name text,
    status text,
    organization text,
    brand text,
    "eanGtin13" text,
    "eanGtin14" text,
    "artgId" text,
    pbs text,
    "snomedMpp" text,
    "snomedTpp" text,
    "gs1Category" text,
    "createdAt" timestamptz,
    "metaUpdatedAt" timestamptz,
    updated_at timestamptz DEFAULT now(),
    raw jsonb
);

ALTER TABLE {{table}}
    ADD COLUMN IF NOT EXISTS name text,
    ADD COLUMN IF NOT EXISTS status text,
    ADD COLUMN IF NOT EXISTS organization text,
    ADD COLUMN IF NOT EXISTS brand text,
    ADD COLUMN IF NOT EXISTS "eanGtin13" text,
    ADD COLUMN IF NOT EXISTS "eanGtin14" text,
    ADD COLUMN IF NOT EXISTS "artgId" text,
    ADD COLUMN IF NOT EXISTS pbs text,
    ADD COLUMN IF NOT EXISTS "snomedMpp" text,
    ADD COLUMN IF NOT EXISTS "snomedTpp" text,
    ADD COLUMN IF NOT EXISTS "gs1Category" text,
    ADD COLUMN IF NOT EXISTS "createdAt" timestamptz,
    ADD COLUMN IF NOT EXISTS "metaUpdatedAt" timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS raw jsonb;

-- One index per looked-up column, unless the table already has one leading with that column
-- (the original system named its indexes its own way; a second copy would only cost writes).
DO $$
DECLARE
    col text;
BEGIN
    FOREACH col IN ARRAY ARRAY['status', 'organization', 'brand', 'eanGtin13', 'artgId', 'metaUpdatedAt']
    LOOP
        IF NOT EXISTS (
            SELECT 1
            FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = {{table_literal}}::regclass AND a.attname = col
        ) THEN
            EXECUTE format('CREATE INDEX %I ON %s (%I)', {{index_prefix}} || lower(col) || '_idx', {{table_literal}}, col);
        END IF;
    END LOOP;
END
$$;
