-- What the run's object was, beyond its key and size: its sha256 metadata and ETag. A run resumes,
-- or answers with its stored summary, only on an object of the same identity; a catalog
-- republished under the same key and size is a different object, and the run starts over.
ALTER TABLE {{schema}}.catalogsync_runs
    ADD COLUMN IF NOT EXISTS object_identity text;
