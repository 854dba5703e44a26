-- The journal (see reconciler/execute/journal.py): the same tables as the SQLite
-- journal, times as the same ISO text; `seq` keeps insertion order (SQLite's rowid).
CREATE TABLE plans (
    plan_hash   TEXT PRIMARY KEY,
    revision    TEXT,
    plan_json   TEXT NOT NULL,
    state       TEXT NOT NULL
                CHECK (state IN ('running', 'executed', 'reported', 'superseded')),
    reason      TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    stopped     TEXT,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX plans_by_state ON plans (state);
CREATE TABLE tasks (
    idempotency_key TEXT PRIMARY KEY,
    plan_hash       TEXT NOT NULL,
    resource        TEXT NOT NULL,
    stage           TEXT NOT NULL,
    point           TEXT NOT NULL,
    task            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('started', 'acknowledged', 'finished')),
    operation_id    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    runs            INTEGER NOT NULL DEFAULT 1,
    progress        TEXT,
    result_json     TEXT,
    error           TEXT,
    started_at      TEXT NOT NULL,
    acknowledged_at TEXT,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX tasks_by_plan ON tasks (plan_hash, resource);
CREATE TABLE outcomes (
    plan_hash    TEXT NOT NULL,
    resource     TEXT NOT NULL,
    outcome_json TEXT NOT NULL,
    PRIMARY KEY (plan_hash, resource)
);
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE applied (
    resource    TEXT PRIMARY KEY,
    record_json TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
