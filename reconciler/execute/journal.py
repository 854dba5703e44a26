"""The durable journal (SQLite): the truth about what ran.

The embedded default of the `JournalStore` protocol (`reconciler.execute.store`); the
PostgreSQL store (`store_pg.py`) keeps the same tables, states and semantics for
replicas and workers sharing one database.

Part of execute, beside the runners: the orchestrator records each plan before
running it and each task as it goes, so a crash (``kill -9``, power loss) resumes
instead of repeating work. Process memory is never the truth; this file is.

Tables:

- ``plans``: plan hash, revision, plan JSON, state — ``running`` (tasks may still
  run; a crash or a stop leaves it so, and it is resumed with its own keys), then
  ``executed`` (every task ended; results in ``outcomes``), then ``reported`` (a status
  commit holding its results landed); ``superseded`` only for a permanent reason —
  with created/finished times and, for a stopped execution, what stopped it. At most
  one plan runs; plans waiting only to be reported do not stop a new one.
- ``outcomes``: per plan and resource, how it ended (`ResourceOutcome` as JSON).
- ``meta``: the controller's own facts, by name (``rules_revision``: the last revision
  whose changes to the approval rules were approved; those rules judge every change).
- ``applied``: per resource, what reconciler brought about (`reconciler.plan.diff.LastApplied`
  as JSON): the stages completed and the digest each had, and once the whole pipeline
  completed the revision, resolution and declared state. The status branch shows a
  projection of it (`lastApplied`); this table is the truth the next plan reads.
- ``resolutions``: per resource, every resolution its pipeline completed with (the
  history of ``applied``): the revision it was last applied at, when, and ``seq``
  (journal-wide, increasing: the order they were applied in, ties of time apart). A head whose
  resolution for a resource is one it had before reverts a change (`reconciler.plan.undo`).
  A journal written before this table is given one holding each ``applied`` record's
  resolution. Written after the ``applied`` row (a crash between them loses only an
  undo label); forgotten with the resource (a decommission).
- ``tasks``: one row per task run of a plan, keyed by its idempotency key
  (sha256 of plan hash | resource | stage | [point |] task): state
  (started → acknowledged → finished), operation id, attempts, progress note,
  result JSON, error, times.

No secret is stored in plain text: a plan holds references (`env:NAME`, `file:PATH`)
and redacted values, and every text and JSON column (plan, operation id, progress
note, result, error) is passed through the redactor before it is written — the
result's strings before they are JSON-escaped, so a secret holding ``"`` or ``\\``
cannot slip through as its escaped form.

A plan hash names one *execution* of a plan: derive it from the plan's content
and the time it is first recorded, and on resume use the hash `unfinished_plan`
gives back. (A purely content-derived hash would make the same plan, computed
again after it finished with a failure, return the stored failures forever
instead of trying again.)

Crash semantics (what `run_journaled` does with a row after a restart):

- **finished**: never run again; the stored result is the task's result.
- **acknowledged** (a remote accepted the work and gave an operation id): the
  operation is polled to its end, not issued again.
- **started** but not acknowledged: the remote may or may not have seen the call,
  so it is retried *with the same idempotency key*; a remote honouring the key
  answers with the original operation instead of starting a second one.
- no row: never started.

Each mark is its own transaction, committed before the call that follows it
(``mark_started`` before the request is sent; ``mark_acknowledged`` as soon as the
answer names an operation). WAL mode lets readers (status, the API) look while
the executor writes. ``synchronous=NORMAL`` by default: in WAL mode every commit
survives a crash of the process (the kernel has the WAL pages); only an OS crash
or power loss can roll back the last commits, and then the affected tasks fall
back one state (finished → started: re-run with the same idempotency key, which
the key makes safe). That keeps a commit at tens of microseconds instead of an
fsync each, which thousands of concurrent tasks need. Pass
``synchronous="FULL"`` to trade that speed for durability against power loss.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from reconciler.errors import PermanentError, TemporaryError
from reconciler.execute.context import TaskResult
from reconciler.secrets import REDACTOR

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    plan_hash   TEXT PRIMARY KEY,
    revision    TEXT,
    plan_json   TEXT NOT NULL,
    state       TEXT NOT NULL
                CHECK (state IN ('running', 'executed', 'reported', 'superseded')),
    reason      TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    stopped     TEXT
);
CREATE INDEX IF NOT EXISTS plans_by_state ON plans (state);
CREATE TABLE IF NOT EXISTS tasks (
    idempotency_key TEXT PRIMARY KEY,
    plan_hash       TEXT NOT NULL,
    resource        TEXT NOT NULL,
    stage           TEXT NOT NULL,
    point           TEXT NOT NULL,
    task            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('started', 'acknowledged', 'finished')),
    operation_id    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    runs            INTEGER NOT NULL DEFAULT 1,
    progress        TEXT,
    result_json     TEXT,
    error           TEXT,
    started_at      TEXT NOT NULL,
    acknowledged_at TEXT,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_plan ON tasks (plan_hash, resource);
CREATE TABLE IF NOT EXISTS outcomes (
    plan_hash    TEXT NOT NULL,
    resource     TEXT NOT NULL,
    outcome_json TEXT NOT NULL,
    PRIMARY KEY (plan_hash, resource)
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    resource    TEXT PRIMARY KEY,
    record_json TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resolutions (
    resource    TEXT NOT NULL,
    resolution  TEXT NOT NULL,
    revision    TEXT,
    applied_at  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (resource, resolution)
);
"""

