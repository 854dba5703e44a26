"""When the controller works: scheduled cycles, requested cycles, targeted reconciles.

Sits between the server (and apscheduler's clock) and `Controller`. One worker
thread, with an event loop of its own, owns the Controller and runs one thing at
a time, so cycles never overlap and the HTTP server stays responsive however busy
the controller is. Everything else only asks:

- `request_cycle(trigger)` — the interval (apscheduler, with jitter), `POST /sync`,
  a push webhook. A request while a cycle runs queues ONE follow-up; more requests
  join it (coalesced). Each request is a `SyncOperation` the API can poll.
- `request_resources(keys, trigger)` — provider events (`event:<provider>`, which the
  targeted reconcile's record names). A resource waits in a bounded
  queue until its events go quiet for `event_debounce` (at most `event_max_delay`);
  events for a resource already waiting are coalesced, events for a new resource
  when `event_queue_size` resources wait are shed (counted in metrics). Due
  resources are reconciled together (`Controller.reconcile(ProviderEvents(...))`).
  A cycle covers every resource waiting when it starts (an incremental one plans
  them too); after events were shed, the next cycle is a full one, which recovers them.
  Each event is a `SyncOperation` too (`EventWaits`), done once every resource it
  named is reconciled; an event that only joins resources already waiting under one
  operation shares it.
- What a cycle left waiting brings the controller back when it is due
  (`CycleResult.requeue`: a failed resource's backoff ends, a change window opens
  after a destructive action waited for it): a cycle with trigger `requeue`, which,
  like a scheduled one, holds the failures still in their backoff.
- After a cycle whose fetch failed, scheduled cycles wait for the backoff the
  source suggests (`CycleResult.requeue`, the source's `retry_after`: exponential with
  jitter while the remote is down, its cap, 5 minutes, while it refuses us), however
  short the interval; a sync, a push webhook or a provider event do not wait.
- `stop(reason)` — SIGTERM: no new work is taken, the executor stops at a task
  boundary (tasks in flight finish and are journaled), the running cycle ends,
  the worker exits; the next start resumes.

After each cycle or targeted reconcile: metrics, and notifications of condition
transitions (`reconciler.controller.notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler.controller.controller import Controller, CycleResult
from reconciler.controller.cycle import AtHead, ProviderEvents, Requeue
from reconciler.controller.ledger_pg import ledger_for
from reconciler.controller.metrics import Metrics
from reconciler.controller.notify import Notifier
from reconciler.controller.progress import ProgressState
from reconciler.load.desired import Desired
from reconciler.model.status import ResourceStatus
from reconciler.plan.plan import Plan
from reconciler.plan.scope import FullCycle, Scope
from reconciler.providers.instrument import provider_calls
from reconciler.secrets import REDACTOR
from reconciler.settings import Settings
from reconciler.source import SourceResult

if TYPE_CHECKING:
    from reconciler.controller.leader import Election

SyncPhase = Literal["pending", "running", "succeeded", "failed"]

log = structlog.get_logger("reconciler.controller.scheduler")


@dataclass(frozen=True)
class SyncOperation:
    """One requested cycle, as `GET /api/v1/operations/{id}` shows it."""

    id: str
    trigger: str
    phase: SyncPhase
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    revision: str | None = None
    resources_total: int = 0
    resources_done: int = 0
    errors: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    """The resources a provider event named (its operation ends once all are reconciled)."""

    def to_json(self) -> dict[str, Any]:
        def stamp(value: datetime | None) -> str | None:
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None

        return {
            "id": self.id,
            "trigger": self.trigger,
            "phase": self.phase,
            "created": stamp(self.created),
            "started": stamp(self.started),
            "finished": stamp(self.finished),
            "revision": self.revision,
            "progress": {"done": self.resources_done, "total": self.resources_total},
            "errors": list(self.errors),
            "resources": list(self.resources),
        }


class Operations:
    """The last `limit` operations, in memory. The oldest finished ones are forgotten
    first: a flood of provider events does not forget the sync a portal is polling,
    unless `limit` operations are unfinished at once."""

    def __init__(
        self, limit: int = 1000, on_forget: Callable[[str], None] = lambda op_id: None
    ) -> None:
        self.limit = limit
        self._ops: OrderedDict[str, SyncOperation] = OrderedDict()
        self._lock = threading.Lock()
        self._on_forget = on_forget

    def new(self, trigger: str, resources: tuple[str, ...] = ()) -> SyncOperation:
        op = SyncOperation(
            id=uuid.uuid4().hex,
            trigger=trigger,
            phase="pending",
            created=datetime.now(UTC),
            resources=resources,
        )
        forgotten = []
        with self._lock:
            self._ops[op.id] = op
            while len(self._ops) > self.limit:
                oldest = next(
                    (i for i, o in self._ops.items() if o.finished is not None),
                    next(iter(self._ops)),
                )
                del self._ops[oldest]
                forgotten.append(oldest)
        for op_id in forgotten:
            self._on_forget(op_id)
        return op

    def get(self, op_id: str) -> SyncOperation | None:
        with self._lock:
            return self._ops.get(op_id)

    def update(self, op_ids: list[str], **changes: Any) -> None:
        with self._lock:
            for op_id in op_ids:
                if op_id in self._ops:
                    self._ops[op_id] = replace(self._ops[op_id], **changes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def recent(self, limit: int | None = None) -> list[SyncOperation]:
        """The newest operations first (the web UI's list)."""
        with self._lock:
            newest = list(reversed(self._ops.values()))
        return newest if limit is None else newest[:limit]


@dataclass(frozen=True)
class CycleRecord:
    """One finished cycle or targeted reconcile, as the web UI's overview lists it."""

    started: datetime
    kind: str
    """full, incremental or targeted."""
    triggers: tuple[str, ...]
    operations: tuple[str, ...]
    seconds: float
    failed: bool
    fields: Mapping[str, Any]
    """The cycle's log line (`cycle_log`): revision, planned, succeeded, failed, blocked…."""
    resources: tuple[str, ...] = ()
    """The resources a targeted reconcile looked at."""


CYCLES_KEPT = 50

CLOCK_TRIGGERS = frozenset({"schedule", "requeue"})
"""Cycles only a clock asked for: they wait out a failed fetch's backoff, and failed
resources wait out theirs (a person, a push or a provider event do not wait)."""


@dataclass(frozen=True)
class CycleJob:
    """A cycle to run: the operations it answers, the resources whose events it covers
    (planned even if unchanged), whether it must be full (events were shed), and
    whether only the clock asked for it (a person or a push retries failures now)."""

    operations: list[str]
    covered: frozenset[str]
    full: bool
    scheduled: bool = False
    """Only the interval asked for it: failed resources wait out their backoff."""


@dataclass(frozen=True)
class TargetedJob:
    """Resources whose events are due, reconciled together, who asked for them, and the
    events' operations that wait on them."""

    keys: set[str]
    triggers: tuple[str, ...]
    operations: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventResult:
    """What became of one provider event's resources, and the operation to poll (None
    when the controller is stopping: nothing was queued)."""

    queued: tuple[str, ...] = ()
    coalesced: tuple[str, ...] = ()
    shed: tuple[str, ...] = ()
    operation: SyncOperation | None = None


class EventWaits:
    """Which event operations wait on which resources.

    An event's operation ends when every resource it named has been reconciled, by
    targeted reconciles (resources fall due one by one, debounced) or by a cycle, which
    covers every waiting resource and, when full, the shed ones. Not thread-safe: the
    scheduler holds its lock.
    """

    def __init__(self) -> None:
        self._by_op: dict[str, set[str]] = {}

    def wait(self, op_id: str, keys: set[str]) -> None:
        self._by_op.setdefault(op_id, set()).update(keys)

    def on(self, keys: set[str]) -> list[str]:
        """The operations waiting on any of `keys`, oldest first."""
        return [op for op, waiting in self._by_op.items() if waiting & keys]

    def reconciled(self, keys: set[str]) -> list[str]:
        """Forget `keys`; the operations that waited on nothing else, now done."""
        done = []
        for op, waiting in list(self._by_op.items()):
            if waiting & keys:
                waiting -= keys
                if not waiting:
                    del self._by_op[op]
                    done.append(op)
        return done

    def forget(self, op_id: str) -> None:
        self._by_op.pop(op_id, None)

    def take_all(self, keep: Collection[str] = ()) -> list[str]:
        """Forget every operation but those in `keep`; the ones forgotten."""
        taken = [op for op in self._by_op if op not in keep]
        for op in taken:
            del self._by_op[op]
        return taken


class UnknownProvider(LookupError):
    pass


def _leaves(data: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, Mapping):
        out = []
        for key, value in data.items():
            out.extend(_leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    return [(path, data)]


def event_resources(
    desired: Desired | None,
    statuses: Mapping[str, ResourceStatus],
    provider: str,
    payload: Mapping[str, Any],
) -> set[str]:
    """The resource keys of `provider` that an event's small payload concerns. Pure.

    `{"resource": "Machine/x"}` or `{"resources": [...]}`, `{"kind": ..., "name": ...}`,
    `{"name": ...}`, or provider-specific ids: any other field matches a declared
    or last observed field of the same name (`{"serial": "SN1"}` finds the machine
    whose `bmc.serial` is SN1; `{"instanceId": "i-1"}` the one observed with it).
    """
    if desired is not None and provider not in desired.providers:
        raise UnknownProvider(provider)
    ours = (
        {k: r for k, r in desired.resources.items() if r.provider == provider}
        if desired is not None
        else None
    )
    named: set[str] = set()
    if isinstance(payload.get("resource"), str):
        named.add(payload["resource"])
    if isinstance(payload.get("resources"), list):
        named.update(k for k in payload["resources"] if isinstance(k, str))
    if isinstance(payload.get("name"), str):
        if isinstance(payload.get("kind"), str):
            named.add(f"{payload['kind']}/{payload['name']}")
        else:
            named.update({f"Machine/{payload['name']}", f"Instance/{payload['name']}"})
    if named or ours is None:
        return named if ours is None else named & set(ours)
    wanted = {
        k: v
        for k, v in payload.items()
        if k not in ("kind", "event", "type", "time") and isinstance(v, str | int | float | bool)
    }
    found: set[str] = set()
    for key, resource in ours.items():
        fields = _leaves(resource.declared())
        status = statuses.get(key)
        if status is not None:
            fields += _leaves(status.observed)
        for path, value in fields:
            leaf = path.rsplit(".", 1)[-1]
            if leaf in wanted and wanted[leaf] == value:
                found.add(key)
    return found


class Scheduler:
    """The controller's one worker, and the queue of what it should do next."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        controller_factory: Callable[..., Controller] = Controller,
        clock: Callable[[], float] = time.monotonic,
        election: Election | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(resource_series=settings.metrics_resource_series)
        self.notifier = notifier or Notifier(Path(settings.state_dir), metrics=self.metrics)
        if notifier is None and (ledger := ledger_for(settings)) is not None:
            self.notifier.ledger = ledger  # shared: a standby that takes over knows it
        self.election = election
        """With a shared database: this replica works only once elected
        (`reconciler.controller.leader`)."""
        self.operations = Operations(settings.operations_kept, on_forget=self._forget)
        self._factory = controller_factory
        self._clock = clock
        self._lock = threading.RLock()
        self._cycle_wanted: list[str] | None = None
        self._resumes: list[tuple[str, str]] = []
        """Rollouts asked to resume (`request_resume`), for the worker's next cycle."""
        self._running: list[str] = []
        self._progress = [0, 0]
        self._pending: dict[str, tuple[float, float]] = {}
        self._pending_triggers: dict[str, set[str]] = {}
        """Who asked for each waiting resource (`event:<provider>`)."""
        self._waits = EventWaits()
        """The events' operations, until every resource each named is reconciled."""
        self._shed_since_full = False
        """Events were shed: the next cycle is full, whatever changed, to recover them."""
        self._stopping: str | None = None
        self._fetch_after: float | None = None
        """After a failed fetch: scheduled cycles wait until then (the source's `retry_after`)."""
        self._come_back_at: float | None = None
        """When what the last cycle left waiting is due: a cycle runs then (`Requeue`)."""
        self.come_back: tuple[datetime, str] | None = None
        """When, and why, the controller comes back before the interval (the UI shows it)."""
        self._controller: Controller | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._aps: BackgroundScheduler | None = None
        self.ready = False
        self.busy = False
        self.statuses: dict[str, ResourceStatus] = {}
        self.desired: Desired | None = None
        self.plan: Plan | None = None
        self.observed_at: dict[str, datetime] = {}
        """Each provider's last successful observation: the end of the full cycle whose
        plan could trust its answer (the UI's "last observation")."""
        self.revision: str | None = None
        self.source: SourceResult | None = None
        """The last poll of the declared repository (the UI shows why it may be stale)."""
        self.cycles: deque[CycleRecord] = deque(maxlen=CYCLES_KEPT)
        """The last cycles and targeted reconciles, newest first (the UI's overview)."""
        self._execution = ProgressState()
        self.reconciles: Counter[str] = Counter()
        """Targeted reconciles per resource key (tests and the benchmark read it)."""
        self.cycles_run = 0
        self.metrics.watch_queue(self.queue_depth, self.queue_age)

    # --- asking -----------------------------------------------------------------

    @property
    def stopping(self) -> str | None:
        return self._stopping

    def request_cycle(self, trigger: str) -> SyncOperation | None:
        """Queue a full cycle (or join the one queued); None once stopping."""
        with self._lock:
            if self._stopping:
                return None
            op = self.operations.new(trigger)
            if self._cycle_wanted is None:
                self._cycle_wanted = [op.id]
                result = "queued"
            else:
                self._cycle_wanted.append(op.id)
                result = "coalesced"
        self.metrics.cycle_requests.labels(result=result).inc()
        self._poke()
        return op

    def request_resume(self, rollout: str, who: str) -> SyncOperation | None:
        """Resume a paused rollout (the worker forgets its pause before the next cycle,
        which it queues): the audit records `who`."""
        with self._lock:
            self._resumes.append((rollout, who))
        return self.request_cycle(f"resume rollout {rollout}")

    def request_resources(self, keys: set[str], trigger: str = "event") -> EventResult:
        """Queue targeted reconciles of `keys`, debounced and coalesced per key; `trigger`
        (`event:<provider>`) is recorded with the reconcile that takes them.

        The event is an operation to poll, done once all its resources are reconciled.
        An event whose resources all wait already, under one operation of the same
        trigger, shares that operation (a burst of events is one operation)."""
        now = self._clock()
        queued: list[str] = []
        coalesced: list[str] = []
        shed: list[str] = []
        with self._lock:
            if self._stopping:
                return EventResult(shed=tuple(sorted(keys)))
            for key in sorted(keys):
                if key in self._pending:
                    self._pending[key] = (self._pending[key][0], now)
                    self._pending_triggers.setdefault(key, set()).add(trigger)
                    coalesced.append(key)
                elif len(self._pending) >= self.settings.event_queue_size:
                    shed.append(key)
                    self._shed_since_full = True
                else:
                    self._pending[key] = (now, now)
                    self._pending_triggers[key] = {trigger}
                    queued.append(key)
            op = self._event_operation(keys, trigger, shares=not queued and not shed)
        for outcome, found in (("queued", queued), ("coalesced", coalesced), ("shed", shed)):
            if found:
                self.metrics.events.labels(outcome=outcome).inc(len(found))
        if queued:
            self._poke()
        return EventResult(tuple(queued), tuple(coalesced), tuple(shed), op)

    def _forget(self, op_id: str) -> None:
        """An operation dropped from memory: nobody can poll it, so nothing waits for it."""
        with self._lock:
            self._waits.forget(op_id)

    def _event_operation(self, keys: set[str], trigger: str, *, shares: bool) -> SyncOperation:
        if shares:
            waiting = self._waits.on(keys)
            joined = self.operations.get(waiting[0]) if len(waiting) == 1 else None
            if joined is not None and joined.trigger == trigger:
                return joined
        op = self.operations.new(trigger, resources=tuple(sorted(keys)))
        self._waits.wait(op.id, keys)
        return op

    def queue_depth(self) -> float:
        with self._lock:
            return float(len(self._pending))

    def queue_age(self) -> float:
        with self._lock:
            if not self._pending:
                return 0.0
            return self._clock() - min(first for first, _ in self._pending.values())

    def execution(self) -> tuple[ProgressState, tuple[str, ...]]:
        """A copy of the running (or last) execution's progress, and the operations the
        running cycle or targeted reconcile answers (none between them)."""
        with self._lock:
            state = self._execution
            copy = dataclasses.replace(
                state,
                running={k: dataclasses.replace(v) for k, v in state.running.items()},
                failures=list(state.failures),
                ended=dict(state.ended),
                paused=dict(state.paused),
            )
            return copy, tuple(self._running)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the worker's loop has closed
                loop.call_soon_threadsafe(wake.set)

    # --- life ---------------------------------------------------------------------

    def start(self) -> None:
        """Open the controller (taking the state directory's lease) and start working."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._work()), name="reconciler-controller", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        self._aps = BackgroundScheduler(timezone="UTC")
        self._aps.add_job(
            self.request_cycle,
            IntervalTrigger(
                seconds=self.settings.interval, jitter=self.settings.interval_jitter or None
            ),
            args=["schedule"],
            max_instances=1,
            coalesce=True,
        )
        self._aps.start()
        self.request_cycle("startup")

    def stop(self, reason: str = "stopped", timeout: float | None = None) -> bool:
        """`begin_stop`, then wait for the running cycle to end and the worker to exit."""
        self.begin_stop(reason)
        return self.wait(timeout)

    def begin_stop(self, reason: str) -> None:
        """Take no more work; the executor starts no new task (safe from a signal handler)."""
        with self._lock:
            self._stopping = self._stopping or reason
            reason = self._stopping  # the first reason stays: what stopped it (SIGTERM…)
            queued, self._cycle_wanted = self._cycle_wanted or [], None
            queued += self._waits.take_all(keep=set(self._running))
        if self._aps is not None and self._aps.running:
            self._aps.shutdown(wait=False)
        if self._controller is not None:
            self._controller.request_stop(reason)
        self.operations.update(
            queued,
            phase="failed",
            finished=datetime.now(UTC),
            errors=(f"not started: the controller is stopping ({reason})",),
        )
        self._poke()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the worker has exited (its cycle ended, the controller closed)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the worker -------------------------------------------------------------------

    async def _work(self) -> None:
        # Providers this worker opens report each call's latency to the metrics.
        with provider_calls(self.metrics.provider_call):
            await self._serve()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        lease: dict[str, Any] = {}
        if self.election is not None:
            self._started.set()  # a standby serves the API while it waits
            if not await self.election.lead(self):
                return
            lease = {"lease": self.election.lease}
        try:
            controller = self._factory(
                self.settings, on_event=self._on_event, on_plan=self._on_plan, **lease
            )
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            if self.election is not None:  # start() has returned: nobody else hears of it
                self.election.abandon(f"the controller could not start: {exc}")
            return
        self._controller = controller
        try:
            await self._restore(controller)
            self._started.set()
            while not self._stopping:
                job = self._next_job()
                if job is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._next_due())
                    self._wake.clear()
                    continue
                self.busy = True
                try:
                    if isinstance(job, CycleJob):
                        await self._cycle(controller, job)
                    else:
                        await self._targeted(controller, job)
                finally:
                    self.busy = False
        finally:
            self._started.set()
            controller.close()
            self._fail_waiting("not finished")

    def _fail_waiting(self, what: str) -> None:
        """Event operations the worker will not finish (it stops): failed, saying why."""
        with self._lock:
            waiting = self._waits.take_all()
        self.operations.update(
            waiting,
            phase="failed",
            finished=datetime.now(UTC),
            errors=(f"{what}: the controller is stopping ({self._stopping})",),
        )

    async def _restore(self, controller: Controller) -> None:
        """What the last run left: statuses for the API, readiness if a revision is in force."""
        try:
            if controller.source.mirror.exists:
                self.statuses = await asyncio.to_thread(controller.statuses)
                good = await asyncio.to_thread(lambda: controller.source.last_good)
                self.ready = good is not None
        except Exception as exc:  # a damaged mirror is the first cycle's problem
            log.warning("could not read the last status", error=REDACTOR.text(str(exc)))

    def _backing_off(self) -> bool:
        """Only the clock asks for the cycle wanted, and the last fetch failed less than its
        `retry_after` ago: the remote is left alone until then (a person's sync, a push
        webhook or the start of the controller do not wait)."""
        if self._cycle_wanted is None or self._fetch_after is None:
            return False
        if self._clock() >= self._fetch_after:
            return False
        triggers = {op.trigger for op in map(self.operations.get, self._cycle_wanted) if op}
        return triggers <= CLOCK_TRIGGERS

    def _next_job(self) -> CycleJob | TargetedJob | None:
        with self._lock:
            self._requeue_if_due()
            if self._cycle_wanted is not None and not self._backing_off():
                ops, self._cycle_wanted = self._cycle_wanted, None
                triggers = {op.trigger for op in map(self.operations.get, ops) if op is not None}
                ops = ops + self._waits.take_all()  # the cycle covers what events wait for
                self._running = ops
                covered = frozenset(self._pending)
                self._pending.clear()
                self._pending_triggers.clear()
                if covered:
                    self.metrics.events.labels(outcome="covered").inc(len(covered))
                full, self._shed_since_full = self._shed_since_full, False
                scheduled = bool(triggers) and triggers <= CLOCK_TRIGGERS
                return CycleJob(ops, covered, full, scheduled=scheduled)
            now = self._clock()
            due = {k for k, (first, last) in self._pending.items() if now >= self._due(first, last)}
            asked: set[str] = set()
            for key in due:
                del self._pending[key]
                asked |= self._pending_triggers.pop(key, set())
            if not due:
                return None
            waiting = tuple(self._waits.on(due))
            self._running = list(waiting)
            return TargetedJob(due, tuple(sorted(asked)), waiting)

    def _requeue_if_due(self) -> None:
        """What the last cycle left waiting is due: a cycle (`requeue`), unless one is
        wanted already. Like a scheduled one, it holds the failures still in backoff."""
        if self._come_back_at is None or self._clock() < self._come_back_at:
            return
        self._come_back_at = None
        self.come_back = None
        if self._cycle_wanted is None and not self._stopping:
            self._cycle_wanted = [self.operations.new("requeue").id]
            self.metrics.cycle_requests.labels(result="queued").inc()

    def _due(self, first: float, last: float) -> float:
        return min(last + self.settings.event_debounce, first + self.settings.event_max_delay)

    def _next_due(self) -> float | None:
        with self._lock:
            due = [self._due(f, last) for f, last in self._pending.values()]
            if self._come_back_at is not None:
                due.append(self._come_back_at)
            if self._backing_off():
                assert self._fetch_after is not None
                due.append(self._fetch_after)
            if not due:
                return None
        return max(0.0, min(due) - self._clock())

    def _on_plan(self, plan: Plan) -> None:
        self.plan = plan
        self.ready = True

    def _on_event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        with self._lock:
            self._execution.apply(event)
            if name == "plan.started":
                self._progress[1] += int(event.get("actions", 0))
            elif name in ("resource.finished", "resource.skipped"):
                self._progress[0] += 1
                result = event.get("result", "skipped")
                self.metrics.actions.labels(result=result).inc()
            else:
                return
            done, total = self._progress
            running = list(self._running)
        self.operations.update(running, resources_done=done, resources_total=total)

    async def _cycle(self, controller: Controller, job: CycleJob) -> None:
        with self._lock:
            resumes, self._resumes = self._resumes, []
        for rollout, who in resumes:
            controller.resume_rollout(rollout, who)
        ops = job.operations
        before = dict(self.statuses)
        self._progress = [0, 0]
        started = datetime.now(UTC)
        with self._lock:
            self._execution = ProgressState()
        self.operations.update(ops, phase="running", started=started)
        began = time.monotonic()
        result: CycleResult | None = None
        errors: list[str] = []
        try:
            scope = AtHead(full=job.full, also=job.covered, hold_failures=job.scheduled)
            result = await controller.reconcile(scope)
        except Exception as exc:  # one bad cycle must not end the controller
            log.exception("cycle failed")
            errors.append(REDACTOR.text(f"{type(exc).__name__}: {exc}"))
            with self._lock:
                self._shed_since_full |= job.full  # still owed
        self.cycles_run += 1
        if result is not None:
            self._back_off(result.requeue.fetch_after)
            self._requeue(result.requeue)
            kind = "incremental" if result.incremental else "full"
            seconds = time.monotonic() - began
            errors.extend(self._absorb(result, kind, seconds))
            failed, fields = cycle_log(result, seconds, errors)
            if failed:
                log.error("cycle failed", **fields)
            else:
                log.info("cycle", **fields)
            triggers = tuple(op.trigger for op in map(self.operations.get, ops) if op)
            self.cycles.appendleft(
                CycleRecord(started, kind, triggers, tuple(ops), seconds, failed, fields)
            )
        if result is not None:  # part of the operation: done once its alerts went out
            await self._notify(before, result)
        with self._lock:
            self._running = []
            done, total = self._progress
        ok = result is not None and result.ok and not errors
        self.operations.update(
            ops,
            phase="succeeded" if ok else "failed",
            finished=datetime.now(UTC),
            revision=self.revision,
            resources_done=done,
            resources_total=total,
            errors=tuple(errors),
        )

    def _requeue(self, requeue: Requeue) -> None:
        """Come back when what a cycle left waiting is due — a failure's backoff ends, a
        change window opens — rather than at the next interval."""
        now = datetime.now(UTC)
        found = requeue.come_back(now)
        with self._lock:
            self.come_back = found
            self._come_back_at = (
                None if found is None else self._clock() + (found[0] - now).total_seconds()
            )
        if found is not None:
            log.info("coming back", at=found[0].isoformat(), why=found[1])

    def _back_off(self, retry_after: float | None) -> None:
        """A failed fetch says when to try the remote again: scheduled cycles wait for it."""
        with self._lock:
            self._fetch_after = None if retry_after is None else self._clock() + retry_after
        if retry_after is not None:
            log.info("fetch failed: scheduled cycles wait", seconds=round(retry_after, 1))

    async def _targeted(self, controller: Controller, job: TargetedJob) -> None:
        keys = job.keys
        before = dict(self.statuses)
        started = datetime.now(UTC)
        with self._lock:
            self._execution = ProgressState()
            self._progress = [0, 0]
        self.operations.update(
            [op for op in job.operations if self._unstarted(op)], phase="running", started=started
        )
        began = time.monotonic()
        try:
            result = await controller.reconcile(ProviderEvents(frozenset(keys)))
        except Exception as exc:
            log.exception("targeted reconcile failed", resources=sorted(keys))
            self.metrics.cycles.labels(kind="targeted", result="failed").inc()
            self._settle_events(job, [REDACTOR.text(f"{type(exc).__name__}: {exc}")])
            return
        self.reconciles.update(keys)
        self.metrics.targeted.inc()
        self.metrics.targeted_resources.inc(len(keys))
        seconds = time.monotonic() - began
        errors = self._absorb(result, "targeted", seconds)
        if result.write_error is not None:  # what was done is not on the status branch
            log.error("targeted reconcile failed", resources=sorted(keys), errors=errors[:20])
        failed, fields = cycle_log(result, seconds, errors)
        self.cycles.appendleft(
            CycleRecord(
                started,
                "targeted",
                job.triggers,
                job.operations,
                seconds,
                failed,
                fields,
                tuple(sorted(keys)),
            )
        )
        await self._notify(before, result)
        self._requeue(result.requeue)
        self._settle_events(job, errors if failed or not result.ok else [])

    def _unstarted(self, op_id: str) -> bool:
        op = self.operations.get(op_id)
        return op is not None and op.started is None

    def _settle_events(self, job: TargetedJob, errors: list[str]) -> None:
        """The job's resources are reconciled: its operations gather its errors, and end
        once nothing else they named waits (failed if any reconcile of theirs failed)."""
        with self._lock:
            self._running = []
            done = set(self._waits.reconciled(job.keys))
            progress = self._progress
        now = datetime.now(UTC)
        for op_id in job.operations:
            op = self.operations.get(op_id)
            if op is None:
                continue
            changes: dict[str, Any] = {
                "errors": op.errors + tuple(errors),
                "resources_done": progress[0],
                "resources_total": progress[1],
                "revision": self.revision,
            }
            if op_id in done:
                changes["phase"] = "failed" if changes["errors"] else "succeeded"
                changes["finished"] = now
            self.operations.update([op_id], **changes)

    def _absorb(self, result: CycleResult, kind: str, seconds: float) -> list[str]:
        """Keep what the API serves from a cycle's result; record metrics; the errors."""
        source = result.source
        self.source = source
        if source.revision is not None:
            self.ready = True
            self.revision = source.revision.sha
            if source.load is not None and source.load.desired is not None:
                self.desired = source.load.desired
        if result.statuses:
            self.statuses = dict(result.statuses)
        if result.plan is not None and kind == "full":
            self.plan = result.plan
            if self.desired is not None:
                now = datetime.now(UTC)
                failed = set(result.plan.unknown_providers)
                self.observed_at.update(
                    (name, now) for name in self.desired.providers if name not in failed
                )
        errors: list[str] = []
        if source.stale is not None:
            errors.append(f"source: {source.stale.reason}: {source.stale.message}")
            errors.extend(str(d) for d in source.diagnostics[:20])
        for execution in (result.resumed, result.execution):
            if execution is None:
                continue
            if execution.stopped:
                errors.append(f"stopped: {execution.stopped}")
            for outcome in execution.failed:
                errors.append(
                    f"{outcome.key}: stage {outcome.failed_stage}, task {outcome.failed_task}: "
                    f"{outcome.error}"
                )
        self.metrics.observe_cycle(
            kind,
            seconds,
            ok=result.ok and not errors,
            revision=self.revision,
            stale_reason=source.stale.reason if source.stale else None,
            statuses=self.statuses,
        )
        self.metrics.observe_phases(result.timings)
        for execution in (result.resumed, result.execution):
            if execution is not None:
                self.metrics.observe_execution(execution, result.plan)
        providers = (
            {k: r.provider for k, r in self.desired.resources.items()} if self.desired else {}
        )
        self.metrics.observe_resources(self.statuses, providers)
        self.metrics.observe_write(result.write_error)
        if result.write_error is not None:
            errors.append(f"status not written: {result.write_error}")
        return [REDACTOR.text(e) for e in errors]

    async def _notify(self, before: Mapping[str, ResourceStatus], result: CycleResult) -> None:
        desired = self.desired
        targets = desired.policy.notifications if desired is not None else []
        if not targets or not result.statuses:
            return
        try:
            await self.notifier.cycle_done(targets, before, result.statuses, revision=self.revision)
        except Exception:  # notifications never fail the controller
            log.exception("notifications failed")


def cycle_log(
    result: CycleResult, seconds: float, errors: list[str]
) -> tuple[bool, dict[str, Any]]:
    """The one log line of a cycle: whether it failed, and its fields. Pure.

    Failed: the source was stale (unreachable, refused, invalid head), a task failed,
    or the status commit was not written; the errors say why.
    """
    plan, execution = result.plan, result.execution
    outcomes = list(execution.outcomes.values()) if execution is not None else []
    source = result.source
    scope = result.scope
    fields: dict[str, Any] = {
        "revision": source.revision.sha[:12] if source.revision else None,
        "scope": "incremental" if isinstance(scope, Scope) else "full",
        "planned": sum(a.runnable for a in plan.actions) if plan is not None else 0,
        "succeeded": sum(o.result == "succeeded" for o in outcomes),
        "failed": sum(o.result == "failed" for o in outcomes),
        "skipped": sum(o.result == "skipped" for o in outcomes),
        "blocked": len(plan.blocked) if plan is not None else 0,
        "duration_s": round(seconds, 3),
    }
    if isinstance(scope, Scope):
        fields["scope_detail"] = scope.describe()
    elif isinstance(scope, FullCycle):
        fields["full_because"] = scope.reason
    if result.held:
        fields["held"] = sorted(result.held)
    failed = bool(
        source.stale is not None
        or source.revision is None
        or fields["failed"]
        or result.write_error is not None
        or errors
    )
    if source.stale is not None:
        fields["reason"] = source.stale.reason
    if failed:
        fields["errors"] = errors[:20] or ["no declared revision is in force"]
    return failed, fields


__all__ = [
    "CycleRecord",
    "EventResult",
    "Operations",
    "Scheduler",
    "SyncOperation",
    "TargetedJob",
    "UnknownProvider",
    "event_resources",
]
