"""The journal in PostgreSQL: `reconciler apply` with `RECONCILER_DATABASE_URL`, end to end.

The real CLI as a subprocess against a real cluster (`tests.servers.postgres`), the
records read from the other side: the database's rows, the simulator's action log,
the status branch. The crash test is `tests/e2e/test_crash_resume.py`'s, with the
journal in the database: `kill -9` at random points, then resume; nothing runs twice,
nothing is lost.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.cli.demo import DEMO_SECRETS, demo_sink
from reconciler.execute.lease import Lease
from tests.conftest import BASE_FILES, ROOT
from tests.e2e.support import rows
from tests.e2e.test_crash_resume import (
    ACTIONS,
    crash_repo,
    exactly_once_problems,
    kill_when,
)
from tests.pg.support import PgFleet
from tests.servers.git import free_port
from tests.servers.postgres import PASSWORD, Cluster

pytestmark = pytest.mark.slow


def sample_files(sink_port: int) -> dict[str, str]:
    """sample-repo/ as files, its webhooks and CMDB pointed at this test's receiver."""
    root = ROOT / "sample-repo"
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text().replace("127.0.0.1:8099", f"127.0.0.1:{sink_port}")
        files[str(path.relative_to(root))] = text
    return files


def no_password(*outputs: str) -> None:
    for text in outputs:
        assert PASSWORD not in text


def test_apply_of_the_sample_fleet_keeps_its_journal_and_memory_in_postgres(
    tmp_path: Path, pg: Cluster
) -> None:
    port = free_port()
    fleet = PgFleet.create_pg(tmp_path, sample_files(port), pg, env=DEMO_SECRETS)
    with demo_sink(port):
        done = fleet.run("apply", "--yes")
        no_password(done.stdout, done.stderr)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        again = fleet.run("apply", "--yes")
    assert again.returncode == 0 and "In sync" in again.stdout, again.stdout + again.stderr

    # Nothing of the journal or the controller's memory on local disk...
    local = {p.name for p in fleet.state.iterdir()}
    assert not local & {"journal.sqlite", "observed-existing.json", "lease"}, local
    # ...all of it in the database, at this version's schema.
    versions = [r["version"] for r in fleet.sql("SELECT version FROM schema_migrations")]
    assert versions == [1, 2, 3, 4, 5, 6, 7]
    plans = fleet.journal_plans()
    assert [p["state"] for p in plans] == ["reported"]
    tasks = fleet.journal_tasks()
    assert tasks and {t["state"] for t in tasks} == {"finished"}
    statuses = json.loads(fleet.run("status", "--output", "json").stdout)
    applied = {r["resource"] for r in fleet.sql("SELECT resource FROM applied")}
    assert applied == set(statuses)
    assert {s["phase"] for s in statuses.values()} == {"Ready"}
    facts = {r["name"]: r["value"] for r in fleet.sql("SELECT name, value FROM meta")}
    existing = json.loads(facts["observed_existing"])
    assert sorted(key for keys in existing.values() for key in keys) == sorted(statuses)
    assert json.loads(facts["owner"])["owner"].endswith("#main")
    # Secrets the sample references are redacted in every row the database holds.
    dump = json.dumps(fleet.sql("SELECT * FROM tasks")) + json.dumps(plans)
    for value in DEMO_SECRETS.values():
        assert value not in dump
    # Leases are given back at the end: the second apply took it at once.
    lease = fleet.sql("SELECT epoch, expires_at < now() AS free FROM leader_lease")
    assert lease == [{"epoch": 2, "free": True}]


MACHINES = 20
KILLS = 3


