"""`run_task`: one task of a stage, run to a `TaskResult` — retried, polled, bounded.

Part of execute, under the orchestrator (plan → waves → stages → tasks) and over
the per-type runners in `reconciler.execute.tasks`. The flow for one task:

1. its deadline is the earlier of ``ctx.deadline`` and now + ``task.timeout``
   (the timeout is the task's whole budget: attempts, backoff and polling);
2. the runner's attempt is called under `with_retries` (temporary → backoff,
   waiting → poll again, permanent → stop), each call bounded by the deadline;
3. whatever happens, a `TaskResult` comes back — a failure is a value, not an
   exception (only cancellation propagates) — with secrets redacted;
4. a task that ran out of time asks the remote to cancel the operation it started
   (``ctx.cancel_operation``: the provider's `cancel`), and its log and message say
   whether it was cancelled, cannot be, or may still complete.

`run_task` reads as those steps; `_TaskRun` holds one run's state (deadline, failures,
the last progress note) and does each of them.

`run_journaled_timed` wraps it with the journal's crash semantics (see `journal.py`),
and gives back the times the journal holds for the task: a result taken from the journal
on resume carries the times it ran at, not the time it was looked up.
"""

from __future__ import annotations

import asyncio
import importlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError, WaitingError
from reconciler.execute.context import Outcome, RunState, TaskContext, TaskResult
from reconciler.execute.journal import TaskRow
from reconciler.execute.retry import GaveUp, with_retries
from reconciler.execute.tasklog import TaskLog
from reconciler.model.tasks import Task
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    from reconciler.execute.store import TaskJournal

Attempt = Callable[[Any, TaskContext, RunState], Awaitable[Outcome]]

RUNNER_MODULES = {
    "provider": "provider",
    "http": "http",
    "command": "command",
    "ansible": "ansible",
    "wait-for": "wait_for",
    "notify": "notify",
    "terraform": "terraform",
}
"""Each task type's module in `reconciler.execute.tasks`."""


def attempt_of(task_type: str) -> Attempt:
    """The runner's attempt for a task type, its module imported on first use: the HTTP
    runners bring httpx, 50 ms of start-up that a plan of provider tasks never needs."""
    module = importlib.import_module(f"reconciler.execute.tasks.{RUNNER_MODULES[task_type]}")
    attempt: Attempt = module.attempt
    return attempt


class DeadlineExceeded(PermanentError):
    """The task's deadline passed during an attempt."""


