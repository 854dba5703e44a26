"""What each page of the web UI shows, as values: pure functions of what the scheduler holds.

Between the scheduler's state (statuses, the desired set, the plan, operations,
cycles, the running execution) and the templates. No I/O and no clock: the
routes pass in what they read (`reconciler.controller.ui.store`) and the time. The words
are the CLI's and the PR comment's (`reconciler.plan.render`, `reconciler.controller.progress`),
so a page says what `reconciler plan` and `apply` say.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.controller.progress import ProgressState
from reconciler.controller.ui.query import PHASE_ORDER, FleetIndex
from reconciler.model.status import Condition, ResourceStatus
from reconciler.plan.diff import _MISSING, _redact, converged_paths, get_path
from reconciler.plan.plan import Plan, PlannedAction
from reconciler.plan.render import SYMBOLS, VERBS, _action_lines
from reconciler.report.audit import Entry, parse_time
from reconciler.report.report import DriftEntry

if TYPE_CHECKING:
    from reconciler.controller.scheduler import SyncOperation
    from reconciler.load.desired import Desired, ResolvedResource
    from reconciler.source import SourceResult

DIAGNOSTICS_SHOWN = 5


# --- overview ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceView:
    """The revision in force and, when it is not the remote's head, why."""

    revision: str | None
    head: str | None = None
    stale_reason: str | None = None
    stale_message: str = ""
    diagnostics: tuple[str, ...] = ()
    more_diagnostics: int = 0


@dataclass(frozen=True)
class ProviderView:
    name: str
    type: str
    endpoint: str | None
    total: int
    phases: tuple[tuple[str, int], ...]
    """(phase, count), worst first."""
    untrusted: bool = False
    """The last plan could not trust its answer (an observation failed, or it saw nothing)."""
    problem: str = ""
    """The message of one of its resources whose observation is unknown."""
    observed: datetime | None = None
    """Its last successful observation (None: not since the controller started)."""


@dataclass(frozen=True)
class RunningRow:
    key: str
    stage: str
    task: str
    seconds: float


@dataclass(frozen=True)
class RunningView:
    """The execution in flight: the terminal live view's counts and rows."""

    operations: tuple[str, ...]
    counts: str
    total: int
    finished: int
    rows: tuple[RunningRow, ...]
    failures: tuple[str, ...]


def source_view(revision: str | None, source: SourceResult | None) -> SourceView:
    if source is None:
        return SourceView(revision)
    diagnostics = tuple(str(d) for d in source.diagnostics)
    return SourceView(
        revision=revision,
        head=source.head.sha if source.head is not None else None,
        stale_reason=source.stale.reason if source.stale is not None else None,
        stale_message=source.stale.message if source.stale is not None else "",
        diagnostics=diagnostics[:DIAGNOSTICS_SHOWN],
        more_diagnostics=max(0, len(diagnostics) - DIAGNOSTICS_SHOWN),
    )


def provider_views(
    index: FleetIndex,
    desired: Desired | None,
    plan: Plan | None,
    observed: Mapping[str, datetime] | None = None,
) -> list[ProviderView]:
    """Each declared provider with its resources by phase, worst first, and when it was
    last observed (`Scheduler.observed_at`)."""
    if desired is None:
        return []
    phases: dict[str, Counter[str]] = {name: Counter() for name in desired.providers}
    problems: dict[str, str] = {}
    for row in index.rows:
        if row.provider in phases:
            phases[row.provider][row.phase] += 1
            if row.phase == "Unknown" and row.provider not in problems:
                problems[row.provider] = row.message
    untrusted = set(plan.unknown_providers) if plan is not None else set()
    views = []
    for name, provider in sorted(desired.providers.items()):
        counts = phases[name]
        views.append(
            ProviderView(
                name=name,
                type=provider.spec.type,
                endpoint=provider.spec.endpoint,
                total=sum(counts.values()),
                phases=tuple((p, counts[p]) for p in PHASE_ORDER if counts[p]),
                untrusted=name in untrusted,
                problem=problems.get(name, ""),
                observed=(observed or {}).get(name),
            )
        )
    return views


