-- Per-provider pacing shared by every worker (`limits.ratePerSecond` across processes):
-- the next free start time of a call to the provider, on the database's clock, and how
-- many calls were paced through it (the bucket's accounting).
CREATE TABLE provider_rate (
    provider TEXT PRIMARY KEY,
    next_at TIMESTAMPTZ NOT NULL,
    calls BIGINT NOT NULL DEFAULT 0
);
