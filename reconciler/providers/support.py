"""Shared edge helpers of the real providers (redfish, aws-ec2, http).

Sits beside the provider modules, below the provider seam: what each real
provider needs the same way and the simulator does not.

- `OperationStore`: a small SQLite file under the provider's state directory,
  one row per started operation, keyed by its idempotency key. `start` looks here
  first, so starting again with a used key returns the recorded operation instead
  of asking the API a second time, and a restarted process can `poll` a journaled
  handle. Writes are single statements (atomic); a crash between the API call and
  the write is covered by each provider's own look-up (EC2 tags, REST
  `Idempotency-Key`, Redfish's observed power state). Retention removes old
  finished operations (`forget_finished`), never one a resumable plan may need.
- `Gate`: the provider's declared limits (concurrency, requests per second) applied
  to blocking library calls, which run in the gate's own thread pool, sized by the
  provider's `limits.concurrency` (not asyncio's small default executor).
- `tls_verify`: `spec.tls` as the libraries want it (True, False, or a CA bundle
  path); turning verification off is logged, every time a provider opens.
- `credential`: a credential reference from `spec.credentials`, resolved (and so
  registered for redaction) only at the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from reconciler.errors import PermanentError, TemporaryError
from reconciler.model.common import parse_duration
from reconciler.providers.base import (
    ActionRequest,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    ProviderContext,
)
from reconciler.secrets import REDACTOR, resolve

log = structlog.get_logger("reconciler.providers")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    operation_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    phase TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    started_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OperationRecord:
    """One started operation as the provider remembers it; `data` is provider-specific."""

    operation_id: str
    idempotency_key: str
    key: str
    action: str
    phase: OperationPhase = OperationPhase.RUNNING
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    started_at: float = 0.0

    def handle(self, provider: str) -> OperationHandle:
        return OperationHandle(
            provider, self.operation_id, self.idempotency_key, self.key, self.action
        )

    def status(self, progress: float | None = None) -> OperationStatus:
        if progress is None:
            progress = 1.0 if self.phase is OperationPhase.SUCCEEDED else 0.0
        result = self.data.get("result") or {}
        return OperationStatus(self.operation_id, self.phase, progress, self.message, result)


class OperationStore:
    """Operation records in ``<state_dir>/<file_name>`` (SQLite, WAL); thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise TemporaryError(f"operation records {path}: {exc}") from None

    def _row(self, where: str, value: str) -> OperationRecord | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT operation_id, idempotency_key, key, action, phase, message, data,"
                    f" started_at FROM operations WHERE {where} = ?",
                    (value,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise TemporaryError(f"operation records {self.path}: {exc}") from None
        if row is None:
            return None
        op_id, idem, key, action, phase, message, data, started = row
        return OperationRecord(
            op_id, idem, key, action, OperationPhase(phase), message, json.loads(data), started
        )

    def by_idempotency_key(self, idempotency_key: str) -> OperationRecord | None:
        return self._row("idempotency_key", idempotency_key)

    def get(self, operation_id: str) -> OperationRecord | None:
        return self._row("operation_id", operation_id)

    def put(self, record: OperationRecord) -> OperationRecord:
        """Insert or replace the record (by operation id)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO operations (operation_id, idempotency_key, key,"
                    " action, phase, message, data, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.operation_id,
                        record.idempotency_key,
                        record.key,
                        record.action,
                        record.phase.value,
                        REDACTOR.text(record.message),
                        json.dumps(REDACTOR.data(dict(record.data)), sort_keys=True, default=str),
                        record.started_at,
                    ),
                )
            except sqlite3.Error as exc:
                raise TemporaryError(f"operation records {self.path}: {exc}") from None
        return record

    def finish(
        self, record: OperationRecord, phase: OperationPhase, message: str = "", **data: Any
    ) -> OperationRecord:
        return self.put(replace(record, phase=phase, message=message, data={**record.data, **data}))

    def forget_finished(self, *, before: float, keep: Collection[str] = ()) -> int:
        """Remove operations that ended (succeeded, failed, cancelled) and started before
        `before` (Unix time), but those whose idempotency key is in `keep`; how many.

        Retention (`reconciler.execute.retention`): an operation still running, or one
        a plan that may resume could ask for by its key, is never forgotten."""
        done = tuple(p.value for p in OperationPhase if p.done)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    "SELECT operation_id, idempotency_key FROM operations WHERE started_at < ? "
                    f"AND phase IN ({', '.join('?' * len(done))})",
                    (before, *done),
                ).fetchall()
                gone = [(op,) for op, key in rows if key not in keep]
                self._db.executemany("DELETE FROM operations WHERE operation_id = ?", gone)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise TemporaryError(f"operation records {self.path}: {exc}") from None
        return len(gone)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def existing_operation(store: OperationStore, request: ActionRequest) -> OperationRecord | None:
    """The record of an operation already started with this key, checked to be the same one."""
    record = store.by_idempotency_key(request.idempotency_key)
    if record is not None and (record.key, record.action) != (request.key, request.action):
        raise PermanentError(
            f"idempotency key {request.idempotency_key!r} was used for {record.action} "
            f"on {record.key}, not {request.action} on {request.key}"
        )
    return record


class KeyedLocks:
    """One asyncio lock per key (an idempotency key, a BMC address), dropped when unused.

    Two starts with the same idempotency key are serialized, so the second finds the
    first one's record; different keys never wait for each other.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


SharedPace = Callable[[str, float], Awaitable[float]]
"""``(provider, interval) -> seconds to wait``: reserves the provider's next call slot in
a store every process shares (`reconciler.execute.worker`: a row of the database), so that
`ratePerSecond` holds across processes, not per process."""

SHARED_PACE: contextvars.ContextVar[SharedPace | None] = contextvars.ContextVar(
    "reconciler_shared_pace", default=None
)
"""Gates made while it is set pace through it (a worker sets it around opening providers)."""


class Gate:
    """Bounds concurrent and per-second calls to one API; runs blocking calls in threads.

    The threads are the gate's own pool, as large as its concurrency: asyncio's default
    executor holds min(32, CPUs + 4) threads for the whole process, which silently
    capped a provider declared with `limits.concurrency: 50` at 6 calls in flight on
    two cores, and let one provider's slow SDK calls starve another's. Threads start
    when first needed; `close` lets them go.
    """

    def __init__(
        self,
        concurrency: int,
        rate_per_second: float | None,
        name: str = "",
        shared: SharedPace | None = None,
    ) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)
        self._interval = 1.0 / rate_per_second if rate_per_second else 0.0
        self._next = 0.0
        self._rate_lock = asyncio.Lock()
        self._shared = shared
        self._name = name
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"provider-{name or 'gate'}"
        )

    @classmethod
    def from_context(cls, context: ProviderContext) -> Gate:
        limits = context.spec.limits
        shared = SHARED_PACE.get()
        return cls(limits.concurrency, limits.rate_per_second, name=context.name, shared=shared)

    async def _pace(self) -> None:
        if not self._interval:
            return
        if self._shared is not None:  # one pace for every process calling this API
            wait = await self._shared(self._name, self._interval)
            if wait > 0:
                await asyncio.sleep(wait)
            return
        async with self._rate_lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Held while one call to the API is in flight."""
        await self._pace()
        async with self._semaphore:
            yield

    async def thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the gate's threads, within the limits (context
        variables go along, as with `asyncio.to_thread`)."""
        async with self.slot():
            return await self.unlimited(fn, *args)

    async def unlimited(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the gate's threads, not counted against the rate (closing
        sessions): the pool's size still bounds it."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        """Let the threads go (calls in flight finish in the background)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def credential(context: ProviderContext, name: str, *, required: bool = False) -> str | None:
    """The secret behind ``spec.credentials[name]``, or None when it is not declared."""
    ref = context.spec.credentials.get(name)
    if ref is None:
        if required:
            raise PermanentError(
                f"provider {context.name}: credentials.{name} is required (env:NAME or file:PATH)"
            )
        return None
    return resolve(ref)