def running_view(state: ProgressState, operations: Sequence[str], now: float) -> RunningView:
    """`state` is a copy (`Scheduler.execution`); `now` on its clock (monotonic)."""
    rows = tuple(
        RunningRow(key, row.stage, row.task, max(0.0, now - row.since))
        for key, row in sorted(state.running.items())
    )
    return RunningView(
        operations=tuple(operations),
        counts=state.counts(),
        total=state.total,
        finished=state.done + state.failed + state.skipped,
        rows=rows,
        failures=tuple(state.failures[-10:]),
    )


def current_operation(
    operations: Sequence[SyncOperation], running: Sequence[str]
) -> SyncOperation | None:
    """The operation of the running cycle, else the newest pending one."""
    by_id = {op.id: op for op in operations}
    for op_id in running:
        if op_id in by_id:
            return by_id[op_id]
    return next((op for op in operations if op.phase in ("pending", "running")), None)


# --- one resource -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    point: str
    name: str
    type: str


@dataclass(frozen=True)
class StageView:
    name: str
    state: str
    """done, running, failed, pending."""
    destructive: bool
    converges: tuple[str, ...]
    tasks: tuple[TaskView, ...]
    current: str | None = None
    """The task running now, or the one that failed."""


@dataclass(frozen=True)
class FieldView:
    path: str
    declared: Any
    observed: Any
    declared_absent: bool
    observed_absent: bool

    @property
    def differs(self) -> bool:
        """Declared, and not observed as declared (a field only observed differs from
        nothing: there is nothing to converge it to)."""
        if self.declared_absent:
            return False
        return self.observed_absent or self.declared != self.observed


@dataclass(frozen=True)
class TaskRun:
    """One task of the last run, from the audit."""

    stage: str
    task: str
    result: str
    started: str
    finished: str
    seconds: float | None
    operation_id: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ResourceView:
    key: str
    kind: str
    name: str
    status: ResourceStatus | None
    resource: ResolvedResource | None
    conditions: tuple[Condition, ...]
    stages: tuple[StageView, ...]
    fields: tuple[FieldView, ...]
    action: PlannedAction | None
    action_lines: tuple[str, ...]
    drift: DriftEntry | None
    running: bool
    labels: Mapping[str, str] = field(default_factory=dict)


def _stage_state(
    name: str, status: ResourceStatus | None, running: tuple[str, str] | None
) -> tuple[str, str | None]:
    if running is not None and running[0] == name:
        return "running", running[1]
    failure = status.failure if status is not None and status.phase == "Failed" else None
    if failure is not None and failure.stage == name:
        return "failed", failure.task
    done = status.last_applied.stages_done if status and status.last_applied else ()
    return ("done" if name in done else "pending"), None


def stage_views(
    resource: ResolvedResource | None,
    status: ResourceStatus | None,
    running: tuple[str, str] | None,
) -> tuple[StageView, ...]:
    """The resource's pipeline as stages: done, running (with its task), failed, pending.

    Without a declared resource (an orphan), the stages its status says were done.
    """
    if resource is None:
        done = status.last_applied.stages_done if status and status.last_applied else ()
        return tuple(StageView(name, "done", False, (), ()) for name in done)
    views = []
    for stage in resource.stages:
        state, current = _stage_state(stage.name, status, running)
        tasks = tuple(
            TaskView(point, task.name, task.type)
            for point, listed in stage.tasks.items()
            for task in listed
        )
        views.append(
            StageView(stage.name, state, stage.destructive, stage.converges, tasks, current)
        )
    return tuple(views)


def field_views(
    resource: ResolvedResource | None, status: ResourceStatus | None
) -> tuple[FieldView, ...]:
    """Declared versus observed values of the fields its stages converge (secure params
    as ***, as in the plan)."""
    if resource is None:
        return ()
    declared = resource.declared()
    observed = status.observed if status is not None else {}
    views = []
    for path in converged_paths(resource):
        parts = path.split(".")
        wanted, seen = get_path(declared, parts), get_path(observed, parts)
        views.append(
            FieldView(
                path=path,
                declared=_redact(parts, wanted, resource.secure_params),
                observed=_redact(parts, seen, resource.secure_params),
                declared_absent=wanted is _MISSING,
                observed_absent=seen is _MISSING,
            )
        )
    return tuple(views)