async def run_task(
    task: Task,
    ctx: TaskContext,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> TaskResult:
    """Run `task` to its end: succeeded, or failed with the reason. Never raises a failure."""
    this = _TaskRun(task, ctx)
    if this.deadline <= this.started:  # queued, or claimed again, past it: nothing starts
        return await this.too_late()
    try:
        outcome, attempts = await with_retries(
            this.once, task.retry, deadline=this.deadline, sleep=sleep, rng=rng, clock=this.clock
        )
    except GaveUp as exc:
        return await this.gave_up(exc)
    except ReconcilerError as exc:  # a runner bug that raised outside the retry loop
        return this.result("failed", str(exc), {}, 1)
    except Exception as exc:  # an unexpected bug must not take the whole plan down
        return this.result("failed", f"internal error: {type(exc).__name__}: {exc}", {}, 1)
    return this.result("succeeded", outcome.message, outcome.outputs, attempts)


class _TaskRun:
    """One run of one task, for `run_task`: its deadline and run state, one attempt under
    the deadline, the progress reported, and the `TaskResult` it ends in."""

    def __init__(self, task: Task, ctx: TaskContext) -> None:
        self.task = task
        self.ctx = ctx
        self.clock = asyncio.get_running_loop().time
        self.started = self.clock()
        self.deadline = self.started + task.timeout
        if ctx.deadline is not None:
            self.deadline = min(self.deadline, ctx.deadline)
        self.run = RunState(
            started=self.started,
            deadline=self.deadline,
            activity=f"running {task.type} task {task.name}",
            operation_id=ctx.operation_id,
        )
        self.attempt = attempt_of(task.type)
        self.log_path = str(ctx.log.path) if ctx.log.path is not None else None
        self.last_note: str | None = None
        ctx.log.event(
            f"task {task.name} ({task.type}) of {ctx.resource_key} stage {ctx.stage or '-'} "
            f"point {ctx.point or '-'}, idempotency key {ctx.idempotency_key}"
            + (f", resuming operation {ctx.operation_id}" if ctx.operation_id else "")
        )

    async def once(self) -> Outcome:
        """One call of the runner's attempt, bounded by the deadline, its failure logged."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await self.attempt(self.task, self.ctx, self.run)
        except TimeoutError:
            elapsed = self.clock() - self.started
            raise DeadlineExceeded(self.run.describe_deadline(elapsed)) from None
        except TemporaryError as exc:
            self.ctx.log.event(f"TemporaryError: {exc}")
            self.run.failures += 1
            self.report_progress(f"attempt {self.run.failures} failed: {exc}")
            raise
        except WaitingError as exc:
            self.ctx.log.event(f"waiting: {exc}")
            self.report_progress(str(exc))
            raise
        except ReconcilerError as exc:
            self.ctx.log.event(f"{type(exc).__name__}: {exc}")
            raise

    def report_progress(self, note: str) -> None:
        if self.ctx.on_progress is None or self.last_note == note:
            return  # unchanged notes (a poll that is still running) are not re-reported
        self.last_note = note
        self.ctx.on_progress(self.run.failures + 1, REDACTOR.text(note))

    async def too_late(self) -> TaskResult:
        """The deadline passed before the task could start: it is not run."""
        late = self.started - self.deadline
        message = (
            f"deadline exceeded {late:.1f}s before {self.run.activity} could start "
            "(it waited in the queue, or was claimed again, past its deadline): not run"
        )
        return self.result("failed", message + await _cancel_remote(self.ctx), {}, 0)

    async def gave_up(self, exc: GaveUp) -> TaskResult:
        """The retries ended without success; past the deadline, the remote is cancelled."""
        message = str(exc)
        if exc.reason == "deadline":
            message = self.run.describe_deadline(self.clock() - self.started)
            if isinstance(exc.last, TemporaryError):
                message += f"; last error: {exc.last}"
        if exc.reason == "deadline" or isinstance(exc.last, DeadlineExceeded):
            message += await _cancel_remote(self.ctx)
        return self.result("failed", message, {}, exc.attempts)

    def result(self, status: str, message: str, outputs: Any, attempts: int) -> TaskResult:
        """The task's end as a value, its secrets redacted, and logged."""
        message = REDACTOR.text(message)
        self.ctx.log.event(f"task {self.task.name} {status}: {message}")
        return TaskResult(
            status="succeeded" if status == "succeeded" else "failed",
            message=message,
            outputs=REDACTOR.data(dict(outputs)),
            operation_id=REDACTOR.text(self.run.operation_id) if self.run.operation_id else None,
            attempts=attempts,
            log_path=self.log_path,
        )


async def _cancel_remote(ctx: TaskContext) -> str:
    """Past its deadline, a task does not leave its remote operation running unseen: the
    provider is asked to cancel it, and the log and the message say what became of it."""
    if ctx.cancel_operation is None:
        return ""
    try:
        note = await ctx.cancel_operation()
    except Exception as exc:  # the task has failed already; this only adds to its story
        note = f"cancelling the remote operation failed: {type(exc).__name__}: {exc}"
    if not note:
        return ""
    ctx.log.event(f"deadline reached: {note}")
    return f"; {note}"


@dataclass(frozen=True)
class Journaled:
    """A task's result and the times its journal row holds (`TaskRecord`'s format:
    ``%Y-%m-%dT%H:%M:%S.%fZ``, UTC): when it first started, when it finished."""

    result: TaskResult
    started: str
    finished: str
    from_journal: bool = False
    """It had finished before (a resumed plan): nothing ran now."""


def record_time(journaled: str) -> str:
    """A journal time (ISO, with an offset) in the format of execution records."""
    moment = datetime.fromisoformat(journaled).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _times(row: TaskRow | None) -> tuple[str, str]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if row is None:  # not journaled (cannot happen after mark_finished): this moment
        return now, now
    return record_time(row.started_at), record_time(row.finished_at or row.updated_at)


def dispatched(journal: TaskJournal, key: str, result: TaskResult) -> Journaled:
    """A result a worker reported (`RECONCILER_EXECUTE=workers`), with the times the
    shared journal holds for its task."""
    return Journaled(result, *_times(journal.task_state(key)))


async def run_journaled(
    journal: TaskJournal,
    task: Task,
    ctx: TaskContext,
    *,
    state_dir: Path | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> TaskResult:
    """`run_journaled_timed`'s result alone."""
    done = await run_journaled_timed(journal, task, ctx, state_dir=state_dir, sleep=sleep)
    return done.result


async def run_journaled_timed(
    journal: TaskJournal,
    task: Task,
    ctx: TaskContext,
    *,
    state_dir: Path | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Journaled:
    """`run_task` with the journal's crash semantics, keyed by ``ctx.idempotency_key``.

    - finished before: its stored result comes back, nothing runs;
    - acknowledged before: the runner resumes polling that operation id;
    - started but not acknowledged: run again with the same idempotency key.
    With `state_dir` (and no log in the context), the task's log is opened there.
    The times are the journal's: a task re-entered after a crash started when it
    first started.
    """
    key = ctx.idempotency_key
    row = journal.task_state(key)
    if row is not None and row.state == "finished" and row.result is not None:
        return Journaled(row.result, *_times(row), from_journal=True)
    journal.mark_started(
        key,
        plan_hash=ctx.plan_hash,
        resource=ctx.resource_key,
        stage=ctx.stage,
        point=ctx.point,
        task=task.name,
    )
    operation_id = row.operation_id if row is not None else None
    outer_ack = ctx.on_acknowledged

    outer_progress = ctx.on_progress

    def acknowledged(op_id: str) -> None:
        journal.mark_acknowledged(key, op_id)
        if outer_ack is not None:
            outer_ack(op_id)

    def progress(attempts: int, note: str) -> None:
        journal.mark_progress(key, attempts=attempts, note=note)
        if outer_progress is not None:
            outer_progress(attempts, note)

    log = ctx.log
    opened = None
    if state_dir is not None and log.path is None:
        opened = log = await TaskLog.open_async(
            state_dir,
            ctx.plan_hash,
            ctx.resource_key,
            ctx.stage,
            task.name,
            point=ctx.point or None,
        )
    try:
        result = await run_task(
            task,
            replace(
                ctx,
                operation_id=ctx.operation_id or operation_id,
                on_acknowledged=acknowledged,
                on_progress=progress,
                log=log,
            ),
            sleep=sleep,
        )
    finally:
        if opened is not None:
            await opened.aclose()
    journal.mark_finished(key, result)
    return Journaled(result, *_times(journal.task_state(key)))
