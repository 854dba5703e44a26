"""Retention: what a long-running controller keeps of its past, and what it lets go.

Part of execute, run by the controller after each status commit (beside the
pruning of `<state_dir>/trees/`, see `reconciler.source.worktree`). Without it,
the state directory of a controller running for months only grows: a row per
plan and per task in the journal, a folder of task logs per execution, a row per
operation in each provider's operation store.

What is kept (`Retention`, from `RECONCILER_PLANS_KEPT` and `RECONCILER_RETENTION`):

- journal plans (and their tasks): every plan that is not final — a `running`
  plan, or one executed but not yet reported — whatever its age; of the final
  ones (`finished`, `superseded`, `reported`), the `plans_kept` newest, and any
  whose last activity is newer than `max_age`. Task rows of no plan at all go
  once older than `max_age`;
- task-log folders (`<state_dir>/logs/<execution[:12]>/`): those of the plans
  kept, and those a resource's status points at (its last failure's log);
- provider operation stores (`<state_dir>/{redfish,ec2,http}-*.db`): an operation
  that is still pending or running, one whose idempotency key a plan kept in the
  journal uses (a resumed plan must find it, or it would start the action
  again), and any started less than `max_age` ago.

`forgotten_plans` is the pure choice; `apply_retention` does the I/O. It opens the journal
with a connection of its own (it runs in a worker thread while the journal's own
connection belongs to the event loop), and each store by its path. SQLite reuses
the freed pages, so the files stop growing rather than shrink.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from reconciler.execute.journal import Journal
from reconciler.execute.tasklog import task_log_path
from reconciler.providers.support import OperationStore

if TYPE_CHECKING:
    from reconciler.execute.store import JournalStore
    from reconciler.model.status import ResourceStatus
    from reconciler.settings import Settings

log = structlog.get_logger("reconciler.retention")

FINAL_STATES = frozenset({"finished", "superseded", "reported"})
"""Plan states nothing will run or report again; a plan in any other state is kept."""
OPERATION_STORES = ("redfish-*.db", "ec2-*.db", "http-*.db")
LOGS_DIR = "logs"


@dataclass(frozen=True)
class Retention:
    """How much of its past the controller keeps (see the module docstring)."""

    plans_kept: int = 100
    max_age: float = 7 * 86400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(plans_kept=settings.plans_kept, max_age=settings.retention)


@dataclass(frozen=True)
class PlanAge:
    """What the choice needs of one journal plan."""

    plan_hash: str
    state: str
    last_active: datetime
    order: int = 0
    """Its place in the journal (plans recorded in the same millisecond stay in order)."""


@dataclass(frozen=True)
class Pruned:
    """What one `apply_retention` removed."""

    plans: int = 0
    tasks: int = 0
    log_folders: int = 0
    operations: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.plans or self.tasks or self.log_folders or self.operations)


def forgotten_plans(plans: Iterable[PlanAge], retention: Retention, now: datetime) -> set[str]:
    """The plans to forget: final, beyond the `plans_kept` newest final ones, and last
    active before `now - max_age`. Pure."""
    final = sorted(
        (p for p in plans if p.state in FINAL_STATES),
        key=lambda p: (p.last_active, p.order),
        reverse=True,
    )
    cutoff = now - timedelta(seconds=retention.max_age)
    return {p.plan_hash for p in final[retention.plans_kept :] if p.last_active < cutoff}


def _stamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def apply_retention(
    state_dir: Path,
    retention: Retention,
    *,
    now: datetime,
    statuses: Mapping[str, ResourceStatus] | None = None,
    store: JournalStore | None = None,
) -> Pruned:
    """Apply `retention` to the state directory; what was removed (logged when anything).

    `store`: a shared database's journal (`PgJournal.prune`) instead of the state
    directory's SQLite file. Without a readable journal nothing else is pruned either:
    what the plans need cannot be told, so nothing is let go."""
    state_dir = Path(state_dir)
    from reconciler.execute.store_pg import PgJournal

    if isinstance(store, PgJournal):
        journal = store.prune(lambda ages: forgotten_plans(ages, retention, now),
                              cutoff=(now - timedelta(seconds=retention.max_age)))  # fmt: skip
    else:
        journal = _prune_journal(state_dir / Journal.FILENAME, retention, now)
    if journal is None:
        return Pruned()
    plans, tasks, kept, keys = journal
    needed = _logs_of(state_dir, statuses or {})
    folders = _prune_logs(state_dir, kept, needed)
    cutoff = (now - timedelta(seconds=retention.max_age)).timestamp()
    operations = sum(
        _prune_store(path, cutoff, keys)
        for pattern in OPERATION_STORES
        for path in sorted(state_dir.glob(pattern))
    )
    pruned = Pruned(plans, tasks, folders, operations)
    if pruned.anything:
        log.info(
            "retention",
            plans=plans,
            tasks=tasks,
            log_folders=folders,
            operations=operations,
            plans_kept=retention.plans_kept,
            max_age_s=retention.max_age,
        )
    return pruned


def _prune_journal(
    path: Path, retention: Retention, now: datetime
) -> tuple[int, int, set[str], set[str]] | None:
    """(plans removed, tasks removed, the plan hashes kept, the idempotency keys of the
    tasks kept), in one transaction; None when the journal cannot be read or written."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    except sqlite3.Error as exc:
        log.warning("retention: journal not pruned", path=str(path), error=str(exc))
        return None
    try:
        rows = db.execute(
            "SELECT plan_hash, state, created_at, finished_at, rowid FROM plans"
        ).fetchall()
        ages = [
            PlanAge(h, state, _stamp(finished) or _stamp(created) or now, order)
            for h, state, created, finished, order in rows
        ]
        gone = forgotten_plans(ages, retention, now)
        cutoff = (now - timedelta(seconds=retention.max_age)).isoformat(timespec="milliseconds")
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (plan_hash TEXT PRIMARY KEY)")
        db.execute("DELETE FROM gone")
        db.executemany("INSERT INTO gone VALUES (?)", [(h,) for h in gone])
        removed_tasks = db.execute(
            "DELETE FROM tasks WHERE plan_hash IN (SELECT plan_hash FROM gone)"
        ).rowcount
        removed_plans = db.execute(
            "DELETE FROM plans WHERE plan_hash IN (SELECT plan_hash FROM gone)"
        ).rowcount
        removed_tasks += db.execute(
            "DELETE FROM tasks WHERE updated_at < ? AND plan_hash NOT IN "
            "(SELECT plan_hash FROM plans)",
            (cutoff,),
        ).rowcount
        db.execute("COMMIT")
        keys = {k for (k,) in db.execute("SELECT idempotency_key FROM tasks")}
    except sqlite3.Error as exc:
        log.warning("retention: journal not pruned", path=str(path), error=str(exc))
        return None
    finally:
        db.close()
    kept = {h for h, *_ in rows if h not in gone}
    return removed_plans, removed_tasks, kept, keys


