-- The web UI's sign-in sessions, shared by every replica (the signing key is a row of
-- `meta`): a session made on one replica is known to the others.
CREATE TABLE ui_sessions (
    id TEXT PRIMARY KEY,
    csrf TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