_BACKFILL_RESOLUTIONS = """
INSERT OR IGNORE INTO resolutions (resource, resolution, revision, applied_at, seq)
    SELECT resource, json_extract(record_json, '$.resolution'),
           json_extract(record_json, '$.revision'), updated_at, rowid
    FROM applied WHERE json_extract(record_json, '$.resolution') IS NOT NULL;
"""

HISTORY_QUERY = (
    "SELECT resource, resolution, revision, applied_at FROM resolutions ORDER BY resource, seq"
)
"""The resolutions each resource was applied with, oldest first (both journal stores)."""


def applied_writes(
    resource: str, record: Mapping[str, Any], before: str | None
) -> tuple[str, list[tuple[str, tuple[Any, ...]]]]:
    """A resource's new record, redacted, and the writes that keep it (`?` placeholders):
    the record itself, and, when its pipeline completed (or it was adopted) with another
    resolution than `before`, a line of its history (records of stages done under the
    resolution in force change no history). Both journal stores write these."""
    text = REDACTOR.text(json.dumps(record, sort_keys=True, default=str))
    writes: list[tuple[str, tuple[Any, ...]]] = [
        (
            "INSERT INTO applied (resource, record_json, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (resource) DO UPDATE SET record_json = excluded.record_json, "
            "updated_at = excluded.updated_at",
            (resource, text, _now()),
        )
    ]
    if record.get("resolution") and record["resolution"] != before:
        writes.append(
            (
                "INSERT INTO resolutions (resource, resolution, revision, applied_at, seq) "
                "VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM resolutions)) "
                "ON CONFLICT (resource, resolution) DO UPDATE SET revision = "
                "excluded.revision, applied_at = excluded.applied_at, seq = excluded.seq",
                (resource, str(record["resolution"]), record.get("revision"), _now()),
            )
        )
    return text, writes


def history_by_resource(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`HISTORY_QUERY`'s rows as `resolution_history` gives them, per resource."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["resource"], []).append(
            {"resolution": r["resolution"], "revision": r["revision"], "appliedAt": r["applied_at"]}
        )
    return out


TaskState = Literal["started", "acknowledged", "finished"]
PlanState = Literal["running", "executed", "reported", "superseded"]

_PLANS_BEFORE_LIFECYCLE = "'running', 'finished', 'superseded'"
"""The plans table's states before `executed` and `reported` (journals of 0.1)."""
_MIGRATE_PLANS = """
ALTER TABLE plans RENAME TO plans_before_lifecycle;
CREATE TABLE plans (
    plan_hash   TEXT PRIMARY KEY,
    revision    TEXT,
    plan_json   TEXT NOT NULL,
    state       TEXT NOT NULL
                CHECK (state IN ('running', 'executed', 'reported', 'superseded')),
    reason      TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    stopped     TEXT
);
INSERT INTO plans (plan_hash, revision, plan_json, state, reason, created_at, finished_at)
    SELECT plan_hash, revision, plan_json,
           CASE state WHEN 'finished' THEN 'reported' ELSE state END,
           reason, created_at, finished_at
    FROM plans_before_lifecycle;
DROP TABLE plans_before_lifecycle;
CREATE INDEX IF NOT EXISTS plans_by_state ON plans (state);
"""


