-- The leader lease (reconciler/controller/leader.py): one row per elected role. `epoch` grows by
-- one on every takeover; a leader's writes are refused once it is not the row's epoch.
-- Times are the database's clock (now()), so replicas' clocks never have to agree.
CREATE TABLE leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    holder_json TEXT NOT NULL,
    address     TEXT,
    epoch       BIGINT NOT NULL,
    backend_pid INTEGER,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