def tls_verify(context: ProviderContext) -> bool | str:
    """True (verify against the system CAs), a CA bundle path, or False (logged)."""
    tls = context.spec.tls
    if not tls.verify:
        log.warning(
            "tls verification is off: the API's identity is not checked",
            provider=context.name,
            type=context.spec.type,
        )
        return False
    if tls.ca_bundle is None:
        return True
    pem = resolve(tls.ca_bundle)
    path = context.state_dir / f"{context.name}.ca.pem"
    try:
        context.state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(pem + "\n", encoding="utf-8")
    except OSError as exc:
        raise TemporaryError(f"provider {context.name}: writing CA bundle: {exc}") from None
    return str(path)


def duration_setting(context: ProviderContext, name: str, default: float) -> float:
    """A duration from ``spec.settings`` (seconds or "5m"); PermanentError if malformed."""
    value = context.spec.settings.get(name)
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PermanentError(f"provider {context.name}: settings.{name}: {exc}") from None


def arg_duration(args: Mapping[str, Any], name: str, default: float) -> float:
    """A duration argument of a task (seconds or "5m"); PermanentError if malformed."""
    value = args.get(name)
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PermanentError(f"args.{name}: {exc}") from None


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a library's connection error is a refused certificate (retrying cannot help)."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        text = str(node).lower()
        if "certificate verify failed" in text or "certificate_verify_failed" in text:
            return True
        node = node.__cause__ or node.__context__
    return False


def tls_message(provider: str, exc: BaseException) -> str:
    return (
        f"{provider}: the server's TLS certificate was refused ({scrub(exc)}); give its CA as "
        "tls.caBundle (or, in a lab only, tls.verify: false)"
    )


def scrub(message: object) -> str:
    """An error text safe to show: every resolved secret replaced by ``***``."""
    return REDACTOR.text(str(message))
