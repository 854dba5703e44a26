"""The executor: runs a Plan's actions — step 6 of the flow, the orchestration half.

Sits on `runners.run_journaled` (one task, crash-safe) and drives a whole plan:

- each resource's stages run in order, each stage's task lists in run order
  (pre-notify, pre-process, classify, work, post-process, validate, post-notify);
  a stage is done only when its validate tasks pass; a failed task stops that
  resource's pipeline and nothing else;
- `dependsOn` is respected per resource: a resource starts when every resource
  it depends on that is in the plan has succeeded (a stronger, faster form of
  the plan's waves); when one failed, its dependents are skipped, not run;
- concurrency is bounded globally and per provider (the Provider's
  `limits.concurrency`), counted in tasks in flight, long waits included; a task
  takes its provider's slot before a global one, so a slow provider's queue never
  holds global slots that another provider's tasks could use (no head-of-line
  blocking across providers);
- each plan's resources run in one structured task group: an exception escaping a
  resource (a journal write, a task log, an event callback) becomes that
  resource's failed outcome, its siblings carry on, and `execute()` returns only
  once every resource has ended — nothing is left running detached;
- destructive actions run only inside the policy's change windows;
- a provider task that reaches its deadline asks the provider to cancel the
  operation it started (`Provider.cancel`), and its task log says what came of it;
- every task's idempotency key is derived from (execution id, resource, stage,
  point, task), so a restart after `kill -9` resumes: finished tasks are not run
  again, started ones are retried with the same key (providers deduplicate it);
- `request_stop()` stops at a task boundary (SIGTERM, or a newer revision
  superseding this plan): running tasks finish, nothing new starts.

The results are values (`ExecutionResult`, in `results.py`) for `report` to turn into status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from reconciler.errors import ReconcilerError
from reconciler.execute.context import TaskContext, TaskResult
from reconciler.execute.journal import idempotency_key
from reconciler.execute.manifest import TaskManifest, provider_callbacks
from reconciler.execute.results import (
    WAITS_FOR_WINDOW,
    ExecutionResult,
    ResourceOutcome,
    ResultKind,
    TaskRecord,
)
from reconciler.execute.rollout_gate import PAUSE_FACT, RolloutGate, pause_record
from reconciler.execute.runners import Journaled, dispatched, run_journaled_timed
from reconciler.execute.secret_check import environment as secret_environment
from reconciler.execute.secret_check import precheck
from reconciler.execute.store import JournalStore
from reconciler.execute.tasks.terraform import decommission_tasks
from reconciler.execute.windows import in_change_window
from reconciler.load.desired import TASK_POINTS, Desired, ResolvedResource
from reconciler.model.tasks import ProviderActionTask, Task
from reconciler.observe.observe import resource_ref
from reconciler.plan.diff import FAILED_STAGE, MISSING, LastApplied, get_path, still_differing
from reconciler.plan.plan import Operation, Plan, PlannedAction
from reconciler.plan.rollouts import rollout_spec
from reconciler.providers.base import Provider, ResourceRef
from reconciler.providers.operations import observe_one
from reconciler.secrets import REDACTOR

log = structlog.get_logger("reconciler.execute")

EventSink = Callable[[dict[str, Any]], None]
Dispatch = Callable[[TaskManifest], Awaitable[TaskResult]]

DECOMMISSION_TASK = ProviderActionTask(
    name="decommission", type="provider", action="decommission", timeout=3600.0
)

CLIENT_TASK_TYPES = frozenset({"http", "notify"})
"""Task types that send through the execution's shared HTTP client (`web.client_for`)."""


class _Stopped(Exception):
    """A stop was requested while a task waited for a concurrency slot: it never started."""