def test_kill_9_at_random_points_on_postgres_repeats_and_loses_nothing(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = PgFleet.create_pg(tmp_path, crash_repo(MACHINES), pg)
    rng = random.Random(20261202)
    total = MACHINES * len(ACTIONS)
    points = [*sorted(rng.sample(range(1, total - MACHINES), KILLS - 1)), total]
    log = tmp_path / "apply.log"
    codes = [
        kill_when(fleet, point, rng.uniform(0.0, 0.4) if point < total else 0.5, log)
        for point in points
    ]
    assert codes[: KILLS - 1] == [-9] * (KILLS - 1), "every kill inside the execution landed"

    done = fleet.run("apply")
    while done.returncode != 0 and "resumed" in done.stdout:
        done = fleet.run("apply")  # (a kill after the last action: one more cycle reports)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    assert exactly_once_problems(fleet, MACHINES) == []
    # One plan, resumed across the kills: tasks re-entered under their own keys.
    assert any(t["runs"] > 1 for t in fleet.journal_tasks()), "tasks were re-entered"
    # Each kill left the lease to a dead process's session: the next apply took it over.
    assert fleet.sql("SELECT epoch FROM leader_lease")[0]["epoch"] >= KILLS + 1
    statuses = json.loads(fleet.run("status", "--output", "json").stdout)
    assert {s["phase"] for s in statuses.values()} == {"Ready"}
    assert len(statuses) == MACHINES
    no_password(log.read_text())


def test_a_second_apply_while_one_leads_names_the_leader(tmp_path: Path, pg: Cluster) -> None:
    files = crash_repo(5)  # slow operations: the first apply leads for ~15 s
    files["providers.yaml"] = files["providers.yaml"].replace('"0.3s"', '"3s"')
    fleet = PgFleet.create_pg(tmp_path, files, pg)
    log = tmp_path / "first.log"
    first = fleet.start("apply", log=log)
    try:
        while fleet.started_actions() < 1:
            assert first.poll() is None, log.read_text()
            time.sleep(0.02)
        other = fleet.run_as(str(fleet.bare), "apply", state=tmp_path / "other-state")
    finally:
        first.wait(timeout=120)
    assert other.returncode == 1
    assert "is led by" in other.stderr and "its lease runs until" in other.stderr, other.stderr
    assert "Traceback" not in other.stderr
    assert first.returncode == 0, log.read_text()[-2000:]
    assert fleet.sql("SELECT epoch FROM leader_lease") == [{"epoch": 1}]


def test_a_password_in_the_url_is_refused_and_a_wrong_one_is_one_line(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = PgFleet.create_pg(tmp_path, dict(BASE_FILES), pg)
    inline = dict(fleet.env)
    inline["RECONCILER_DATABASE_URL"] = pg.url(fleet.database).replace(
        "postgres@", f"postgres:{PASSWORD}@"
    )
    fleet.env = inline
    refused = fleet.run("apply")
    assert refused.returncode == 1
    assert "database_url holds a password" in refused.stderr
    no_password(refused.stdout, refused.stderr)
    assert "Traceback" not in refused.stderr
    assert not fleet.sql("SELECT 1 FROM pg_tables WHERE tablename = 'plans'")

    wrong = {**inline, "RECONCILER_DATABASE_URL": pg.url(fleet.database)}
    wrong["RECONCILER_TEST_PG_PASSWORD"] = "not-the-password"
    fleet.env = wrong
    denied = fleet.run("apply")
    assert denied.returncode == 1
    assert "password authentication failed" in denied.stderr, denied.stderr[-2000:]
    assert "not-the-password" not in denied.stderr + denied.stdout
    assert "Traceback" not in denied.stderr


def test_migrations_are_versioned_and_a_newer_database_is_refused(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = PgFleet.create_pg(tmp_path, dict(BASE_FILES), pg)
    assert fleet.run("apply").returncode == 0
    applied = fleet.sql("SELECT version, name FROM schema_migrations ORDER BY version")
    assert applied == [
        {"version": 1, "name": "journal"},
        {"version": 2, "name": "leader"},
        {"version": 3, "name": "queue"},
        {"version": 4, "name": "provider_rate"},
        {"version": 5, "name": "ui_sessions"},
        {"version": 6, "name": "requests"},
        {"version": 7, "name": "resolutions"},
    ]
    again = fleet.run("apply")
    assert again.returncode == 0
    assert "database migrated" not in again.stderr  # nothing left to apply
    fleet.sql("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')")
    newer = fleet.run("apply")
    assert newer.returncode == 1
    assert "schema version 99, newer than this reconciler knows (7)" in newer.stderr


def test_migrate_state_moves_a_sqlite_state_directory_into_postgres(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = PgFleet.create_pg(tmp_path, crash_repo(3), pg)
    sqlite_env = {k: v for k, v in fleet.env.items() if not k.startswith("RECONCILER_DATABASE")}
    on_sqlite = PgFleet(fleet.bare, fleet.state, sqlite_env, pg, fleet.database)
    assert on_sqlite.run("apply").returncode == 0
    journal = fleet.state / "journal.sqlite"
    before = rows(journal, "SELECT * FROM tasks ORDER BY rowid")
    started = fleet.started_actions()

    def migrate() -> subprocess.CompletedProcess[str]:
        return fleet.run_module("reconciler", "--state-dir", str(fleet.state), "migrate-state")

    with Lease.acquire(fleet.state, holder="a running controller"):  # the real flock
        held = migrate()
    assert held.returncode == 1, held.stderr
    assert "is in use by a running controller" in held.stderr
    assert journal.exists() and not fleet.journal_tasks()

    done = migrate()
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} tasks" in done.stdout
    assert not journal.exists() and (fleet.state / "journal.sqlite.migrated").exists()
    moved = fleet.journal_tasks()
    assert [t["idempotency_key"] for t in moved] == [t["idempotency_key"] for t in before]
    assert [dict(t, seq=None) for t in moved] == [dict(t, seq=None) for t in before]
    facts = {r["name"] for r in fleet.sql("SELECT name FROM meta")}
    assert {"observed_existing", "owner"} <= facts

    # The controller on the database carries on where SQLite left off: nothing to do.
    again = fleet.run("apply")
    assert again.returncode == 0 and "In sync: 3 resources" in again.stdout, again.stdout
    assert fleet.started_actions() == started
    refused = migrate()  # nothing left to migrate, and the journal is there
    assert refused.returncode == 1 and "no SQLite journal" in refused.stderr


def test_retention_lets_go_of_finished_plans_in_the_database(tmp_path: Path, pg: Cluster) -> None:
    keep_none = {"RECONCILER_PLANS_KEPT": "0", "RECONCILER_RETENTION": "0s"}
    fleet = PgFleet.create_pg(tmp_path, dict(BASE_FILES), pg, env=keep_none)
    assert fleet.run("apply").returncode == 0
    assert len(fleet.journal_plans()) == 1  # finished after this cycle's "now": kept
    assert (fleet.state / "logs").exists()
    again = fleet.run("apply")  # the next cycle lets it go
    assert again.returncode == 0 and "In sync: 2 resources" in again.stdout
    assert '"event": "retention"' in again.stderr
    assert fleet.journal_plans() == [] and fleet.journal_tasks() == []
    assert fleet.sql("SELECT * FROM outcomes") == []
    assert list((fleet.state / "logs").iterdir()) == []
    # What was applied is not the past: it stays, and nothing runs again.
    assert len(fleet.sql("SELECT * FROM applied")) == 2
    assert fleet.run("apply").stdout.count("In sync: 2 resources") == 1
