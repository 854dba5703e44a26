"""Workers: tasks claimed from the shared database and run where their providers are.

Part of execute's edge, for `RECONCILER_EXECUTE=workers` (with `RECONCILER_DATABASE_URL`).
The leader's executor does everything it does inline — order, dependencies, limits,
the journal — except running a task: `QueueDispatch` puts the task's manifest
(`reconciler.execute.manifest`) in `task_queue` under its idempotency key and waits for
the journal to hold its result. `reconciler worker [--site NAME] [--concurrency N]
[--name ID]` processes (`Worker`, started by `reconciler.controller.worker`) claim
tasks and run them with the same runners (`run_journaled`), journal and keys as the
controller would.

- **Claims** (`PgWorkQueue.claim`): `FOR UPDATE SKIP LOCKED`, so workers never wait on
  each other; each claim is leased (`RECONCILER_CLAIM_LEASE`, renewed by heartbeat every
  third of it) and numbered. A task whose claim ran out (its worker died, or paused) is
  claimed again by another worker of its site, with the same idempotency key: a
  started task is run again under it, an acknowledged operation is polled, not issued.
- **Fencing** (`ClaimJournal`): every journal write of a worker reads its claim `FOR
  SHARE` first, in the same transaction; once the task was claimed again the write is
  refused (`Fenced`) and logged — the task's outcome is the one of the claim in force.
- **Sites**: a Provider with `spec.site` has its tasks run only on workers started with
  that `--site`; tasks of providers without a site run on any worker.
- **Limits across workers**: a provider's `limits.concurrency` counts the claims in
  force of all workers together; the claim takes a per-provider advisory lock (held for
  the milliseconds of its transaction), counts them, and claims no more than the rest.
  Its `limits.ratePerSecond` paces the calls of all workers together: the providers a
  worker opens reserve each call's start in one row per provider (`PgWorkQueue.pace`).

`WorkQueue` is the worker's whole view of the queue (claim, renew, a fenced journal per
claim), so another transport (HTTPS to the controller, for sites that cannot reach the
database) can stand in for `PgWorkQueue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from reconciler.errors import PermanentError, ReconcilerError
from reconciler.execute.context import TaskContext, TaskResult
from reconciler.execute.journal import TaskRow, _now
from reconciler.execute.manifest import TaskManifest, provider_callbacks
from reconciler.execute.runners import run_journaled
from reconciler.execute.store_pg import (
    Database,
    Fenced,
    PgJournal,
    mark_acknowledged_sql,
    mark_finished_sql,
    mark_progress_sql,
    mark_started_sql,
    open_database,
)
from reconciler.providers.support import SHARED_PACE
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    import psycopg

    from reconciler.execute.store import JournalStore, TaskJournal
    from reconciler.providers.base import Provider
    from reconciler.settings import Settings

log = structlog.get_logger("reconciler.worker")

RevisionTrees = Callable[[str | None, str], Path]
"""(repository URL, revision) -> the revision's read-only tree: blocking, run in a thread."""

PROVIDER_LOCK = 7_340_002
"""The advisory lock class under which one provider's claims are counted and taken."""


# --- the leader's side -------------------------------------------------------------------


