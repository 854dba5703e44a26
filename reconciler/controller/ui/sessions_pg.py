"""The web UI's sessions in the shared database, so every replica knows every session.

Beside `reconciler.controller.ui.sessions` (whose `SessionStore` this is), chosen when
`RECONCILER_DATABASE_URL` is set: the session rows are `ui_sessions` (migration
0005), the cookie signing key one `meta` row made by the first replica that needs it.
Signing in on a standby, then a form the standby forwards to the leader, is one
session. Whoever can read the database can forge sessions, as with the journal
itself: give the database the protection of the controller's secrets.
"""

from __future__ import annotations

import secrets

from reconciler.controller.ui.sessions import Session
from reconciler.execute.store_pg import Database

KEY_FACT = "ui_session_key"


class PgSessions:
    """`SessionStore` in PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def signing_key(self) -> bytes:
        self.db.query(
            "INSERT INTO meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (KEY_FACT, secrets.token_hex(32)),
        )
        row = self.db.one("SELECT value FROM meta WHERE name = %s", (KEY_FACT,))
        assert row is not None  # inserted just above, or by another replica before
        return bytes.fromhex(row["value"])

    def put(self, session: Session) -> None:
        self.db.query(
            "INSERT INTO ui_sessions (id, csrf, created) VALUES (%s, %s, %s)",
            (session.id, session.csrf, session.created),
        )

    def get(self, session_id: str) -> Session | None:
        row = self.db.one("SELECT id, csrf, created FROM ui_sessions WHERE id = %s", (session_id,))
        return Session(row["id"], row["csrf"], float(row["created"])) if row else None

    def drop(self, session_id: str) -> None:
        self.db.query("DELETE FROM ui_sessions WHERE id = %s", (session_id,))


__all__ = ["PgSessions"]
