-- The project's own columns. Rows kept from the original system start with no content hash, so
-- the first sync rewrites each of them once, bringing every mapped column up to date.
ALTER TABLE {{table}}
    ADD COLUMN IF NOT EXISTS content_hash bytea,
    ADD COLUMN IF NOT EXISTS first_seen_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_seen_at timestamptz,
    ADD COLUMN IF NOT EXISTS deleted_at timestamptz;

-- lz4 compresses the ~2 KB raw documents several times faster than the default pglz
-- (PostgreSQL 14+ built with lz4; elsewhere the default stays).
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN raw SET COMPRESSION lz4', {{table_literal}});
    END IF;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; raw keeps the default compression';
END
$$;