class QueueDispatch:
    """The executor's `dispatch` with workers: enqueue the manifest, wait for the result."""

    def __init__(self, journal: PgJournal, *, poll: float = 0.1) -> None:
        self.journal = journal
        self.poll = poll
        self._waiting: dict[str, list[asyncio.Future[TaskResult]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def __call__(self, manifest: TaskManifest) -> TaskResult:
        key = manifest.idempotency_key
        row = self.journal.task_state(key)
        if row is not None and row.state == "finished" and row.result is not None:
            return row.result  # finished before a crash or a takeover: not run again
        self.enqueue(manifest)
        future: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())
        try:
            return await future
        finally:
            waiting = self._waiting.get(key, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(key, None)

    def enqueue(self, manifest: TaskManifest) -> None:
        """Queue the task (a fenced write of the leader); one already queued or claimed
        stays as it is (a resumed plan waits for the claim in force)."""
        self.journal._write(
            "INSERT INTO task_queue (idempotency_key, plan_hash, resource, provider, site, "
            "provider_limit, manifest_json, state) VALUES (%s, %s, %s, %s, %s, %s, %s, 'queued') "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            (
                manifest.idempotency_key,
                manifest.execution,
                manifest.resource.key,
                manifest.provider,
                manifest.site,
                manifest.provider_limit,
                REDACTOR.text(manifest.to_json()),
            ),
        )

    async def _poll(self) -> None:
        """One query for every task waited on, until none is."""
        while self._waiting:
            keys = list(self._waiting)
            try:
                rows = self.journal.db.query(
                    "SELECT idempotency_key, result_json FROM tasks "
                    "WHERE idempotency_key = ANY(%s) AND state = 'finished'",
                    (keys,),
                )
            except ReconcilerError as exc:  # the database stayed away past its retries
                for futures in self._waiting.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                return
            for row in rows:
                result = TaskResult.from_json(json.loads(row["result_json"]))
                for future in self._waiting.get(row["idempotency_key"], []):
                    if not future.done():
                        future.set_result(result)
            await asyncio.sleep(self.poll)


def dispatcher_for(settings: Settings, journal: JournalStore) -> QueueDispatch | None:
    """The executor's dispatch the settings choose: None runs tasks inline."""
    if settings.execute != "workers":
        return None
    if not isinstance(journal, PgJournal):
        raise PermanentError("RECONCILER_EXECUTE=workers needs RECONCILER_DATABASE_URL")
    return QueueDispatch(journal)


# --- the worker's side: the queue ----------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One task this worker holds: its manifest and the claim's number (the fence)."""

    manifest: TaskManifest
    number: int

    @property
    def key(self) -> str:
        return self.manifest.idempotency_key


class WorkQueue(Protocol):
    """What a worker needs of the queue: claim, renew, and a journal fenced by a claim."""

    def claim(self, limit: int) -> list[Claim]: ...

    def renew(self, claims: list[Claim]) -> set[str]:
        """Extend the claims still in force; the keys of those still held."""
        ...

    def journal_for(self, claim: Claim) -> TaskJournal: ...

    def pace(self, provider: str, interval: float) -> float:
        """Reserve the provider's next call slot (shared by every worker); seconds to wait."""
        ...

    def close(self) -> None: ...


class PgWorkQueue:
    """The queue in PostgreSQL for one worker (its name and site)."""

    def __init__(self, db: Database, *, name: str, site: str | None, lease: float) -> None:
        self.db = db
        self.name = name
        self.site = site
        self.lease = lease

    @classmethod
    def connect(cls, settings: Settings, *, name: str, site: str | None) -> PgWorkQueue:
        return cls(open_database(settings), name=name, site=site, lease=settings.claim_lease)

    def close(self) -> None:
        self.db.close()

    def _sites(self) -> str:
        return "(site IS NULL OR site = %(site)s)" if self.site else "site IS NULL"

    def claim(self, limit: int) -> list[Claim]:
        """Up to `limit` tasks of this worker's site, within each provider's limit."""
        args = {"site": self.site, "me": self.name, "lease": self.lease}
        claimable = (
            f"{self._sites()} AND (state = 'queued' OR (state = 'claimed' "
            "AND claimed_until < now()))"
        )
        candidates = self.db.query(
            f"SELECT provider, min(provider_limit) AS lim FROM task_queue WHERE {claimable} "
            "GROUP BY provider",
            args,
        )
        random.shuffle(candidates)  # no provider always first
        claims: list[Claim] = []
        for candidate in candidates:
            if len(claims) >= limit:
                break
            wanted = {**args, "provider": candidate["provider"], "limit": candidate["lim"]}
            wanted["n"] = limit - len(claims)
            claims += self.db.run(partial(self._claim_of, claimable=claimable, args=wanted))
        return claims

    def _claim_of(
        self, conn: psycopg.Connection[Any], claimable: str, args: Mapping[str, Any]
    ) -> list[Claim]:
        with conn.transaction():
            # One claimer of a provider at a time (milliseconds): its count is then exact.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (PROVIDER_LOCK, args["provider"]),
            )
            held = conn.execute(
                "SELECT count(*) AS n FROM task_queue WHERE provider = %(provider)s "
                "AND state = 'claimed' AND claimed_until >= now()",
                args,
            ).fetchone()
            free = min(int(args["limit"]) - int(held["n"] if held else 0), int(args["n"]))
            if free <= 0:
                return []
            rows = conn.execute(
                "UPDATE task_queue SET state = 'claimed', claim = claim + 1, claimed_by = %(me)s, "
                "claimed_until = now() + %(lease)s * interval '1 second', claims = claims + 1 "
                "WHERE idempotency_key IN (SELECT idempotency_key FROM task_queue "
                f"WHERE provider = %(provider)s AND {claimable} ORDER BY seq "
                "LIMIT %(free)s FOR UPDATE SKIP LOCKED) "
                "RETURNING idempotency_key, claim, manifest_json",
                {**args, "free": free},
            ).fetchall()
        return [Claim(TaskManifest.from_json(r["manifest_json"]), int(r["claim"])) for r in rows]

    def renew(self, claims: list[Claim]) -> set[str]:
        self.db.query(
            "INSERT INTO workers (name, site, info_json, seen_at) VALUES (%s, %s, %s, now()) "
            "ON CONFLICT (name) DO UPDATE SET seen_at = now(), site = excluded.site",
            (self.name, self.site, json.dumps({"pid": os.getpid(), "host": socket.gethostname()})),
        )
        if not claims:
            return set()
        rows = self.db.query(
            "UPDATE task_queue AS q SET claimed_until = now() + %s * interval '1 second' "
            "FROM unnest(%s::text[], %s::bigint[]) AS c(k, n) "
            "WHERE q.idempotency_key = c.k AND q.claim = c.n AND q.state = 'claimed' "
            "RETURNING q.idempotency_key",
            (self.lease, [c.key for c in claims], [c.number for c in claims]),
        )
        return {r["idempotency_key"] for r in rows}

    def journal_for(self, claim: Claim) -> ClaimJournal:
        return ClaimJournal(self.db, claim)

    def pace(self, provider: str, interval: float) -> float:
        """The provider's `ratePerSecond` across workers: one row per provider holds the
        next free start time on the database's clock; each call takes the slot at or
        after now and moves it one interval on (the row lock orders concurrent callers)."""
        row = self.db.one(
            "INSERT INTO provider_rate AS p (provider, next_at, calls) "
            "VALUES (%(p)s, clock_timestamp() + %(i)s * interval '1 second', 1) "
            "ON CONFLICT (provider) DO UPDATE SET calls = p.calls + 1, next_at = "
            "GREATEST(p.next_at, clock_timestamp()) + %(i)s * interval '1 second' "
            "RETURNING extract(epoch FROM p.next_at - clock_timestamp())::float8 - %(i)s "
            "AS wait",
            {"p": provider, "i": interval},
        )
        return max(0.0, float(row["wait"])) if row else 0.0


class ClaimJournal:
    """The journal of one claimed task: reads as any, writes only while the claim is the
    one in force (`Fenced` otherwise). Its end marks the queue row done, in the same
    transaction."""

    def __init__(self, db: Database, claim: Claim) -> None:
        self.db = db
        self.claim = claim
        self._reader = PgJournal(db)

    def _fenced(self, sql: str, args: tuple[Any, ...], *, done: bool = False) -> None:
        key, number = self.claim.key, self.claim.number

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                row = conn.execute(
                    "SELECT claim, claimed_by FROM task_queue WHERE idempotency_key = %s "
                    "AND state = 'claimed' FOR SHARE",
                    (key,),
                ).fetchone()
                if row is None or int(row["claim"]) != number:
                    holder = row["claimed_by"] if row else "no claim (done)"
                    raise Fenced(f"task {key[:12]}: claim {number} is not in force (now: {holder})")
                conn.execute(sql, args)
                if done:
                    conn.execute(
                        "UPDATE task_queue SET state = 'done', done_at = now(), "
                        "claimed_until = NULL WHERE idempotency_key = %s",
                        (key,),
                    )

        self.db.run(work)

    def task_state(self, key: str) -> TaskRow | None:
        return self._reader.task_state(key)

    def acknowledged_operation(self, key: str) -> str | None:
        return self._reader.acknowledged_operation(key)

    def mark_started(
        self, key: str, *, plan_hash: str, resource: str, stage: str, point: str, task: str
    ) -> None:
        self._fenced(*mark_started_sql(key, plan_hash, resource, stage, point, task, _now()))

    def mark_acknowledged(self, key: str, operation_id: str) -> None:
        self._fenced(*mark_acknowledged_sql(key, operation_id, _now()))

    def mark_progress(
        self, key: str, *, attempts: int | None = None, note: str | None = None
    ) -> None:
        self._fenced(*mark_progress_sql(key, attempts, note, _now()))

    def mark_finished(self, key: str, result: TaskResult) -> None:
        self._fenced(*mark_finished_sql(key, result, _now()), done=True)


# --- the worker ------------------------------------------------------------------------------


class Worker:
    """Claims tasks while it has room, runs them, renews its claims, stops gracefully."""

    def __init__(
        self,
        queue: WorkQueue,
        *,
        state_dir: Path,
        concurrency: int,
        lease: float,
        poll: float = 0.2,
        trees: RevisionTrees | None = None,
    ) -> None:
        self.queue = queue
        self.trees = trees
        """The revision's tree, given the manifest's repository URL and revision (the
        process's own mirror: `reconciler.controller.worker`); None: tasks needing it fail."""
        self._tree_lock = asyncio.Lock()
        self.state_dir = state_dir
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self._running: dict[str, tuple[Claim, asyncio.Task[None]]] = {}
        self._providers: dict[str, Provider] = {}
        self._stop = asyncio.Event()
        self._room = asyncio.Event()
        """Set when a task ends: there is room to claim another at once."""
        self.ran = 0

    def request_stop(self) -> None:
        self._stop.set()
        self._room.set()

    async def run(self) -> None:
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            while not self._stop.is_set():
                free = self.concurrency - len(self._running)
                claims = self.queue.claim(free) if free > 0 else []
                for claim in claims:
                    task = asyncio.ensure_future(self._execute(claim))
                    self._running[claim.key] = (claim, task)
                if not claims or len(self._running) >= self.concurrency:
                    self._room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), self.poll)
            if self._running:  # a stop: nothing new is claimed; what runs finishes
                log.info("stopping: tasks in flight finish", tasks=len(self._running))
                await asyncio.gather(*(t for _, t in self._running.values()))
        finally:
            heartbeat.cancel()
            for provider in self._providers.values():
                with contextlib.suppress(Exception):
                    await provider.close()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            claims = [claim for claim, _ in self._running.values()]
            try:
                held = self.queue.renew(claims)
            except ReconcilerError as exc:
                log.warning("claims not renewed", error=REDACTOR.text(str(exc)))
                continue
            for claim in claims:
                if claim.key not in held and claim.key in self._running:
                    # Whatever it would still report is refused: stop working on it.
                    log.warning("late result refused (fenced)", task=claim.key[:12],
                                claim=claim.number, reason="the claim was lost: another "
                                "worker has the task")  # fmt: skip
                    self._running[claim.key][1].cancel()

    def _provider(self, manifest: TaskManifest) -> Provider:
        from reconciler.providers import open_provider

        if manifest.provider not in self._providers:
            token = SHARED_PACE.set(self._pace)  # its ratePerSecond held across workers
            try:
                self._providers[manifest.provider] = open_provider(
                    manifest.provider_document(),
                    state_dir=self.state_dir,
                    repository=manifest.repository,
                )
            finally:
                SHARED_PACE.reset(token)
        return self._providers[manifest.provider]

    async def _pace(self, provider: str, interval: float) -> float:
        return self.queue.pace(provider, interval)

    async def _tree(self, m: TaskManifest) -> Path | None:
        """The revision's read-only tree, for a task that reads repository files."""
        if m.revision is None or not m.needs_tree():
            return None
        if self.trees is None:
            raise PermanentError("this worker has no way to the repository (--repo)")
        async with self._tree_lock:  # one fetch at a time; the others then find the tree
            return await asyncio.to_thread(self.trees, m.repository_url, m.revision)

    async def _tree_failed(self, journal: TaskJournal, m: TaskManifest, exc: Exception) -> None:
        """A task whose tree could not be had fails (the next plan tries again), reported
        like any failure rather than left to be claimed again and again."""
        message = REDACTOR.text(f"the revision's tree ({(m.revision or '')[:12]}): {exc}")
        journal.mark_started(
            m.idempotency_key, plan_hash=m.execution, resource=m.resource.key, stage=m.stage,
            point=m.point, task=m.task.name,
        )  # fmt: skip
        journal.mark_finished(m.idempotency_key, TaskResult("failed", message))
        log.warning("task failed: no tree", task=m.task.name, resource=m.resource.key,
                    error=message)  # fmt: skip

    async def _execute(self, claim: Claim) -> None:
        m = claim.manifest
        journal = self.queue.journal_for(claim)
        log.info("task claimed", task=m.task.name, resource=m.resource.key, stage=m.stage,
                 claim=claim.number)  # fmt: skip
        try:
            try:
                repo_dir = await self._tree(m)
            except ReconcilerError as exc:
                await self._tree_failed(journal, m, exc)
                return
            provider = self._provider(m)
            calls = provider_callbacks(provider, m.resource, journal)
            ctx = TaskContext(
                resource_key=m.resource.key,
                resource_kind=m.resource.kind,
                resource_name=m.resource.name,
                idempotency_key=m.idempotency_key,
                params=dict(m.params),
                secure_params=m.secure_params,
                plan_hash=m.execution,
                stage=m.stage,
                point=m.point,
                deadline=loop_deadline(m.deadline),
                repo_dir=repo_dir,
                state_dir=self.state_dir,
                provider_action=calls.action,
                observe=calls.observe,
                cancel_operation=calls.cancel,
            )
            result = await run_journaled(journal, m.task, ctx, state_dir=self.state_dir)
            self.ran += 1
            log.info("task done", task=m.task.name, resource=m.resource.key, result=result.status)
        except Fenced as exc:
            log.warning("late result refused (fenced)", task=m.idempotency_key[:12],
                        resource=m.resource.key, error=str(exc))  # fmt: skip
        except asyncio.CancelledError:
            log.info("task abandoned", task=m.idempotency_key[:12])
        except Exception as exc:  # the claim runs out and another worker tries again
            log.exception("task failed inside the worker", task=m.idempotency_key[:12],
                          error=REDACTOR.text(str(exc)))  # fmt: skip
        finally:
            self._running.pop(claim.key, None)
            self._room.set()


def loop_deadline(wall: float | None) -> float | None:
    """A manifest's deadline (epoch seconds) on this event loop's clock (`TaskContext`)."""
    if wall is None:
        return None
    return asyncio.get_running_loop().time() + (wall - time.time())


__all__ = [
    "Claim",
    "ClaimJournal",
    "PgWorkQueue",
    "QueueDispatch",
    "RevisionTrees",
    "WorkQueue",
    "Worker",
    "dispatcher_for",
    "loop_deadline",
]
