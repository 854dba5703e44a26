-- The portal's request records (reconciler/controller/portal/store_pg.py), shared by every replica:
-- the same columns as `<state-dir>/requests.sqlite`, so a standby answers
-- `GET /api/v1/requests/{id}` and a new leader follows the requests on.
CREATE TABLE requests (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    phase       TEXT NOT NULL,
    record_json TEXT NOT NULL
);
CREATE INDEX requests_by_phase ON requests (phase);
