"""The portal's request records in the shared database, so every replica knows every request.

Beside `reconciler.controller.portal.store` (whose `RequestStore` this is), chosen by
`reconciler.controller.portal.api.portal_service` when `RECONCILER_DATABASE_URL` is set: the rows
are `requests` (migration 0006), the columns those of `<state-dir>/requests.sqlite`
(`reconciler migrate-state` copies one into the other). A standby reads them to answer
`GET /api/v1/requests/{id}`; the leader alone advances them, and each of its writes
is fenced by its epoch: a paused leader that wakes up after a takeover writes nothing.
Records hold references, never secret values, and pass the redactor all the same.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from reconciler.controller.portal.phases import TERMINAL, RequestRecord
from reconciler.execute.store_pg import LEADER_ROW, Database, Fenced
from reconciler.secrets import REDACTOR

_PUT = """
INSERT INTO requests (id, created_at, phase, record_json) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, record_json = excluded.record_json
"""
_FENCED_PUT = """
INSERT INTO requests (id, created_at, phase, record_json)
SELECT %s, %s, %s, %s
WHERE EXISTS (SELECT 1 FROM leader_lease WHERE name = %s AND epoch = %s FOR SHARE)
ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, record_json = excluded.record_json
"""
# FOR SHARE: a takeover's update of the lease row waits for this write, or this write
# sees the takeover's epoch and inserts nothing.


class PgRequestStore:
    """`RequestStore` in PostgreSQL. `epoch` says the leader epoch writes are fenced by
    (None: unfenced, as for a single controller or `migrate-state`)."""

    def __init__(self, db: Database, *, epoch: Callable[[], int | None] = lambda: None) -> None:
        self.db = db
        self._epoch = epoch
        self._lock = threading.Lock()  # one connection for the API's threads and the follower

    def put(self, record: RequestRecord) -> None:
        text = REDACTOR.text(json.dumps(record.to_json(), sort_keys=True, default=str))
        row = (record.id, record.created, record.phase, text)
        epoch = self._epoch()
        with self._lock:
            if epoch is None:
                self.db.query(_PUT, row)
                return
            written = self.db.run(
                lambda conn: conn.execute(_FENCED_PUT, (*row, LEADER_ROW, epoch)).rowcount
            )
        if not written:
            raise Fenced(
                f"request {record.id} not recorded: this controller's leader epoch {epoch} "
                "is not in force"
            )

    def get(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            row = self.db.one("SELECT record_json FROM requests WHERE id = %s", (request_id,))
        return RequestRecord.from_json(json.loads(row["record_json"])) if row else None

    def recent(self, limit: int = 100) -> list[RequestRecord]:
        with self._lock:
            rows = self.db.query(
                "SELECT record_json FROM requests ORDER BY created_at DESC, id LIMIT %s",
                (limit,),
            )
        return [RequestRecord.from_json(json.loads(r["record_json"])) for r in rows]

    def open(self) -> list[RequestRecord]:
        with self._lock:
            rows = self.db.query(
                "SELECT record_json FROM requests WHERE phase <> ALL(%s) ORDER BY created_at, id",
                (sorted(TERMINAL),),
            )
        return [RequestRecord.from_json(json.loads(r["record_json"])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self.db.close()


__all__ = ["PgRequestStore"]
