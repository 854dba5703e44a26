"""`reconciler migrate-state`: a SQLite state directory's journal and memory, into PostgreSQL.

Part of the CLI (it reads execute's journal and the portal's store), run once by a
person when a controller moves from the embedded default to the shared database. It
copies, in one transaction, every row of the SQLite journal (plans in their order,
tasks, outcomes, applied records, facts) and the controller's memory kept in files
(`observed-existing.json`, `notifications.json`, `owner.json`) and the portal's
request records (`requests.sqlite`) into an empty database at this version's schema,
then renames `journal.sqlite` (and `requests.sqlite`) with the suffix `.migrated`, so
nothing reads them by mistake.

Refused, with nothing changed: a state directory a controller holds (its lease), one
with no journal, a database that already holds a journal.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import PermanentError
from reconciler.execute.journal import Journal
from reconciler.execute.lease import Lease
from reconciler.execute.store import EXISTING_FACT, LEDGER_FACT
from reconciler.execute.store_pg import open_database

if TYPE_CHECKING:
    import psycopg

    from reconciler.settings import Settings

TABLES: dict[str, tuple[str, ...]] = {
    "plans": ("plan_hash", "revision", "plan_json", "state", "reason", "created_at",
              "finished_at", "stopped"),
    "tasks": ("idempotency_key", "plan_hash", "resource", "stage", "point", "task", "state",
              "operation_id", "attempts", "runs", "progress", "result_json", "error",
              "started_at", "acknowledged_at", "updated_at", "finished_at"),
    "outcomes": ("plan_hash", "resource", "outcome_json"),
    "meta": ("name", "value"),
    "applied": ("resource", "record_json", "updated_at"),
    "resolutions": ("resource", "resolution", "revision", "applied_at", "seq"),
}  # fmt: skip
"""The journal's tables and columns, copied in this order (plans before their tasks)."""
MEMORY = {
    "observed-existing.json": EXISTING_FACT,
    "notifications.json": LEDGER_FACT,
}
"""Files of the state directory that become journal facts in the database."""
REQUESTS_FILE = "requests.sqlite"
REQUEST_COLUMNS = ("id", "created_at", "phase", "record_json")
"""The portal's records (`reconciler.controller.portal.store`), the table `requests` on
both sides."""
MIGRATED_SUFFIX = ".migrated"


@dataclass(frozen=True)
class Migrated:
    rows: dict[str, int]
    facts: tuple[str, ...]
    renamed: Path


def migrate_state(settings: Settings) -> Migrated:
    """Copy the state directory's journal and memory into the database (see module)."""
    state_dir = Path(settings.state_dir)
    source = state_dir / Journal.FILENAME
    if not source.exists():
        raise PermanentError(f"{source}: no SQLite journal to migrate")
    with Lease.acquire(state_dir, holder="reconciler migrate-state"):
        Journal(source).close()  # its own migrations first (an older journal's plans table)
        db = sqlite3.connect(source)
        try:
            rows = {
                table: db.execute(
                    f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid"
                ).fetchall()
                for table, columns in TABLES.items()
            }
        finally:
            db.close()
        requests = state_dir / REQUESTS_FILE
        if requests.exists():
            rows["requests"] = _request_rows(requests)
        facts = _memory_facts(state_dir)
        target = open_database(settings, role="migrate-state")
        try:
            target.run(lambda conn: _copy(conn, rows, facts))
        finally:
            target.close()
        renamed = source.with_name(source.name + MIGRATED_SUFFIX)
        source.replace(renamed)
        if requests.exists():
            requests.replace(requests.with_name(requests.name + MIGRATED_SUFFIX))
    return Migrated({t: len(r) for t, r in rows.items()}, tuple(sorted(facts)), renamed)


def _request_rows(path: Path) -> list[tuple[Any, ...]]:
    from reconciler.controller.portal.store import SqliteRequestStore

    SqliteRequestStore(path).close()  # its schema, should the file predate a column
    db = sqlite3.connect(path)
    try:
        return db.execute(
            f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests ORDER BY rowid"
        ).fetchall()
    finally:
        db.close()


def _memory_facts(state_dir: Path) -> dict[str, str]:
    facts: dict[str, str] = {}
    for filename, fact in MEMORY.items():
        path = state_dir / filename
        if path.exists():
            facts[fact] = path.read_text(encoding="utf-8").strip()
    owner = state_dir / "owner.json"
    if owner.exists():
        data = json.loads(owner.read_text(encoding="utf-8"))
        facts["owner"] = json.dumps({"owner": data["owner"], "repository": data["repository"]})
    return facts


def _copy(
    conn: psycopg.Connection[Any], rows: dict[str, list[tuple[Any, ...]]], facts: dict[str, str]
) -> None:
    with conn.transaction():
        held = conn.execute(
            "SELECT (SELECT count(*) FROM plans) + (SELECT count(*) FROM tasks) "
            "+ (SELECT count(*) FROM applied) + (SELECT count(*) FROM requests) AS n"
        ).fetchone()
        if held and held["n"]:
            raise PermanentError("the database already holds a journal: migrate into an empty one")
        tables = {**TABLES, "requests": REQUEST_COLUMNS}
        for table, columns in tables.items():
            marks = ", ".join(["%s"] * len(columns))
            with conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                    rows.get(table, []),
                )
        for name, value in facts.items():
            conn.execute(
                "INSERT INTO meta (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
