-- Per resource, every resolution its pipeline completed with (the history of `applied`,
-- as the SQLite journal keeps it): a head whose resolution for a resource is one it had
-- before reverts a change (reconciler/plan/undo.py). `seq` orders them journal-wide.
CREATE TABLE resolutions (
    resource TEXT NOT NULL,
    resolution TEXT NOT NULL,
    revision TEXT,
    applied_at TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (resource, resolution)
);
INSERT INTO resolutions (resource, resolution, revision, applied_at, seq)
    SELECT resource, record_json::jsonb ->> 'resolution', record_json::jsonb ->> 'revision',
           updated_at, row_number() OVER (ORDER BY updated_at, resource)
    FROM applied WHERE record_json::jsonb ->> 'resolution' IS NOT NULL;