def idempotency_key(
    plan_hash: str, resource: str, stage: str, task: str, point: str | None = None
) -> str:
    """The key of one task of one plan: stable across retries and restarts.

    `point` (the extension point) is part of it when given: hooks composed from
    several levels may repeat a task name within a stage.
    """
    parts = [plan_hash, resource, stage, *([point] if point else []), task]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class UnfinishedPlan(NamedTuple):
    plan_hash: str
    plan_json: str


@dataclass(frozen=True)
class TaskRow:
    """One task's journal entry."""

    idempotency_key: str
    plan_hash: str
    resource: str
    stage: str
    point: str
    task: str
    state: TaskState
    operation_id: str | None
    attempts: int
    runs: int
    progress: str | None
    result: TaskResult | None
    error: str | None
    started_at: str
    acknowledged_at: str | None
    updated_at: str
    finished_at: str | None


@dataclass(frozen=True)
class PlanRow:
    plan_hash: str
    revision: str | None
    plan_json: str
    state: PlanState
    reason: str | None
    created_at: str
    finished_at: str | None
    stopped: str | None = None


class Journal:
    """The SQLite journal of one state directory. Use from one thread (the event loop)."""

    FILENAME = "journal.sqlite"
    shared = False
    """Only this process uses it (`JournalStore.shared`): the controller's memory stays in
    files of the state directory."""

    def __init__(self, path: Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        self.path = path
        self._applied: dict[str, dict[str, Any]] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._migrate()
            had_history = self._has_table("resolutions")
            self._db.executescript(SCHEMA)
            if not had_history:  # an older journal: its records are the history so far
                self._db.executescript(f"BEGIN IMMEDIATE;{_BACKFILL_RESOLUTIONS}COMMIT;")
        except sqlite3.Error as exc:
            raise PermanentError(f"journal {path}: {exc}") from None

    def _migrate(self) -> None:
        """A journal written before plans were `executed` then `reported` (0.1): its
        finished plans were reported; everything else is kept as it was."""
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'plans'"
        ).fetchone()
        if row is not None and _PLANS_BEFORE_LIFECYCLE in row[0]:
            self._db.executescript(f"BEGIN IMMEDIATE;{_MIGRATE_PLANS}COMMIT;")

    def _has_table(self, name: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    @classmethod
    def open(cls, state_dir: Path, **kwargs: Any) -> Journal:
        return cls(Path(state_dir) / cls.FILENAME, **kwargs)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the controller's own facts ---------------------------------------------------------

    def fact(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def facts(self, prefix: str) -> dict[str, str]:
        """Every fact whose name starts with `prefix`, by name."""
        rows = self._db.execute(
            "SELECT name, value FROM meta WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def forget_fact(self, name: str) -> None:
        self._write("DELETE FROM meta WHERE name = ?", (name,))

    def set_fact(self, name: str, value: str) -> None:
        self._write(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # --- what was applied per resource ---------------------------------------------------

    def applied(self) -> dict[str, dict[str, Any]]:
        """Every resource's record (see `reconciler.plan.diff.LastApplied`), by key.

        Read once, then kept: this process is the only writer (the lease)."""
        if self._applied is None:
            rows = self._db.execute("SELECT resource, record_json FROM applied").fetchall()
            self._applied = {r["resource"]: json.loads(r["record_json"]) for r in rows}
        return self._applied

    def record_applied(self, resource: str, record: dict[str, Any]) -> None:
        """Replace a resource's record (a stage completed, the pipeline completed, adopted)."""
        before = (self.applied().get(resource) or {}).get("resolution")
        text, writes = applied_writes(resource, record, before)
        for sql, args in writes:
            self._write(sql, args)
        self.applied()[resource] = json.loads(text)

    def resolution_history(self) -> dict[str, list[dict[str, Any]]]:
        """Per resource, each resolution it was applied with — `resolution`, `revision`
        (the last one it was applied at), `appliedAt` — oldest first."""
        return history_by_resource(self._db.execute(HISTORY_QUERY).fetchall())

    def forget_applied(self, resource: str) -> None:
        """A decommissioned resource: nothing of it is ours any more."""
        self._write("DELETE FROM applied WHERE resource = ?", (resource,))
        self._write("DELETE FROM resolutions WHERE resource = ?", (resource,))
        self.applied().pop(resource, None)

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        try:
            return self._db.execute(sql, args).rowcount
        except sqlite3.OperationalError as exc:  # locked, disk I/O: worth another try
            raise TemporaryError(f"journal {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise PermanentError(f"journal {self.path}: {exc}") from None

    # --- plans -------------------------------------------------------------------------

    def record_plan(self, plan_hash: str, revision: str | None, plan_json: str) -> None:
        """Record a plan about to run. Recording the running plan again is a no-op
        (a resume); another plan whose tasks may still run must end first. Plans that
        only wait to be reported (`executed`) do not stop a new one."""
        running = self.unfinished_plan()
        if running is not None and running.plan_hash != plan_hash:
            raise PermanentError(
                f"plan {running.plan_hash[:12]} is still running: resume or supersede it first"
            )
        self._write(
            "INSERT INTO plans (plan_hash, revision, plan_json, state, created_at) "
            "VALUES (?, ?, ?, 'running', ?) "
            "ON CONFLICT (plan_hash) DO UPDATE SET state = 'running', finished_at = NULL, "
            "reason = NULL WHERE state NOT IN ('reported', 'executed')",
            (plan_hash, revision, REDACTOR.text(plan_json), _now()),
        )

    def unfinished_plan(self) -> UnfinishedPlan | None:
        """The plan whose tasks may still run (a crash or a stop interrupted it): it is
        resumed, with its own idempotency keys, before anything new is planned."""
        row = self._db.execute(
            "SELECT plan_hash, plan_json FROM plans WHERE state = 'running' "
            "ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        return UnfinishedPlan(row["plan_hash"], row["plan_json"]) if row else None

    def unreported_plans(self) -> list[PlanRow]:
        """Plans whose every task ended but whose results no status commit holds yet, in
        the order they ran: the next commit that lands reports them."""
        rows = self._db.execute(
            "SELECT * FROM plans WHERE state = 'executed' ORDER BY created_at, rowid"
        ).fetchall()
        return [PlanRow(**dict(r)) for r in rows]

    def plan(self, plan_hash: str) -> PlanRow | None:
        row = self._db.execute("SELECT * FROM plans WHERE plan_hash = ?", (plan_hash,)).fetchone()
        return PlanRow(**dict(row)) if row else None

    def mark_executed(self, plan_hash: str) -> None:
        """Every task of the plan ended; its results are in the journal (`outcomes`)."""
        self._write(
            "UPDATE plans SET state = 'executed', stopped = NULL, finished_at = ? "
            "WHERE plan_hash = ? AND state = 'running'",
            (_now(), plan_hash),
        )

    def mark_stopped(self, plan_hash: str, reason: str) -> None:
        """A stop (SIGTERM, SIGINT, the API) ended the execution at a task boundary: the plan
        stays `running`, to be resumed with its own keys; `reason` says what stopped it."""
        self._write(
            "UPDATE plans SET stopped = ? WHERE plan_hash = ? AND state = 'running'",
            (REDACTOR.text(reason), plan_hash),
        )

    def mark_reported(self, plan_hash: str) -> None:
        """A status commit holding the plan's results landed."""
        self._write(
            "UPDATE plans SET state = 'reported', finished_at = COALESCE(finished_at, ?) "
            "WHERE plan_hash = ? AND state IN ('executed', 'running')",
            (_now(), plan_hash),
        )

    finish_plan = mark_reported

    def supersede_plan(self, plan_hash: str, reason: str) -> None:
        """Give a plan up for a permanent reason (its revision can no longer be loaded: it
        was force-pushed away; a person said so). Never for a passing failure."""
        self._write(
            "UPDATE plans SET state = 'superseded', reason = ?, finished_at = ? "
            "WHERE plan_hash = ? AND state = 'running'",
            (REDACTOR.text(reason), _now(), plan_hash),
        )

    # --- outcomes ----------------------------------------------------------------------

    def record_outcome(self, plan_hash: str, resource: str, outcome: dict[str, Any]) -> None:
        """How one resource of a plan ended (the plan's results, for whoever reports it)."""
        self._write(
            "INSERT INTO outcomes (plan_hash, resource, outcome_json) VALUES (?, ?, ?) "
            "ON CONFLICT (plan_hash, resource) DO UPDATE SET outcome_json = excluded.outcome_json",
            (plan_hash, resource, REDACTOR.text(json.dumps(outcome, sort_keys=True, default=str))),
        )

    def outcomes(self, plan_hash: str) -> dict[str, dict[str, Any]]:
        rows = self._db.execute(
            "SELECT resource, outcome_json FROM outcomes WHERE plan_hash = ? ORDER BY resource",
            (plan_hash,),
        ).fetchall()
        return {r["resource"]: json.loads(r["outcome_json"]) for r in rows}

    # --- tasks -------------------------------------------------------------------------

    def task_state(self, key: str) -> TaskRow | None:
        row = self._db.execute("SELECT * FROM tasks WHERE idempotency_key = ?", (key,)).fetchone()
        return _task_row(row) if row else None

    def acknowledged_operation(self, key: str) -> str | None:
        """The operation id of a task a remote acknowledged and that has not finished."""
        row = self._db.execute(
            "SELECT operation_id FROM tasks WHERE idempotency_key = ? AND state = 'acknowledged'",
            (key,),
        ).fetchone()
        return row[0] if row else None

    def tasks(self, plan_hash: str) -> list[TaskRow]:
        rows = self._db.execute(
            "SELECT * FROM tasks WHERE plan_hash = ? ORDER BY started_at, rowid", (plan_hash,)
        ).fetchall()
        return [_task_row(r) for r in rows]

    def mark_started(
        self, key: str, *, plan_hash: str, resource: str, stage: str, point: str, task: str
    ) -> None:
        """Before the first call of a task (or again on resume: counts a run, keeps the state)."""
        now = _now()
        self._write(
            "INSERT INTO tasks (idempotency_key, plan_hash, resource, stage, point, task, "
            "state, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'started', ?, ?) "
            "ON CONFLICT (idempotency_key) DO UPDATE SET runs = runs + 1, updated_at = ? "
            "WHERE state != 'finished'",
            (key, plan_hash, resource, stage, point, task, now, now, now),
        )

    def mark_acknowledged(self, key: str, operation_id: str) -> None:
        """A remote accepted the work: from now on it is polled, never re-issued.
        (`acknowledged_at` keeps the first acknowledgement's time.)"""
        now = _now()
        self._write(
            "UPDATE tasks SET state = 'acknowledged', operation_id = ?, "
            "acknowledged_at = COALESCE(acknowledged_at, ?), updated_at = ? "
            "WHERE idempotency_key = ? AND state != 'finished'",
            (REDACTOR.text(operation_id), now, now, key),
        )

    def mark_progress(
        self, key: str, *, attempts: int | None = None, note: str | None = None
    ) -> None:
        self._write(
            "UPDATE tasks SET attempts = COALESCE(?, attempts), progress = COALESCE(?, progress), "
            "updated_at = ? WHERE idempotency_key = ? AND state != 'finished'",
            (attempts, REDACTOR.text(note) if note is not None else None, _now(), key),
        )

    def mark_finished(self, key: str, result: TaskResult) -> None:
        """The task's end (succeeded or failed): it will not run again in this plan."""
        now = _now()
        self._write(
            "UPDATE tasks SET state = 'finished', result_json = ?, error = ?, attempts = ?, "
            "operation_id = COALESCE(?, operation_id), updated_at = ?, finished_at = ? "
            "WHERE idempotency_key = ?",
            (
                _redacted_json(result.to_json()),
                REDACTOR.text(result.message) if not result.ok else None,
                result.attempts,
                REDACTOR.text(result.operation_id) if result.operation_id else None,
                now,
                now,
                key,
            ),
        )


def _redacted_json(value: Any) -> str:
    """JSON of `value` with no secret in it: its strings are redacted before they are
    escaped, and the text after (a secret in a key, or escaped where data could not see)."""
    return REDACTOR.text(json.dumps(REDACTOR.data(value), sort_keys=True, default=str))


def _task_row(row: sqlite3.Row) -> TaskRow:
    data = dict(row)
    result_json = data.pop("result_json")
    return TaskRow(
        **data, result=TaskResult.from_json(json.loads(result_json)) if result_json else None
    )
