"""The portal's request records in PostgreSQL: a standby answers them, a new leader
follows them on, `reconciler migrate-state` moves them.

Real `reconciler run` replicas on one real cluster (`tests.servers.postgres`), the
declared repository a bare repository on disk (pushed to by the controller, merged by a
person's clone); the catalog is the portal tests' lab (`tests.controller.portal.conftest.FILES`).
Assertions read the other side: each replica's HTTP answers, the `requests` rows, the
simulator's action log, the files of the state directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.controller.portal.conftest import FILES, REQUEST
from tests.pg.support import PgFleet, Replica, start_replica, wait_for
from tests.servers.git import git
from tests.servers.postgres import Cluster

pytestmark = pytest.mark.slow

PORTAL_ENV = {
    "RECONCILER_PLAN_BRANCHES": "request/*",
    "RECONCILER_GIT_AUTHOR_NAME": "reconciler-bot",
    "RECONCILER_GIT_AUTHOR_EMAIL": "bot@reconciler.example",
    "WEB07_ROOT": "s3cret-root-password",
}


def portal_fleet(tmp_path: Path, pg: Cluster) -> PgFleet:
    return PgFleet.create_pg(tmp_path, dict(FILES), pg, env=PORTAL_ENV)


def role(replica: Replica) -> str | None:
    found = replica.controller()
    return found["role"] if found else None


def request_of(replica: Replica, request_id: str) -> dict[str, Any] | None:
    answer = replica.get(f"/api/v1/requests/{request_id}")
    return answer.json() if answer.status_code == 200 else None


def phase_of(replica: Replica, request_id: str) -> str | None:
    found = request_of(replica, request_id)
    return found["phase"] if found else None


def submit(replica: Replica) -> str:
    import httpx

    from tests.pg.support import AUTH

    wait_for(replica.controller, what="the replica answers")
    wait_for(lambda: replica.get("/api/v1/catalog").status_code == 200, what="the catalog")
    answer = httpx.post(replica.url + "/api/v1/requests", json=REQUEST, headers=AUTH, timeout=30)
    assert answer.status_code == 202, answer.text
    assert "x-reconciler-leader" not in answer.headers  # the leader's own answer
    return str(answer.json()["id"])


def merge(tmp_path: Path, fleet: PgFleet, branch: str) -> None:
    """A person merges the request's branch into main and pushes."""
    work = tmp_path / "person"
    if not work.exists():
        git("clone", "-q", str(fleet.bare), str(work), cwd=tmp_path)
    git("fetch", "-q", "origin", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    git("merge", "-q", "--no-ff", "-m", f"Merge {branch}", f"origin/{branch}", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)


def web07_installs(fleet: PgFleet) -> int:
    return sum(
        1
        for row in fleet.action_log()
        if row["event"] == "started" and row["key"] == "Machine/web-07"
    )


def test_a_standby_answers_a_request_and_follows_it_on_after_the_leader_is_killed(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = portal_fleet(tmp_path, pg)
    first = start_replica(fleet, tmp_path, "a")
    second: Replica | None = None
    try:
        wait_for(lambda: role(first) == "leader", what="the first replica leads")
        second = start_replica(fleet, tmp_path, "b")
        wait_for(lambda: role(second) == "standby", what="the second stands by")
        request_id = submit(first)
        wait_for(lambda: phase_of(first, request_id) == "planned", what="the leader plans it")
        (row,) = fleet.sql("SELECT id, phase FROM requests")
        assert row == {"id": request_id, "phase": "planned"}
        assert not (tmp_path / "a" / "requests.sqlite").exists()  # not on the leader's disk

        # The standby answers from the database: the leader's record, as the leader shows it.
        on_standby = request_of(second, request_id)
        assert on_standby is not None and on_standby == request_of(first, request_id)
        assert on_standby["phase"] == "planned"
        listed = second.get("/api/v1/requests").json()["requests"]
        assert [r["id"] for r in listed] == [request_id]

        first.proc.kill()  # SIGKILL: the leader's process ends, its lease with it
        first.proc.wait()
        merge(tmp_path, fleet, f"request/{request_id}")
        wait_for(lambda: role(second) == "leader", what="the standby takes over")
        synced = second.post("/api/v1/sync")
        assert synced.status_code == 202, synced.text
        wait_for(
            lambda: phase_of(second, request_id) == "ready",
            timeout=120,
            what="the new leader follows the request to ready",
        )
        done = request_of(second, request_id)
        assert done is not None
        phases = [h["phase"] for h in done["history"]]
        assert phases[:2] == ["branch-pushed", "planned"] and phases[-1] == "ready", phases
        assert "merged" in phases
        assert fleet.sql("SELECT phase FROM requests") == [{"phase": "ready"}]
        assert web07_installs(fleet) == 1  # provisioned once, by the new leader
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_migrate_state_moves_the_requests_and_the_controller_follows_them_on(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = portal_fleet(tmp_path, pg)
    sqlite_env = {k: v for k, v in fleet.env.items() if not k.startswith("RECONCILER_DATABASE")}
    on_sqlite = PgFleet(fleet.bare, fleet.state, sqlite_env, pg, fleet.database)
    state = tmp_path / "solo"
    alone = start_replica(on_sqlite, tmp_path, "solo")
    try:
        request_id = submit(alone)
        wait_for(lambda: phase_of(alone, request_id) == "planned", what="the request is planned")
        before = request_of(alone, request_id)
    finally:
        assert alone.stop() == 0
    assert (state / "requests.sqlite").exists() and fleet.sql("SELECT * FROM requests") == []

    done = fleet.run_module("reconciler", "--state-dir", str(state), "migrate-state")
    assert done.returncode == 0, done.stderr
    assert "1 requests" in done.stdout
    assert not (state / "requests.sqlite").exists()
    assert (state / "requests.sqlite.migrated").exists()
    assert fleet.sql("SELECT id, phase FROM requests") == [{"id": request_id, "phase": "planned"}]

    replica = start_replica(fleet, tmp_path, "solo")  # the same state directory, on the database
    try:
        wait_for(lambda: role(replica) == "leader", what="the replica leads")
        assert request_of(replica, request_id) == before
        merge(tmp_path, fleet, f"request/{request_id}")
        assert replica.post("/api/v1/sync").status_code == 202
        wait_for(
            lambda: phase_of(replica, request_id) == "ready",
            timeout=120,
            what="the migrated request followed to ready",
        )
        assert not (state / "requests.sqlite").exists()  # the database's, not a new file
    finally:
        replica.stop()