def resource_view(
    key: str,
    *,
    status: ResourceStatus | None,
    desired: Desired | None,
    action: PlannedAction | None,
    drift: DriftEntry | None,
    running: tuple[str, str] | None,
) -> ResourceView:
    """`running`: (stage, task) when the resource runs now."""
    resource = desired.resources.get(key) if desired is not None else None
    kind, _, name = key.partition("/")
    return ResourceView(
        key=key,
        kind=kind,
        name=name,
        status=status,
        resource=resource,
        conditions=status.conditions if status is not None else (),
        stages=stage_views(resource, status, running),
        fields=field_views(resource, status),
        action=action,
        action_lines=tuple(line.strip() for line in _action_lines(action)[1:]) if action else (),
        drift=drift,
        running=running is not None,
        labels=resource.labels if resource is not None else {},
    )


def last_run(entries: Sequence[Entry]) -> tuple[Entry | None, tuple[TaskRun, ...]]:
    """The newest action of a timeline and its tasks with their durations."""
    action = next((e for e in reversed(entries) if e.kind == "action"), None)
    if action is None:
        return None, ()
    runs = []
    for task in action.tasks:
        started, finished = str(task.get("started", "")), str(task.get("finished", ""))
        try:
            seconds: float | None = (parse_time(finished) - parse_time(started)).total_seconds()
        except ValueError:
            seconds = None
        runs.append(
            TaskRun(
                stage=str(task.get("stage") or ""),
                task=str(task.get("task") or ""),
                result=str(task.get("result") or ""),
                started=started,
                finished=finished,
                seconds=seconds,
                operation_id=task.get("operationId"),
                message=str(task.get("message") or ""),
            )
        )
    return action, tuple(runs)


# --- plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionView:
    action: PlannedAction
    symbol: str
    verb: str
    lines: tuple[str, ...]
    """BLOCKED, field changes and reasons: `reconciler plan`'s own lines."""


def action_view(action: PlannedAction) -> ActionView:
    return ActionView(
        action,
        SYMBOLS[action.operation],
        VERBS[action.operation],
        tuple(line.strip() for line in _action_lines(action)[1:]),
    )


def attention(plan: Plan) -> tuple[PlannedAction, ...]:
    """Blocked actions, then destructive ones that will run: what a reviewer reads first."""
    blocked = [a for a in plan.actions if a.blocked is not None]
    destructive = [a for a in plan.actions if a.destructive and a.blocked is None]
    return (*blocked, *destructive)


def plan_index(plan: Plan | None) -> dict[str, PlannedAction]:
    return {a.key: a for a in plan.actions} if plan is not None else {}


# --- formatting (template filters) -----------------------------------------------------


def duration(seconds: float | None) -> str:
    """`0:42`, `1:02:03`, `0.3 s` under a second."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def ago(moment: datetime | str | None, now: datetime) -> str:
    """How long before `now`: `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`."""
    if moment is None or moment == "":
        return "-"
    when = parse_time(moment) if isinstance(moment, str) else moment
    seconds = (now - when).total_seconds()
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def show(value: Any, indent: int | None = None) -> str:
    """A value as JSON, as the plan shows values (escaped by the template, not here)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, indent=indent)


def stamp(moment: datetime | str | None) -> str:
    if moment is None or moment == "":
        return "-"
    when = parse_time(moment) if isinstance(moment, str) else moment
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = [
    "ActionView",
    "FieldView",
    "ProviderView",
    "ResourceView",
    "RunningView",
    "SourceView",
    "StageView",
    "TaskRun",
    "action_view",
    "ago",
    "attention",
    "current_operation",
    "duration",
    "field_views",
    "last_run",
    "plan_index",
    "provider_views",
    "resource_view",
    "running_view",
    "show",
    "source_view",
    "stage_views",
    "stamp",
]
