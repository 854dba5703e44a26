"""Leader election in the shared database: one replica leads, the others stand by.

Part of the loop, beside the scheduler and the server (used only with
`RECONCILER_DATABASE_URL`). The lease is one row of `leader_lease` (migration 0002):
holder, the address of its API, an expiry on the database's clock, and a fencing
`epoch` that grows by one at every takeover.

- **Taking it**: a replica takes the row when it is free, expired, or its holder's
  database session has ended since the holder last renewed (its process died: the
  server closes the session at once, so a standby need not wait the lease out; after
  a database restart the shortcut does not apply, and the leader has the lease's
  time to reconnect and renew). Each takeover increments the epoch.
- **Keeping it**: the leader renews it by heartbeat (every third of the lease). A
  renewal that finds another epoch, or none succeeding for a whole lease, means it is
  lost: `on_lost` is called at once (the controller starts no new task).
- **Fencing**: the leader's journal carries its epoch (`PgJournal.epoch`); every
  write reads the lease row first, in the same transaction, and is refused once a
  newer leader exists. A paused leader that wakes up cannot write over its successor.

`LeaderLease.take` is the one-shot form (`reconciler apply`): the lease at once, or
`LeaseHeld` naming who has it; `acquire_lease` takes it, or the state directory's
flock without a database, for the controller. `Election` is `reconciler run`'s: stand by — serving
reads (statuses from the status branch) and forwarding POSTs to the leader
(`StandbyForward`, 503 with the leader's address when it cannot) — until elected.
`GET /api/v1/controller` (`install_routes`) tells role, leader, lease and epoch.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from reconciler.errors import ReconcilerError
from reconciler.execute.lease import Lease, LeaseHeld
from reconciler.execute.store import HeldLease, uses_database
from reconciler.execute.store_pg import LEADER_ROW, Database, described, open_database
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

    from reconciler.controller.scheduler import Scheduler
    from reconciler.settings import Settings

log = structlog.get_logger("reconciler.leader")

_TAKE = """
INSERT INTO leader_lease AS l (name, holder, holder_json, address, epoch, backend_pid,
                               acquired_at, renewed_at, expires_at)
VALUES (%(name)s, %(holder)s, %(json)s, %(address)s, 1, pg_backend_pid(),
        now(), now(), now() + %(ttl)s * interval '1 second')
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder, holder_json = excluded.holder_json,
    address = excluded.address, epoch = l.epoch + 1, backend_pid = excluded.backend_pid,
    acquired_at = now(), renewed_at = now(), expires_at = excluded.expires_at
WHERE l.holder = excluded.holder
   OR l.expires_at < now()
   OR (l.renewed_at > pg_postmaster_start_time()
       AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = l.backend_pid))
RETURNING epoch, expires_at
"""
_RENEW = """
UPDATE leader_lease SET renewed_at = now(), expires_at = now() + %(ttl)s * interval '1 second',
                        backend_pid = pg_backend_pid()
WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s
RETURNING expires_at
"""


@dataclass(frozen=True)
class LeaseView:
    """The lease row as `GET /api/v1/controller` shows it."""

    holder: str
    holder_info: dict[str, Any]
    address: str | None
    epoch: int
    expires_at: datetime
    renewed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "address": self.address,
            "pid": self.holder_info.get("pid"),
            "hostname": self.holder_info.get("hostname"),
            "started": self.holder_info.get("started"),
            "epoch": self.epoch,
            "expires": self.expires_at.astimezone(UTC).isoformat(timespec="milliseconds"),
            "renewed": self.renewed_at.astimezone(UTC).isoformat(timespec="milliseconds"),
        }


class DatabaseLeaseHeld(LeaseHeld):
    """Another controller leads on this database."""

    def __init__(self, database: str, holder: dict[str, Any], expires: datetime) -> None:
        self.holder = holder
        who = (
            f"{holder.get('holder', '?')} (pid {holder.get('pid', '?')} on "
            f"{holder.get('hostname', '?')}, since {holder.get('started', '?')})"
        )
        ReconcilerError.__init__(
            self,
            f"database {database} is led by {who}; its lease runs until "
            f"{expires.astimezone(UTC).isoformat(timespec='seconds')}",
        )


def holder_info(address: str | None, name: str = "reconciler") -> dict[str, Any]:
    return {
        "holder": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        "role": name,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "address": address,
    }


class LeaderLease:
    """This process's claim on the leader row: taken, renewed by heartbeat, released."""

    def __init__(self, db: Database, ttl: float, info: dict[str, Any]) -> None:
        self.db = db
        self.ttl = ttl
        self.holder = info
        self.name = str(info["holder"])
        self.epoch: int | None = None
        self._listeners: list[Callable[[str], object]] = []
        self.lost: str | None = None
        self._released = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._valid_until = 0.0  # monotonic: the end of the last renewal's lease

    @classmethod
    def for_settings(cls, settings: Settings, *, holder: str = "reconciler") -> LeaderLease:
        db = open_database(settings, role="leader lease")
        db.retry_for = settings.leader_lease  # a heartbeat gives up within one lease
        return cls(db, settings.leader_lease, holder_info(advertised(settings), holder))

    @classmethod
    def take(cls, settings: Settings, *, holder: str = "reconciler") -> LeaderLease:
        """The lease now, with its heartbeat running, or `LeaseHeld` naming the leader."""
        lease = cls.for_settings(settings, holder=holder)
        if not lease.try_take():
            view = lease.view()
            lease.db.close()
            if view is None:
                raise LeaseHeld(Path(described(settings)), "an unknown process")
            raise DatabaseLeaseHeld(described(settings), view.holder_info, view.expires_at)
        lease.start_heartbeat()
        return lease

    def try_take(self) -> bool:
        """Take the row if it is free, expired or its holder's session ended."""
        args = {
            "name": LEADER_ROW,
            "holder": self.name,
            "json": json.dumps(self.holder),
            "address": self.holder.get("address"),
            "ttl": self.ttl,
        }
        began = time.monotonic()
        row = self.db.one(_TAKE, args)
        if row is None:
            return False
        self.epoch = int(row["epoch"])
        self._valid_until = began + self.ttl
        self.lost = None
        log.info("leader lease taken", holder=self.name, epoch=self.epoch, ttl_s=self.ttl)
        return True

    def renew(self) -> bool:
        began = time.monotonic()
        args = {"name": LEADER_ROW, "holder": self.name, "epoch": self.epoch, "ttl": self.ttl}
        row = self.db.one(_RENEW, args)
        if row is not None:
            self._valid_until = began + self.ttl
        return row is not None

    def view(self) -> LeaseView | None:
        row = self.db.one("SELECT * FROM leader_lease WHERE name = %s", (LEADER_ROW,))
        if row is None:
            return None
        return LeaseView(
            holder=row["holder"],
            holder_info=json.loads(row["holder_json"]),
            address=row["address"],
            epoch=int(row["epoch"]),
            expires_at=row["expires_at"],
            renewed_at=row["renewed_at"],
        )

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="leader-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                kept = self.renew()
                why = None if kept else "another replica took the leader lease over"
            except ReconcilerError as exc:
                kept = time.monotonic() < self._valid_until
                why = None if kept else f"the lease could not be renewed: {exc}"
                log.warning("leader lease not renewed", error=REDACTOR.text(str(exc)))
            if why is not None:
                self._lose(why)
                return

    def _lose(self, why: str) -> None:
        self.lost = why
        log.error("leadership lost: no new work starts", holder=self.name, epoch=self.epoch,
                  reason=why)  # fmt: skip
        for listener in list(self._listeners):
            try:
                listener(f"leadership lost: {why}")
            except Exception:  # the others must still hear of it
                log.exception("a leadership-lost listener failed")

    def when_lost(self, listener: Callable[[str], object]) -> None:
        """Call `listener(reason)` (from the heartbeat's thread) once the lease is lost."""
        self._listeners.append(listener)

    def release(self) -> None:
        """Stop renewing and give the lease up, so a standby takes over at once."""
        if self._released:
            return
        self._released = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.epoch is not None and self.lost is None:
            try:
                self.db.query(
                    "UPDATE leader_lease SET expires_at = now() - interval '1 second' "
                    "WHERE name = %s AND holder = %s AND epoch = %s RETURNING epoch",
                    (LEADER_ROW, self.name, self.epoch),
                )
            except ReconcilerError as exc:
                log.warning("leader lease not released", error=REDACTOR.text(str(exc)))
        self.db.close()


