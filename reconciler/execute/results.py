"""What execution yields: the values `report` turns into status (step 6's output).

Values only, no I/O: `reconciler.report.transitions` imports them from here rather
than from the engine that produces them (`reconciler.execute.engine`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from reconciler.execute.store import JournalStore

ResultKind = Literal["succeeded", "failed", "skipped"]

WAITS_FOR_WINDOW = "destructive action waits for a change window"
"""The reason of an action skipped because every change window is closed."""


@dataclass(frozen=True)
class TaskRecord:
    """One task that ran (or whose earlier result was taken from the journal)."""

    stage: str
    point: str
    task: str
    result: str
    message: str
    started: str
    finished: str
    operation_id: str | None = None
    log: str | None = None
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True)
class ResourceOutcome:
    key: str
    operation: str
    result: ResultKind
    stages_done: tuple[str, ...] = ()
    failed_stage: str | None = None
    failed_task: str | None = None
    error: str | None = None
    log: str | None = None
    reason: str = ""
    tasks: tuple[TaskRecord, ...] = ()
    started: str = ""
    finished: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The journal's form (`outcomes` table): what a later status commit reports."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["tasks"] = [t.to_dict() for t in self.tasks]
        data["stages_done"] = list(self.stages_done)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceOutcome:
        values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        values["tasks"] = tuple(TaskRecord.from_dict(t) for t in data.get("tasks") or ())
        values["stages_done"] = tuple(data.get("stages_done") or ())
        return cls(**values)


@dataclass(frozen=True)
class ExecutionResult:
    execution_id: str
    plan_hash: str
    outcomes: Mapping[str, ResourceOutcome]
    stopped: str | None = None
    """Why execution stopped early (SIGTERM, superseded), or None when it ran to the end."""

    @property
    def failed(self) -> list[ResourceOutcome]:
        return [o for o in self.outcomes.values() if o.result == "failed"]

    @property
    def waits_for_window(self) -> bool:
        """A destructive action was left for the next change window."""
        return any(o.reason == WAITS_FOR_WINDOW for o in self.outcomes.values())

    @classmethod
    def from_journal(cls, journal: JournalStore, execution: str, plan_hash: str) -> ExecutionResult:
        """An execution's results as the journal holds them (`Journal.outcomes`): how a
        plan that ended before a crash or a failed status push is reported later."""
        outcomes = {
            key: ResourceOutcome.from_dict(data)
            for key, data in journal.outcomes(execution).items()
        }
        return cls(execution, plan_hash, dict(sorted(outcomes.items())))
