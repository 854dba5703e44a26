"""The journal in PostgreSQL: one database shared by every replica and worker.

Part of execute, beside the SQLite journal (`reconciler.execute.journal`), behind the
same `JournalStore` protocol (`reconciler.execute.store`); chosen by
`RECONCILER_DATABASE_URL`. Same tables, same states, same crash semantics, same
redaction before anything is written — and three things SQLite has no need for:

- **Migrations.** The schema is the numbered SQL files of
  `reconciler/execute/migrations/`, applied in order at start, each recorded in
  `schema_migrations`, under an advisory lock (replicas starting together apply each
  once). A database migrated by a newer reconciler is refused, not guessed at.
- **Fencing.** A leader's journal carries its epoch (`reconciler.controller.leader`): each write
  first reads the lease row `FOR SHARE` in the same transaction and is refused
  (`Fenced`) once another leader took over — a takeover waits for writes in flight.
- **Reconnection.** A lost connection (the database restarted, failed over) is opened
  again with backoff for up to `retry_for` seconds and the statement is run again;
  every write is an upsert or a guarded update, so running one twice changes nothing.

The password never appears in the URL (`RECONCILER_DATABASE_PASSWORD` is a reference,
resolved here and registered for redaction); a URL holding one is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import structlog

from reconciler.errors import PermanentError, TemporaryError
from reconciler.execute.context import TaskResult
from reconciler.execute.journal import (
    HISTORY_QUERY,
    PlanRow,
    TaskRow,
    UnfinishedPlan,
    _now,
    _redacted_json,
    applied_writes,
    history_by_resource,
)
from reconciler.secrets import REDACTOR, SecretUnavailable, resolve

if TYPE_CHECKING:
    import psycopg

    from reconciler.execute.retention import PlanAge
    from reconciler.settings import Settings

log = structlog.get_logger("reconciler.store")

T = TypeVar("T")
MIGRATIONS_LOCK = 7_340_001
"""The advisory lock under which migrations run (any constant both sides agree on)."""
LEADER_ROW = "controller"


_REFUSALS = ("authentication failed", "does not exist", "no pg_hba.conf entry", "SSL")
"""Connection errors that are answers, not outages: refused at once, never retried."""


class Fenced(PermanentError):
    """A write refused: the writer's lease (leader epoch, worker claim) is not in force."""