def acquire_lease(settings: Settings, *, holder: str = "reconciler") -> HeldLease:
    """The one-writer lease: the state directory's flock (SQLite), or the database's
    leader lease, taken at once or `LeaseHeld` naming who holds it."""
    if not uses_database(settings):
        return Lease.acquire(Path(settings.state_dir), holder=holder)
    return LeaderLease.take(settings, holder=holder)


def advertised(settings: Settings) -> str:
    """The URL other replicas forward POSTs to."""
    return (settings.advertise_url or f"http://{settings.listen}").rstrip("/")


class Election:
    """`reconciler run` on a shared database: standby until this replica leads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lease = LeaderLease.for_settings(settings)
        self.role = "standby"
        self._view: LeaseView | None = None
        self._viewed = 0.0

    def leader(self) -> LeaseView | None:
        """The lease row, read at most twice a second (the API asks often)."""
        if time.monotonic() - self._viewed > 0.5:
            try:
                self._view = self.lease.view()
            except ReconcilerError as exc:
                log.warning("leader lease unreadable", error=REDACTOR.text(str(exc)))
            self._viewed = time.monotonic()
        return self._view

    async def lead(self, scheduler: Scheduler) -> bool:
        """Stand by until elected (True) or stopping (False); meanwhile the scheduler's
        statuses follow the status branch, so reads are served."""
        reader = _StandbyReader(self.settings)
        announced = False
        while not scheduler.stopping:
            try:
                taken = await asyncio.to_thread(self.lease.try_take)
            except ReconcilerError as exc:
                log.warning("leader election: database unreachable", error=REDACTOR.text(str(exc)))
                taken = False
            if taken:
                self.role = "leader"
                self._viewed = 0.0
                self.lease.start_heartbeat()
                return True
            if not announced:
                view = self.leader()
                log.info("standing by", leader=view.holder if view else None)
                announced = True
            await reader.refresh(scheduler)
            for _ in range(int(self.lease.ttl / 3 / 0.1) or 1):
                if scheduler.stopping:
                    break
                await asyncio.sleep(0.1)
        return False

    def abandon(self, why: str) -> None:
        """Elected, but the controller could not start: give the lease to another."""
        log.error("elected but cannot lead: the lease is given up", error=REDACTOR.text(why))
        self.lease._lose(why)
        self.lease.release()

    def describe(self) -> dict[str, Any]:
        view = self.leader()
        return {
            "role": self.role,
            "identity": self.lease.holder,
            "leader": view.to_json() if view else None,
            "epoch": view.epoch if view else None,
            "leaseSeconds": self.lease.ttl,
            "lost": self.lease.lost,
        }


class _StandbyReader:
    """A standby's view of the fleet: the status branch, fetched now and then."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._source: Any = None
        self._last = 0.0

    async def refresh(self, scheduler: Scheduler) -> None:
        if time.monotonic() - self._last < max(5.0, self.settings.leader_lease):
            return
        self._last = time.monotonic()
        try:
            await asyncio.to_thread(self._read, scheduler)
        except Exception as exc:  # a standby's reads are best effort
            log.warning("standby: status not read", error=REDACTOR.text(str(exc)))

    def _read(self, scheduler: Scheduler) -> None:
        from reconciler.source import DeclaredSource, StatusWriter
        from reconciler.source.readback import read_statuses

        if self._source is None:
            self._source = DeclaredSource.from_settings(self.settings)
        self._source.mirror.fetch()
        branch = StatusWriter.from_settings(self._source.mirror, self.settings).branch
        scheduler.statuses = read_statuses(self._source.repo, branch)
        good = self._source.last_good
        scheduler.ready = good is not None
        scheduler.revision = self._source.last_reconciled


