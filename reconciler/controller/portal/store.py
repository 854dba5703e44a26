"""Where request records are kept: a tiny store protocol, and SQLite in the state directory.

Beside the journal, at the same edge: `RequestStore` is all the portal needs (put a
record, get one, list them), so the PostgreSQL store (`reconciler.controller.portal.store_pg`,
with `RECONCILER_DATABASE_URL`) stands in without touching the rest.
`SqliteRequestStore` keeps `<state-dir>/requests.sqlite` (WAL), its own file: the
journal's schema, locks and retention are not touched. Records hold references, never
secret values (secure inputs are references by the time a request is accepted), and
every row is passed through the redactor all the same.

Safe to use from several threads (the API's workers and the follower): one
connection, behind a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from reconciler.controller.portal.phases import TERMINAL, RequestRecord
from reconciler.errors import PermanentError, TemporaryError
from reconciler.secrets import REDACTOR

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    phase       TEXT NOT NULL,
    record_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_phase ON requests (phase);
"""


class RequestStore(Protocol):
    """What the portal keeps about requests, across restarts."""

    def put(self, record: RequestRecord) -> None: ...

    def get(self, request_id: str) -> RequestRecord | None: ...

    def recent(self, limit: int = 100) -> list[RequestRecord]: ...

    def open(self) -> list[RequestRecord]:
        """Records whose phase may still change."""
        ...

    def close(self) -> None: ...


class SqliteRequestStore:
    """`RequestStore` on a SQLite file of the state directory."""

    FILENAME = "requests.sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=10.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise PermanentError(f"request store {path}: {exc}") from None

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SqliteRequestStore:
        return cls(Path(state_dir) / cls.FILENAME)

    def put(self, record: RequestRecord) -> None:
        text = REDACTOR.text(json.dumps(record.to_json(), sort_keys=True, default=str))
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO requests (id, created_at, phase, record_json) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, "
                    "record_json = excluded.record_json",
                    (record.id, record.created, record.phase, text),
                )
            except sqlite3.OperationalError as exc:
                raise TemporaryError(f"request store {self.path}: {exc}") from None

    def get(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record_json FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
        return RequestRecord.from_json(json.loads(row[0])) if row else None

    def recent(self, limit: int = 100) -> list[RequestRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record_json FROM requests ORDER BY created_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [RequestRecord.from_json(json.loads(r[0])) for r in rows]

    def open(self) -> list[RequestRecord]:
        marks = ", ".join("?" for _ in TERMINAL)
        with self._lock:
            rows = self._db.execute(
                f"SELECT record_json FROM requests WHERE phase NOT IN ({marks}) "
                "ORDER BY created_at, id",
                tuple(sorted(TERMINAL)),
            ).fetchall()
        return [RequestRecord.from_json(json.loads(r[0])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["RequestStore", "SqliteRequestStore"]