def _logs_of(state_dir: Path, statuses: Mapping[str, ResourceStatus]) -> set[str]:
    """The task-log folders resources' statuses point at (their last failure's log)."""
    root = (state_dir / LOGS_DIR).resolve()
    needed: set[str] = set()
    for status in statuses.values():
        failure = getattr(status, "failure", None)
        where = getattr(failure, "log", None)
        if not where:
            continue
        try:
            needed.add(Path(where).resolve().relative_to(root).parts[0])
        except (ValueError, IndexError):
            continue
    return needed


def _prune_logs(state_dir: Path, kept: Collection[str], needed: Collection[str]) -> int:
    """Remove the task-log folders of no plan kept and no status; how many."""
    root = state_dir / LOGS_DIR
    if not root.is_dir():
        return 0
    wanted = {_log_folder(state_dir, h) for h in kept} | set(needed)
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir() and folder.name not in wanted:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _log_folder(state_dir: Path, plan_hash: str) -> str:
    """The name of an execution's folder under logs/ (as `task_log_path` makes it)."""
    path = task_log_path(state_dir, plan_hash, "Kind/name", "stage", "task")
    return path.relative_to(state_dir / LOGS_DIR).parts[0]


def _prune_store(path: Path, cutoff: float, keys: Collection[str]) -> int:
    """Remove an operation store's finished operations started before `cutoff` whose key
    no plan kept uses; how many."""
    store = OperationStore(path)
    try:
        return store.forget_finished(before=cutoff, keep=keys)
    except Exception as exc:  # a damaged store is the provider's problem, not the cycle's
        log.warning("retention: operation store not pruned", path=str(path), error=str(exc))
        return 0
    finally:
        store.close()
