-- The task queue (reconciler/execute/worker.py): one row per task the leader hands to workers,
-- keyed by the task's idempotency key. A claim is leased (`claimed_until`, renewed by
-- the worker's heartbeat) and numbered (`claim`): a result is taken only from the
-- claim in force, so a worker paused past its lease is fenced.
CREATE TABLE task_queue (
    idempotency_key TEXT PRIMARY KEY,
    plan_hash       TEXT NOT NULL,
    resource        TEXT NOT NULL,
    provider        TEXT NOT NULL,
    site            TEXT,
    provider_limit  INTEGER NOT NULL,
    manifest_json   TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'done')),
    claim           BIGINT NOT NULL DEFAULT 0,
    claimed_by      TEXT,
    claimed_until   TIMESTAMPTZ,
    claims          INTEGER NOT NULL DEFAULT 0,
    enqueued_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    done_at         TIMESTAMPTZ,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX task_queue_ready ON task_queue (state, site, provider, seq);
CREATE TABLE workers (
    name       TEXT PRIMARY KEY,
    site       TEXT,
    info_json  TEXT NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL
);
