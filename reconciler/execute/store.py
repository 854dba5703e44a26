"""The journal as a protocol: which store holds the truth about what ran, chosen once.

Part of execute, under the controller and the executor. `JournalStore` is the set
of calls the engine, the runners, the controller and the commands make on a
journal; two stores implement it:

- `reconciler.execute.journal.Journal`: SQLite in the state directory (the embedded
  default, one controller per state directory: `Lease`, an flock);
- `reconciler.execute.store_pg.PgJournal`: PostgreSQL (`RECONCILER_DATABASE_URL`),
  shared by every replica and worker: leader lease with a fencing epoch
  (`reconciler.controller.leader`), task queue (`reconciler.execute.worker`), the
  controller's memory.

`open_journal` picks the store from the settings (and the controller's
`reconciler.controller.leader.acquire_lease` the lease): with no database URL
everything is exactly as before (SQLite, flock, files in the state directory).
`TaskJournal` is the smaller part `run_journaled` needs, so a worker can hand it a
journal fenced by its claim.

The controller's memory besides the journal — the "provider suddenly reports
nothing" guard (`observed-existing.json`) and the notification ledger — lives in
files of the state directory with SQLite, and in the database with PostgreSQL (a
standby that takes over must find them): `recall_existing` / `keep_existing` choose
(the ledger: `reconciler.controller.ledger_pg.ledger_for`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.errors import PermanentError
from reconciler.execute.context import TaskResult
from reconciler.execute.journal import Journal, PlanRow, TaskRow, UnfinishedPlan

if TYPE_CHECKING:
    from reconciler.settings import Settings

EXISTING_FACT = "observed_existing"
"""The journal fact holding the existing-resources guard (with a shared database)."""
LEDGER_FACT = "notification_ledger"
"""The journal fact holding the notification ledger (with a shared database)."""


class TaskJournal(Protocol):
    """What `run_journaled` needs of a journal: one task's crash semantics."""

    def task_state(self, key: str) -> TaskRow | None: ...

    def acknowledged_operation(self, key: str) -> str | None: ...

    def mark_started(
        self, key: str, *, plan_hash: str, resource: str, stage: str, point: str, task: str
    ) -> None: ...

    def mark_acknowledged(self, key: str, operation_id: str) -> None: ...

    def mark_progress(
        self, key: str, *, attempts: int | None = None, note: str | None = None
    ) -> None: ...

    def mark_finished(self, key: str, result: TaskResult) -> None: ...


class JournalStore(TaskJournal, Protocol):
    """The whole journal: plans, outcomes, applied records, facts and tasks (see
    `reconciler.execute.journal` for what each call means; both stores keep it)."""

    shared: bool
    """True for a database other processes share (PostgreSQL): the controller's memory
    lives in it too, and every write of a leader is fenced by its epoch."""

    def close(self) -> None: ...

    def fact(self, name: str) -> str | None: ...

    def set_fact(self, name: str, value: str) -> None: ...

    def facts(self, prefix: str) -> dict[str, str]: ...

    def forget_fact(self, name: str) -> None: ...

    def resolution_history(self) -> dict[str, list[dict[str, Any]]]: ...

    def applied(self) -> dict[str, dict[str, Any]]: ...

    def record_applied(self, resource: str, record: dict[str, Any]) -> None: ...

    def forget_applied(self, resource: str) -> None: ...

    def record_plan(self, plan_hash: str, revision: str | None, plan_json: str) -> None: ...

    def unfinished_plan(self) -> UnfinishedPlan | None: ...

    def unreported_plans(self) -> list[PlanRow]: ...

    def plan(self, plan_hash: str) -> PlanRow | None: ...

    def mark_executed(self, plan_hash: str) -> None: ...

    def mark_stopped(self, plan_hash: str, reason: str) -> None: ...

    def mark_reported(self, plan_hash: str) -> None: ...

    def supersede_plan(self, plan_hash: str, reason: str) -> None: ...

    def record_outcome(self, plan_hash: str, resource: str, outcome: dict[str, Any]) -> None: ...

    def outcomes(self, plan_hash: str) -> dict[str, dict[str, Any]]: ...

    def tasks(self, plan_hash: str) -> list[TaskRow]: ...


class HeldLease(Protocol):
    """What holds the controller's exclusive right to write: an flock on the state
    directory, or the leader lease in the database (`reconciler.controller.leader.LeaderLease`)."""

    holder: dict[str, Any]

    def release(self) -> None: ...


def uses_database(settings: Settings) -> bool:
    return bool(settings.database_url)


def open_journal(
    settings: Settings, *, lease: HeldLease | None = None, owner: str | None = None
) -> JournalStore:
    """The journal the settings choose. With the database, writes carry the epoch of
    `lease` (when it is the leader lease) and the database is bound to `owner`."""
    if not uses_database(settings):
        if settings.execute == "workers":
            raise PermanentError(
                "RECONCILER_EXECUTE=workers needs RECONCILER_DATABASE_URL: workers claim "
                "tasks from the shared database"
            )
        return Journal.open(Path(settings.state_dir))
    from reconciler.execute.store_pg import PgJournal

    epoch = getattr(lease, "epoch", None)
    journal = PgJournal.connect(settings, epoch=epoch)
    if owner is not None:
        try:
            journal.bind_owner(owner, settings.repo or "")
        except BaseException:
            journal.close()
            raise
    return journal


def open_reader(settings: Settings) -> JournalStore | None:
    """The journal to read (no lease, no writes), or None when there is none yet."""
    if not uses_database(settings):
        path = Path(settings.state_dir) / Journal.FILENAME
        return Journal(path) if path.exists() else None
    from reconciler.execute.store_pg import PgJournal

    return PgJournal.connect(settings)


# --- the controller's memory ---------------------------------------------------------


def recall_existing(journal: JournalStore, state_dir: Path) -> dict[str, frozenset[str]]:
    """The existing-resources guard: the state directory's file, or the database's fact."""
    from reconciler.observe.observe import read_existing

    if not journal.shared:
        return read_existing(state_dir)
    text = journal.fact(EXISTING_FACT)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): frozenset(map(str, v)) for k, v in data.items() if isinstance(v, list)}


def keep_existing(
    journal: JournalStore, state_dir: Path, existing: Mapping[str, Collection[str]]
) -> None:
    from reconciler.observe.observe import write_existing

    if not journal.shared:
        write_existing(state_dir, existing)
        return
    data = {name: sorted(keys) for name, keys in sorted(existing.items())}
    journal.set_fact(EXISTING_FACT, json.dumps(data, separators=(",", ":")))


__all__ = [
    "EXISTING_FACT",
    "LEDGER_FACT",
    "HeldLease",
    "JournalStore",
    "TaskJournal",
    "keep_existing",
    "open_journal",
    "open_reader",
    "recall_existing",
    "uses_database",
]