def conninfo(settings: Settings) -> str:
    """The connection string for psycopg: the URL, the password resolved from its
    reference. Raises `PermanentError` for a URL holding a password itself."""
    url = settings.database_url or ""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise PermanentError(f"database_url: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise PermanentError("database_url: expected postgresql://USER@HOST[:PORT]/DATABASE")
    if parts.password:
        raise PermanentError(
            "database_url holds a password: give it by reference in "
            "RECONCILER_DATABASE_PASSWORD (env:NAME or file:PATH) instead"
        )
    from psycopg.conninfo import make_conninfo

    extra: dict[str, Any] = {"application_name": "reconciler"}
    if settings.database_password:
        try:
            extra["password"] = resolve(settings.database_password)
        except SecretUnavailable as exc:
            raise PermanentError(f"database_password: {exc}") from None
    return make_conninfo(url, **extra)


def described(settings: Settings) -> str:
    """The database as logs and messages name it: host, port and database, no user."""
    parts = urlsplit(settings.database_url or "")
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


class Database:
    """One autocommit connection, opened again with backoff when it is lost."""

    def __init__(self, dsn: str, *, name: str, retry_for: float = 60.0) -> None:
        self._dsn = dsn
        self.name = name
        self.retry_for = retry_for
        self._conn: psycopg.Connection[Any] | None = None
        self.connect()

    def connect(self) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg.rows import dict_row

        if self._conn is not None and not self._conn.closed:
            return self._conn
        began, delay = time.monotonic(), 0.1
        while True:
            try:
                self._conn = psycopg.connect(
                    self._dsn, autocommit=True, row_factory=dict_row, connect_timeout=5
                )
                return self._conn
            except psycopg.OperationalError as exc:
                text = REDACTOR.text(str(exc).strip())
                if any(marker in text for marker in _REFUSALS):  # no retry mends these
                    raise PermanentError(f"database {self.name}: {text}") from None
                if time.monotonic() - began > self.retry_for:
                    raise TemporaryError(
                        f"database {self.name}: {REDACTOR.text(str(exc).strip())}"
                    ) from None
                log.warning("database unreachable, retrying", database=self.name, delay_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    @property
    def backend_pid(self) -> int:
        return self.connect().info.backend_pid

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work(conn)`, run again on a fresh connection when the connection is lost."""
        import psycopg

        began, delay = time.monotonic(), 0.1
        while True:
            conn = self.connect()
            try:
                return work(conn)
            except psycopg.OperationalError as exc:
                if not conn.closed and not conn.broken:
                    raise TemporaryError(
                        f"database {self.name}: {REDACTOR.text(str(exc).strip())}"
                    ) from None
                self._conn = None
                if time.monotonic() - began > self.retry_for:
                    raise TemporaryError(f"database {self.name}: connection lost") from None
                log.warning("database connection lost, reconnecting", database=self.name)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except psycopg.Error as exc:
                raise PermanentError(
                    f"database {self.name}: {REDACTOR.text(str(exc).strip())}"
                ) from None

    def query(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        """Run one statement; its rows (none for a statement that returns none)."""

        def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            cursor = conn.execute(sql, args)
            return cursor.fetchall() if cursor.description is not None else []

        return self.run(work)

    def one(self, sql: str, args: Any = ()) -> dict[str, Any] | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --- migrations ---------------------------------------------------------------------------


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration shipped, in order."""
    found = []
    for entry in resources.files("reconciler.execute.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name[5:-4], entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(db: Database) -> list[int]:
    """Apply the migrations the database lacks, in order, in one transaction under an
    advisory lock; the versions applied. A newer database than this code is refused."""
    shipped = migrations()

    def work(conn: psycopg.Connection[Any]) -> list[int]:
        applied: list[int] = []
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
            have = {r["version"] for r in rows}
            newest = max((v for v, _, _ in shipped), default=0)
            if have and max(have) > newest:
                raise PermanentError(
                    f"database {db.name} is at schema version {max(have)}, newer than this "
                    f"reconciler knows ({newest}): run a newer reconciler"
                )
            for version, name, sql in shipped:
                if version in have:
                    continue
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(version)
        return applied

    done = db.run(work)
    if done:
        log.info("database migrated", database=db.name, versions=done)
    return done


def open_database(settings: Settings, *, role: str = "journal") -> Database:
    """A connection to the settings' database, migrated to this version's schema."""
    db = Database(conninfo(settings), name=described(settings))
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


# --- the journal ---------------------------------------------------------------------------


class PgJournal:
    """The journal in PostgreSQL (see `reconciler.execute.journal.Journal` for what each
    call means). With `epoch`, every write is fenced by the leader lease."""

    shared = True

    def __init__(self, db: Database, *, epoch: int | None = None) -> None:
        self.db = db
        self.path = db.name
        self.epoch = epoch
        self._applied: dict[str, dict[str, Any]] | None = None

    @classmethod
    def connect(cls, settings: Settings, *, epoch: int | None = None) -> PgJournal:
        return cls(open_database(settings), epoch=epoch)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PgJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        """One statement in its own transaction, behind the fence when there is one."""

        def work(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                if self.epoch is not None:
                    self._check_fence(conn)
                return conn.execute(sql, args).rowcount

        return self.db.run(work)

    def _check_fence(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(
            "SELECT epoch, holder FROM leader_lease WHERE name = %s FOR SHARE", (LEADER_ROW,)
        ).fetchone()
        if row is None or row["epoch"] != self.epoch:
            who = f"{row['holder']} (epoch {row['epoch']})" if row else "no one"
            raise Fenced(
                f"write refused: this controller's leader epoch {self.epoch} is not in "
                f"force, the lease is held by {who}"
            )

    # --- owner and facts -------------------------------------------------------------

    def bind_owner(self, owner: str, repository: str) -> None:
        """A database belongs to one owner, as a state directory does (`owner.json`)."""
        value = json.dumps({"owner": owner, "repository": REDACTOR.text(repository)})
        self.db.query(
            "INSERT INTO meta (name, value) VALUES ('owner', %s) ON CONFLICT (name) DO NOTHING",
            (value,),
        )
        data = json.loads(self.fact("owner") or "{}")
        if data.get("owner") != owner:
            raise PermanentError(
                f"database {self.db.name} belongs to {data.get('repository') or '?'} "
                f"(owner {data.get('owner')}); refusing to use it for {repository} "
                f"(owner {owner}): give another database"
            )

    def fact(self, name: str) -> str | None:
        row = self.db.one("SELECT value FROM meta WHERE name = %s", (name,))
        return row["value"] if row else None

    def set_fact(self, name: str, value: str) -> None:
        self._write(
            "INSERT INTO meta (name, value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def facts(self, prefix: str) -> dict[str, str]:
        """Every fact whose name starts with `prefix`, by name."""
        rows = self.db.query(
            "SELECT name, value FROM meta WHERE left(name, %s) = %s", (len(prefix), prefix)
        )
        return {r["name"]: r["value"] for r in rows}

    def forget_fact(self, name: str) -> None:
        self._write("DELETE FROM meta WHERE name = %s", (name,))

    # --- applied -----------------------------------------------------------------------

    def applied(self) -> dict[str, dict[str, Any]]:
        if self._applied is None:
            rows = self.db.query("SELECT resource, record_json FROM applied")
            self._applied = {r["resource"]: json.loads(r["record_json"]) for r in rows}
        return self._applied

    def record_applied(self, resource: str, record: dict[str, Any]) -> None:
        before = (self.applied().get(resource) or {}).get("resolution")
        text, writes = applied_writes(resource, record, before)
        for sql, args in writes:  # the same writes as SQLite's, in psycopg's placeholders
            self._write(sql.replace("?", "%s"), args)
        self.applied()[resource] = json.loads(text)

    def resolution_history(self) -> dict[str, list[dict[str, Any]]]:
        """Per resource, each resolution it was applied with, oldest first."""
        return history_by_resource(self.db.query(HISTORY_QUERY))

    def forget_applied(self, resource: str) -> None:
        self._write("DELETE FROM applied WHERE resource = %s", (resource,))
        self._write("DELETE FROM resolutions WHERE resource = %s", (resource,))
        self.applied().pop(resource, None)

    # --- plans -------------------------------------------------------------------------

    def record_plan(self, plan_hash: str, revision: str | None, plan_json: str) -> None:
        running = self.unfinished_plan()
        if running is not None and running.plan_hash != plan_hash:
            raise PermanentError(
                f"plan {running.plan_hash[:12]} is still running: resume or supersede it first"
            )
        self._write(
            "INSERT INTO plans (plan_hash, revision, plan_json, state, created_at) "
            "VALUES (%s, %s, %s, 'running', %s) "
            "ON CONFLICT (plan_hash) DO UPDATE SET state = 'running', finished_at = NULL, "
            "reason = NULL WHERE plans.state NOT IN ('reported', 'executed')",
            (plan_hash, revision, REDACTOR.text(plan_json), _now()),
        )

    def unfinished_plan(self) -> UnfinishedPlan | None:
        row = self.db.one(
            "SELECT plan_hash, plan_json FROM plans WHERE state = 'running' "
            "ORDER BY created_at DESC, seq DESC LIMIT 1"
        )
        return UnfinishedPlan(row["plan_hash"], row["plan_json"]) if row else None

    def unreported_plans(self) -> list[PlanRow]:
        rows = self.db.query(
            "SELECT * FROM plans WHERE state = 'executed' ORDER BY created_at, seq"
        )
        return [_plan_row(r) for r in rows]

    def plan(self, plan_hash: str) -> PlanRow | None:
        row = self.db.one("SELECT * FROM plans WHERE plan_hash = %s", (plan_hash,))
        return _plan_row(row) if row else None

    def plans(self) -> list[PlanRow]:
        """Every plan, oldest first (retention and `migrate-state`)."""
        return [_plan_row(r) for r in self.db.query("SELECT * FROM plans ORDER BY seq")]

    def mark_executed(self, plan_hash: str) -> None:
        self._write(
            "UPDATE plans SET state = 'executed', stopped = NULL, finished_at = %s "
            "WHERE plan_hash = %s AND state = 'running'",
            (_now(), plan_hash),
        )

    def mark_stopped(self, plan_hash: str, reason: str) -> None:
        self._write(
            "UPDATE plans SET stopped = %s WHERE plan_hash = %s AND state = 'running'",
            (REDACTOR.text(reason), plan_hash),
        )

    def mark_reported(self, plan_hash: str) -> None:
        self._write(
            "UPDATE plans SET state = 'reported', finished_at = COALESCE(finished_at, %s) "
            "WHERE plan_hash = %s AND state IN ('executed', 'running')",
            (_now(), plan_hash),
        )

    finish_plan = mark_reported

    def supersede_plan(self, plan_hash: str, reason: str) -> None:
        self._write(
            "UPDATE plans SET state = 'superseded', reason = %s, finished_at = %s "
            "WHERE plan_hash = %s AND state = 'running'",
            (REDACTOR.text(reason), _now(), plan_hash),
        )

    # --- outcomes ----------------------------------------------------------------------

    def record_outcome(self, plan_hash: str, resource: str, outcome: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO outcomes (plan_hash, resource, outcome_json) VALUES (%s, %s, %s) "
            "ON CONFLICT (plan_hash, resource) DO UPDATE SET outcome_json = excluded.outcome_json",
            (plan_hash, resource, REDACTOR.text(json.dumps(outcome, sort_keys=True, default=str))),
        )

    def outcomes(self, plan_hash: str) -> dict[str, dict[str, Any]]:
        rows = self.db.query(
            "SELECT resource, outcome_json FROM outcomes WHERE plan_hash = %s ORDER BY resource",
            (plan_hash,),
        )
        return {r["resource"]: json.loads(r["outcome_json"]) for r in rows}

    def prune(
        self, forget: Callable[[list[PlanAge]], set[str]], *, cutoff: datetime
    ) -> tuple[int, int, set[str], set[str]] | None:
        """Retention on the database (see `reconciler.execute.retention`): the plans
        `forget` chooses go, with their tasks, outcomes and queue rows, and tasks of no
        plan older than `cutoff`; (plans, tasks removed, plan hashes kept, task keys
        kept). Its own connection: it runs in a worker thread."""
        from reconciler.execute.retention import PlanAge, _stamp

        db = Database(self.db._dsn, name=self.db.name, retry_for=5.0)
        now = datetime.now(UTC)
        try:
            rows = db.query("SELECT plan_hash, state, created_at, finished_at, seq FROM plans")
            ages = [
                PlanAge(r["plan_hash"], r["state"],
                        _stamp(r["finished_at"]) or _stamp(r["created_at"]) or now, r["seq"])
                for r in rows
            ]  # fmt: skip
            gone = sorted(forget(ages))
            stamp = cutoff.isoformat(timespec="milliseconds")

            def work(conn: psycopg.Connection[Any]) -> tuple[int, int]:
                with conn.transaction():
                    if self.epoch is not None:
                        self._check_fence(conn)
                    conn.execute("DELETE FROM task_queue WHERE plan_hash = ANY(%s)", (gone,))
                    conn.execute("DELETE FROM outcomes WHERE plan_hash = ANY(%s)", (gone,))
                    tasks = conn.execute(
                        "DELETE FROM tasks WHERE plan_hash = ANY(%s)", (gone,)
                    ).rowcount
                    plans = conn.execute(
                        "DELETE FROM plans WHERE plan_hash = ANY(%s)", (gone,)
                    ).rowcount
                    tasks += conn.execute(
                        "DELETE FROM tasks WHERE updated_at < %s AND plan_hash NOT IN "
                        "(SELECT plan_hash FROM plans)",
                        (stamp,),
                    ).rowcount
                return plans, tasks

            plans, tasks = db.run(work)
            keys = {r["idempotency_key"] for r in db.query("SELECT idempotency_key FROM tasks")}
        except PermanentError as exc:
            log.warning("retention: journal not pruned", database=self.db.name, error=str(exc))
            return None
        except TemporaryError as exc:
            log.warning("retention: journal not pruned", database=self.db.name, error=str(exc))
            return None
        finally:
            db.close()
        kept = {r["plan_hash"] for r in rows if r["plan_hash"] not in set(gone)}
        return plans, tasks, kept, keys

    # --- tasks -------------------------------------------------------------------------

    def task_state(self, key: str) -> TaskRow | None:
        row = self.db.one("SELECT * FROM tasks WHERE idempotency_key = %s", (key,))
        return _task_row(row) if row else None

    def acknowledged_operation(self, key: str) -> str | None:
        row = self.db.one(
            "SELECT operation_id FROM tasks WHERE idempotency_key = %s AND state = 'acknowledged'",
            (key,),
        )
        return row["operation_id"] if row else None

    def tasks(self, plan_hash: str) -> list[TaskRow]:
        rows = self.db.query(
            "SELECT * FROM tasks WHERE plan_hash = %s ORDER BY started_at, seq", (plan_hash,)
        )
        return [_task_row(r) for r in rows]

    def mark_started(
        self, key: str, *, plan_hash: str, resource: str, stage: str, point: str, task: str
    ) -> None:
        now = _now()
        self._write(*mark_started_sql(key, plan_hash, resource, stage, point, task, now))

    def mark_acknowledged(self, key: str, operation_id: str) -> None:
        self._write(*mark_acknowledged_sql(key, operation_id, _now()))

    def mark_progress(
        self, key: str, *, attempts: int | None = None, note: str | None = None
    ) -> None:
        self._write(*mark_progress_sql(key, attempts, note, _now()))

    def mark_finished(self, key: str, result: TaskResult) -> None:
        self._write(*mark_finished_sql(key, result, _now()))


# The task writes as (sql, args): the leader's journal runs them behind its epoch, a
# worker's behind its claim (`reconciler.execute.worker`).


def mark_started_sql(
    key: str, plan_hash: str, resource: str, stage: str, point: str, task: str, now: str
) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO tasks (idempotency_key, plan_hash, resource, stage, point, task, "
        "state, started_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'started', %s, %s) "
        "ON CONFLICT (idempotency_key) DO UPDATE SET runs = tasks.runs + 1, updated_at = %s "
        "WHERE tasks.state != 'finished'",
        (key, plan_hash, resource, stage, point, task, now, now, now),
    )


def mark_acknowledged_sql(key: str, operation_id: str, now: str) -> tuple[str, tuple[Any, ...]]:
    return (
        "UPDATE tasks SET state = 'acknowledged', operation_id = %s, "
        "acknowledged_at = COALESCE(acknowledged_at, %s), updated_at = %s "
        "WHERE idempotency_key = %s AND state != 'finished'",
        (REDACTOR.text(operation_id), now, now, key),
    )


def mark_progress_sql(
    key: str, attempts: int | None, note: str | None, now: str
) -> tuple[str, tuple[Any, ...]]:
    return (
        "UPDATE tasks SET attempts = COALESCE(%s, attempts), progress = COALESCE(%s, progress), "
        "updated_at = %s WHERE idempotency_key = %s AND state != 'finished'",
        (attempts, REDACTOR.text(note) if note is not None else None, now, key),
    )


def mark_finished_sql(key: str, result: TaskResult, now: str) -> tuple[str, tuple[Any, ...]]:
    return (
        "UPDATE tasks SET state = 'finished', result_json = %s, error = %s, attempts = %s, "
        "operation_id = COALESCE(%s, operation_id), updated_at = %s, finished_at = %s "
        "WHERE idempotency_key = %s",
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


def _plan_row(row: dict[str, Any]) -> PlanRow:
    data = dict(row)
    data.pop("seq", None)
    return PlanRow(**data)


def _task_row(row: dict[str, Any]) -> TaskRow:
    data = dict(row)
    data.pop("seq", None)
    result_json = data.pop("result_json")
    return TaskRow(
        **data, result=TaskResult.from_json(json.loads(result_json)) if result_json else None
    )


__all__ = [
    "Database",
    "Fenced",
    "PgJournal",
    "conninfo",
    "described",
    "migrate",
    "migrations",
    "open_database",
]