# --- the HTTP side ------------------------------------------------------------------------


LOCAL_POSTS = frozenset({"/signin", "/signout"})
"""POSTs a standby answers itself: UI sessions live in the database every replica shares."""
LEADER_READS = ("/api/v1/operations", "/operations")
"""GETs a standby forwards too: operations live in the leader's memory (the one that runs
them), so a standby asked about one it forwarded would not know it."""


def _leader_read(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in LEADER_READS)


class StandbyForward:
    """ASGI middleware: on a standby, a POST (and a read of operations) goes to the
    leader; 503 with the leader's address when there is none or it cannot be reached."""

    def __init__(self, app: ASGIApp, election: Election | None, max_bytes: int) -> None:
        self.app = app
        self.election = election
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        election = self.election
        if (
            election is None
            or scope["type"] != "http"
            or election.role == "leader"
            or not (
                (scope["method"] == "POST" and scope["path"] not in LOCAL_POSTS)
                or (scope["method"] == "GET" and _leader_read(scope["path"]))
            )
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        view = election.leader()
        address = view.address if view is not None else None
        if address and address != election.lease.holder.get("address"):
            answered = await _forward(address, scope, body, send)
            if answered:
                return
        await _unavailable(send, address)


async def _forward(address: str, scope: Scope, body: bytes, send: Send) -> bool:
    import httpx

    path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in scope["headers"]
        if k.lower() not in (b"content-length", b"connection")
    ]  # the Host stays the browser's: the leader's same-origin check compares it to Origin
    headers.append(("X-Reconciler-Forwarded-By", socket.gethostname()))
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.request(
                scope["method"], address + path, content=body, headers=headers
            )
    except httpx.HTTPError as exc:
        log.warning("standby: forwarding to the leader failed", leader=address, error=str(exc))
        return False
    out = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in answer.headers.items()
        if k.lower() not in ("content-length", "transfer-encoding", "connection")
    ]
    out.append((b"content-length", str(len(answer.content)).encode()))
    out.append((b"x-reconciler-leader", address.encode()))
    await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
    await send({"type": "http.response.body", "body": answer.content})
    return True


async def _unavailable(send: Send, address: str | None) -> None:
    detail = "this replica is a standby" + (
        f"; the leader is at {address}" if address else "; no leader is elected yet"
    )
    body = json.dumps({"detail": detail, "leader": address}).encode()
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
    headers.append((b"content-length", str(len(body)).encode()))
    if address:
        headers.append((b"x-reconciler-leader", address.encode()))
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_routes(app: FastAPI, scheduler: Scheduler, reading: Any) -> None:
    """`GET /api/v1/controller`: this replica's role, the leader, its lease and epoch."""
    election: Election | None = getattr(scheduler, "election", None)
    started = datetime.now(UTC).isoformat(timespec="milliseconds")

    @app.get("/api/v1/controller", tags=["controller"], responses={401: {}})
    def controller(_: None = reading) -> dict[str, Any]:
        """Role (leader or standby), the leader's identity, its lease expiry and epoch."""
        if election is None:  # SQLite: the only controller of its state directory
            me = {"pid": os.getpid(), "hostname": socket.gethostname(), "started": started}
            return {
                "role": "leader",
                "identity": me,
                "leader": {**me, "address": advertised(scheduler.settings), "epoch": None},
                "epoch": None,
                "lease": "state-directory",
                "leaseSeconds": None,
                "lost": None,
            }
        return {**election.describe(), "lease": "database"}


__all__ = [
    "DatabaseLeaseHeld",
    "Election",
    "LeaderLease",
    "LeaseView",
    "StandbyForward",
    "advertised",
    "install_routes",
]