def execution_id(plan: Plan, started: str) -> str:
    """Names one execution of a plan: the same plan run again later is a new execution
    (its tasks run again), while a resumed one keeps its id (its tasks do not)."""
    return hashlib.sha256(f"{plan.content_hash}|{started}".encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Executor:
    """Runs plans against open providers, journaling every task in `journal`."""

    journal: JournalStore
    providers: Mapping[str, Provider]
    desired: Desired
    state_dir: Path
    repo_dir: Path | None = None
    concurrency: int = 200
    finish: bool = True
    """Mark the plan finished in the journal when it has run. A controller passes
    False and finishes it once its results are committed: a crash in between then
    resumes the plan (every task's result comes from the journal) and reports it."""
    on_event: EventSink | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    dispatch: Dispatch | None = None
    """Hands a task to workers and waits for its result (`RECONCILER_EXECUTE=workers`,
    `reconciler.execute.worker.QueueDispatch`); None: tasks run here, in this process."""
    repository: str = "default"
    """The owner identity, for the providers workers open (`TaskManifest.repository`)."""
    repository_url: str | None = None
    """Where the plan's revision is, for workers materializing its tree (no password)."""
    _stop: str | None = None

    def request_stop(self, reason: str) -> None:
        """Start nothing new; tasks in flight finish and are journaled."""
        self._stop = reason

    def _emit(self, event: str, **fields: Any) -> None:
        """Tell the caller (progress, metrics). A callback that raises fails the resource
        the event is about (see `_Run.guarded`); use `_emit_safely` where none is."""
        if self.on_event is not None:
            self.on_event(REDACTOR.data({"event": event, **fields}))

    def _emit_safely(self, event: str, **fields: Any) -> None:
        try:
            self._emit(event, **fields)
        except Exception:  # a broken callback must not lose a plan's or a failure's result
            log.exception("event callback failed", event_name=event)

    async def execute(self, plan: Plan, *, execution: str | None = None) -> ExecutionResult:
        """Run every runnable action of `plan`; `execution` resumes a journaled run."""
        if execution is None:
            execution = execution_id(plan, _now())
            self.journal.record_plan(execution, plan.revision, plan.to_json())
        actions = [a for a in plan.actions if a.runnable]
        self._emit_safely("plan.started", execution=execution, actions=len(actions))
        global_limit = asyncio.Semaphore(self.concurrency)
        provider_limits = {
            name: asyncio.Semaphore(spec.spec.limits.concurrency)
            for name, spec in self.desired.providers.items()
        }
        done: dict[str, asyncio.Event] = {a.key: asyncio.Event() for a in actions}
        outcomes: dict[str, ResourceOutcome] = {}
        async with contextlib.AsyncExitStack() as stack:
            client = None
            # Made only for a plan that has HTTP tasks: one pool of connections for all.
            if self._sends_http(actions):
                limits = httpx.Limits(max_connections=self.concurrency)
                client = await stack.enter_async_context(
                    httpx.AsyncClient(limits=limits, follow_redirects=False)
                )
            run = _Run(self, plan, execution, global_limit, provider_limits, client)
            # Structured: leaving the group means every resource has ended; a cancelled
            # execute() cancels and awaits them all. A resource never raises into the
            # group (`_Run.guarded`), so one failing cannot cancel its siblings.
            async with asyncio.TaskGroup() as group:
                for action in actions:
                    group.create_task(run.guarded(action, done, outcomes), name=action.key)
        stopped = self._stop
        if stopped:
            # Resumed later with its own keys, exactly as after a crash: what finished is
            # not run again, what did not runs with the same idempotency keys.
            self.journal.mark_stopped(execution, stopped)
        else:
            self.journal.mark_executed(execution)
            if self.finish:
                self.journal.mark_reported(execution)
        self._emit_safely(
            "plan.finished",
            execution=execution,
            succeeded=sum(o.result == "succeeded" for o in outcomes.values()),
            failed=sum(o.result == "failed" for o in outcomes.values()),
            skipped=sum(o.result == "skipped" for o in outcomes.values()),
            stopped=stopped,
        )
        return ExecutionResult(
            execution, plan.content_hash, dict(sorted(outcomes.items())), stopped
        )

    def _sends_http(self, actions: list[PlannedAction]) -> bool:
        """Whether a task of `actions` is of a type in `CLIENT_TASK_TYPES`."""
        for action in actions:
            resolved = self.desired.resources.get(action.key)
            if action.operation is Operation.DECOMMISSION or resolved is None:
                continue  # the provider's decommission task
            stages = {s.name: s for s in resolved.stages}
            for stage in action.stages:
                tasks = stages[stage].tasks if stage in stages else {}
                for point in TASK_POINTS:
                    if any(t.type in CLIENT_TASK_TYPES for t in tasks.get(point, ())):
                        return True
        return False


@dataclass
class _Progress:
    """How far one resource got: what a failure part-way (even an unexpected one) reports."""

    started: str = ""
    stage: str | None = None
    task: str | None = None
    records: list[TaskRecord] = field(default_factory=list)
    stages_done: list[str] = field(default_factory=list)


def _record(stage: str, point: str, task: str, done: Journaled) -> TaskRecord:
    result = done.result
    return TaskRecord(
        stage=stage,
        point=point,
        task=task,
        result=result.status,
        message=result.message,
        started=done.started,
        finished=done.finished,
        operation_id=result.operation_id,
        log=result.log_path,
        attempts=result.attempts,
    )


def _stage_params(resolved: ResolvedResource | None, stage: str) -> Mapping[str, Any]:
    """The params a stage's tasks see: its own `params` in their place of the README's
    order (after the pipeline's, before the global profile's)."""
    if resolved is None:
        return {}
    for candidate in resolved.stages:
        if candidate.name == stage:
            return candidate.params
    return resolved.params


@dataclass
class _Run:
    """The state of one execution, shared by its resources' coroutines."""

    executor: Executor
    plan: Plan
    execution: str
    global_limit: asyncio.Semaphore
    provider_limits: Mapping[str, asyncio.Semaphore]
    client: httpx.AsyncClient | None
    """Shared by the HTTP tasks; None when the plan has none (a task then makes its own)."""

    blocked_creates: dict[str, str] = field(default_factory=dict)
    """Why a resource's create is blocked in this plan (approval, guardrail), by key."""

    def __post_init__(self) -> None:
        self.blocked_creates = {
            a.key: a.blocked
            for a in self.plan.actions
            if a.operation is Operation.CREATE and a.blocked
        }
        self.rollouts = {r.id: RolloutGate(r, on_pause=self._paused) for r in self.plan.rollouts}
        self.rollout_keys = {
            rollout: {a.key for a in self.plan.actions if a.runnable and a.rollout == rollout}
            for rollout in self.rollouts
        }

    def _paused(self, rollout: str, why: str) -> None:
        """Kept in the journal: later plans hold the rollout back until it is resumed."""
        spec = rollout_spec(self.executor.desired, rollout)
        self.executor.journal.set_fact(
            f"{PAUSE_FACT}{rollout}", pause_record(why, spec.resume if spec else None)
        )
        self.executor._emit("rollout.paused", rollout=rollout, reason=why)

    async def guarded(
        self,
        action: PlannedAction,
        done: Mapping[str, asyncio.Event],
        outcomes: dict[str, ResourceOutcome],
    ) -> None:
        """One resource, start to end, in the plan's task group: whatever escapes it (a
        journal write, a task log, an event callback) is its failed outcome, never its
        siblings' problem. Its dependents are released however it ends."""
        progress = _Progress()
        try:
            outcomes[action.key] = await self.resource(action, done, outcomes, progress)
        except Exception as exc:
            outcomes[action.key] = self._crashed(action, progress, exc)
        finally:
            done[action.key].set()
        outcome = outcomes[action.key]
        if not (outcome.result == "skipped" and self.executor._stop):
            # A resource stopped before it ended is not a result: the resume decides it.
            self.executor.journal.record_outcome(self.execution, action.key, outcome.to_dict())

    async def resource(
        self,
        action: PlannedAction,
        done: Mapping[str, asyncio.Event],
        outcomes: Mapping[str, ResourceOutcome],
        progress: _Progress | None = None,
    ) -> ResourceOutcome:
        gate = self.rollouts.get(action.rollout) if action.rollout else None
        not_now = await self._wait_turn(action, done, outcomes)
        if not_now is not None:
            if gate is not None:
                gate.skipped(action.key)
            return not_now
        if gate is None:
            return await self._started(action, progress)
        why = await gate.enter(action.key, self.rollout_keys[gate.rules.id])
        if why is not None:
            return self._skipped(action, why)
        outcome: ResourceOutcome | None = None
        try:
            outcome = await self._started(action, progress)
            return outcome
        finally:
            await gate.leave(action.key, outcome is not None and outcome.result == "succeeded")

    async def _started(self, action: PlannedAction, progress: _Progress | None) -> ResourceOutcome:
        ex = self.executor
        progress = progress if progress is not None else _Progress()
        provider = ex.providers.get(action.provider)
        if provider is None:
            return ResourceOutcome(
                key=action.key,
                operation=action.operation.value,
                result="failed",
                error=f"provider {action.provider!r} is not available",
                reason="ProviderUnavailable",
            )
        progress.started = _now()
        ex._emit("resource.started", resource=action.key, operation=action.operation.value)
        resolved = ex.desired.resources.get(action.key)
        if resolved is not None and action.operation is not Operation.DECOMMISSION:
            missing = precheck(resolved, action.stages, secret_environment(ex.repo_dir))
            if missing is not None:  # fail before the first stage, not at the one needing it
                ex._emit("resource.finished", resource=action.key, result="failed")
                return ResourceOutcome(
                    key=action.key,
                    operation=action.operation.value,
                    result="failed",
                    error=missing,
                    reason="SecretUnavailable",
                    started=progress.started,
                    finished=_now(),
                )
        return await self._pipeline(action, resolved, provider, progress)

    async def _wait_turn(
        self,
        action: PlannedAction,
        done: Mapping[str, asyncio.Event],
        outcomes: Mapping[str, ResourceOutcome],
    ) -> ResourceOutcome | None:
        """Wait for the resource's dependencies; a skipped outcome when it must not start
        (a dependency did not succeed, a stop was asked for, its change window is closed)."""
        ex = self.executor
        for dep in action.depends_on:
            waiting = self.blocked_creates.get(dep)
            if waiting is not None:
                return self._skipped(action, f"dependency {dep} is not created: {waiting}")
            if dep in done:
                await done[dep].wait()
                if outcomes[dep].result != "succeeded":
                    return self._skipped(action, f"dependency {dep} did not succeed")
        if ex._stop:
            return self._skipped(action, f"not started: {ex._stop}")
        policy = ex.desired.policy
        if action.destructive and not in_change_window(policy.change_windows, ex.clock()):
            return self._skipped(action, WAITS_FOR_WINDOW)
        return None

    def _steps(
        self, action: PlannedAction, resolved: ResolvedResource | None
    ) -> tuple[list[tuple[str, str, int, Task]], ResourceRef]:
        """The resource's tasks in run order as (stage, point, position, task), and its ref."""
        if action.operation is Operation.DECOMMISSION or resolved is None:
            ref = ResourceRef(kind=action.kind, name=action.name, key=action.key)
            # Terraform states kept for it are destroyed first, then the provider's part;
            # each keyed by its own name (position 0), whatever was destroyed before a crash.
            tasks: list[Task] = [
                *decommission_tasks(self.executor.state_dir, action.key),
                DECOMMISSION_TASK,
            ]
            return [("decommission", "work", 0, task) for task in tasks], ref
        by_name = {s.name: s for s in resolved.stages}
        steps = [
            (stage, point, position, task)
            for stage in action.stages
            for point in TASK_POINTS
            for position, task in enumerate(by_name[stage].tasks[point])
        ]
        return steps, resource_ref(resolved)

    async def _pipeline(
        self,
        action: PlannedAction,
        resolved: ResolvedResource | None,
        provider: Provider,
        progress: _Progress,
    ) -> ResourceOutcome:
        """The resource's stages in order, each task at its turn; ends at the first failure."""
        ex = self.executor
        plan_stages, ref = self._steps(action, resolved)
        for index, (stage, point, position, task) in enumerate(plan_stages):
            progress.stage, progress.task = stage, task.name
            if ex._stop:
                return self._finish(action, "skipped", progress, reason=f"stopped: {ex._stop}")
            try:
                done = await self._task(
                    action, resolved, ref, provider, stage, (point, position), task
                )
            except _Stopped:
                return self._finish(action, "skipped", progress, reason=f"stopped: {ex._stop}")
            result = done.result
            progress.records.append(_record(stage, point, task.name, done))
            if not result.ok:
                ex._emit(
                    "task.failed",
                    resource=action.key,
                    stage=stage,
                    task=task.name,
                    error=result.message,
                )
                failed = (stage, task.name, result.message, result.log_path)
                return self._finish(action, "failed", progress, failed=failed)
            last_of_stage = index + 1 == len(plan_stages) or plan_stages[index + 1][0] != stage
            if last_of_stage and resolved is not None:
                problem = await self._check_converged(resolved, ref, provider, stage)
                if problem is not None:
                    progress.records.append(problem)
                    ex._emit("task.failed", resource=action.key, stage=stage, task="converged",
                             error=problem.message)  # fmt: skip
                    failed = (stage, "converged", problem.message, None)
                    return self._finish(action, "failed", progress, failed=failed)
            if last_of_stage:
                progress.stages_done.append(stage)
                if resolved is not None and action.operation is not Operation.DECOMMISSION:
                    self._record_stage(resolved, stage)
                ex._emit("stage.done", resource=action.key, stage=stage)
        self._record_completed(action, resolved)
        return self._finish(action, "succeeded", progress)

    def _crashed(
        self, action: PlannedAction, progress: _Progress, exc: Exception
    ) -> ResourceOutcome:
        """The failed outcome of a resource something unexpected escaped from."""
        message = REDACTOR.text(f"internal error: {type(exc).__name__}: {exc}")
        log.error(
            "resource failed with an internal error",
            resource=action.key,
            stage=progress.stage,
            task=progress.task,
            error=message,
            exc_info=exc,
        )
        failed = (progress.stage or "-", progress.task or "-", message, None)
        self.executor._emit_safely(
            "task.failed",
            resource=action.key,
            stage=failed[0],
            task=failed[1],
            error=message,
        )
        return self._finish(
            action, "failed", progress, failed=failed, reason="ExecutionError", safely=True
        )

    async def _check_converged(
        self, resolved: ResolvedResource, ref: ResourceRef, provider: Provider, stage: str
    ) -> TaskRecord | None:
        """A stage that converges declared fields is done only when they are observed as
        declared (its validate tasks may not check them all): else a failed record."""
        converges = next((s.converges for s in resolved.stages if s.name == stage), ())
        declared = resolved.declared()
        if not any(get_path(declared, path.split(".")) is not MISSING for path in converges):
            return None
        began = _now()
        try:
            observed = await observe_one(provider, ref)
        except ReconcilerError as exc:
            message = f"could not observe what the stage converges: {exc}"
        else:
            ignore = self.executor.desired.policy.ignore_differences
            differing = still_differing(resolved, converges, observed, ignore)
            if not differing:
                return None
            message = "still differs after the stage: " + "; ".join(differing)
        return TaskRecord(
            stage=stage,
            point="validate",
            task="converged",
            result="failed",
            message=REDACTOR.text(message),
            started=began,
            finished=_now(),
        )

    def _record_failed_stage(self, key: str, stage: str) -> None:
        """A stage that failed is not done as declared, whatever it did before: the journal
        forgets its digest, so the next plan runs it again (a status losing the failure —
        a later blocked cycle — cannot make the resource look done)."""
        journal = self.executor.journal
        found = journal.applied().get(key)
        if found is None or stage not in (found.get("stages") or {}):
            return
        record = LastApplied.from_dict(found)
        digests = {**record.stages, stage: FAILED_STAGE}
        journal.record_applied(key, replace(record, stages=digests).to_dict())

    def _record_stage(self, resolved: ResolvedResource, stage: str) -> None:
        """A stage completed on the resource as declared now: journaled at once, so an
        unfinished first run continues after it, and a changed stage is told apart."""
        journal = self.executor.journal
        record = LastApplied.from_dict(journal.applied().get(resolved.key) or {})
        digests = {**record.stages, stage: resolved.stage_digests()[stage]}
        journal.record_applied(resolved.key, replace(record, stages=digests).to_dict())

    def _record_completed(self, action: PlannedAction, resolved: ResolvedResource | None) -> None:
        """The pipeline completed (or the resource was adopted, or decommissioned): what
        the journal says reconciler brought about."""
        journal = self.executor.journal
        if action.operation is Operation.DECOMMISSION or resolved is None:
            journal.forget_applied(action.key)
            return
        record = LastApplied(
            fingerprint=resolved.fingerprint(),
            declared=resolved.declared(),
            revision=self.plan.revision,
            resolution=resolved.resolution(),
            stages=resolved.stage_digests(),
            adopted=action.operation is Operation.ADOPT,
        )
        journal.record_applied(action.key, record.to_dict())

    def _skipped(self, action: PlannedAction, reason: str) -> ResourceOutcome:
        self.executor._emit("resource.skipped", resource=action.key, reason=reason)
        return ResourceOutcome(
            key=action.key, operation=action.operation.value, result="skipped", reason=reason
        )

    def _finish(
        self,
        action: PlannedAction,
        result: ResultKind,
        progress: _Progress,
        *,
        failed: tuple[str, str, str, str | None] | None = None,
        reason: str = "",
        safely: bool = False,
    ) -> ResourceOutcome:
        emit = self.executor._emit_safely if safely else self.executor._emit
        emit("resource.finished", resource=action.key, result=result)
        if failed is not None and action.operation is not Operation.DECOMMISSION:
            self._record_failed_stage(action.key, failed[0])
        return ResourceOutcome(
            key=action.key,
            operation=action.operation.value,
            result=result,
            stages_done=tuple(progress.stages_done),
            failed_stage=failed[0] if failed else None,
            failed_task=failed[1] if failed else None,
            error=failed[2] if failed else None,
            log=failed[3] if failed else None,
            reason=reason,
            tasks=tuple(progress.records),
            started=progress.started,
            finished=_now(),
        )

    async def _task(
        self,
        action: PlannedAction,
        resolved: ResolvedResource | None,
        ref: ResourceRef,
        provider: Provider,
        stage: str,
        at: tuple[str, int],
        task: Task,
    ) -> Journaled:
        ex = self.executor
        point, position = at
        # The position in the composed list is part of the key: hooks from several levels
        # may share a task name, and each is a task of its own.
        key = idempotency_key(
            self.execution, action.key, stage, task.name, point=f"{point}#{position}"
        )

        calls = provider_callbacks(provider, ref, ex.journal)
        ctx = TaskContext(
            resource_key=action.key,
            resource_kind=action.kind,
            resource_name=action.name,
            idempotency_key=key,
            params=dict(_stage_params(resolved, stage)),
            secure_params=resolved.secure_params if resolved else frozenset(),
            plan_hash=self.execution,
            stage=stage,
            point=point,
            repo_dir=ex.repo_dir,
            state_dir=ex.state_dir,
            provider_action=calls.action,
            observe=calls.observe,
            cancel_operation=calls.cancel,
            http_client=self.client,
        )
        limit = self.provider_limits.get(action.provider)
        # The provider's slot first: a task queued behind its own provider's limit holds
        # no global slot, so it never keeps another provider's tasks waiting.
        async with limit or contextlib.nullcontext(), self.global_limit:
            if ex._stop:  # requested while this task waited for its slot
                raise _Stopped(ex._stop)
            ex._emit("task.started", resource=action.key, stage=stage, point=point, task=task.name)
            if ex.dispatch is not None:  # RECONCILER_EXECUTE=workers: a worker runs it
                manifest = self._manifest(action, ref, stage, point, task, ctx)
                return dispatched(ex.journal, key, await ex.dispatch(manifest))
            return await run_journaled_timed(ex.journal, task, ctx, state_dir=ex.state_dir)

    def _manifest(
        self,
        action: PlannedAction,
        ref: ResourceRef,
        stage: str,
        point: str,
        task: Task,
        ctx: TaskContext,
    ) -> TaskManifest:
        spec = self.executor.desired.providers[action.provider].spec
        return TaskManifest(
            idempotency_key=ctx.idempotency_key,
            execution=self.execution,
            resource=ref,
            stage=stage,
            point=point,
            task=task,
            provider=action.provider,
            provider_spec=spec.model_dump(mode="json", by_alias=True),
            params=ctx.params,
            secure_params=ctx.secure_params,
            # Counted from its dispatch, on the wall clock every process shares: a task
            # that waits in the queue, or is claimed again after a worker died, does not
            # start its timeout over (a resumed plan keeps the queued manifest's).
            deadline=self.executor.clock().timestamp() + task.timeout,
            repository=self.executor.repository,
            revision=self.plan.revision,
            repository_url=self.executor.repository_url,
        )
