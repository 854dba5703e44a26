"""`reconciler run` with `RECONCILER_EXECUTE=workers`: two replicas and workers.

Real processes (two `reconciler run` replicas, two `reconciler worker`s), a real
PostgreSQL cluster; the leader is killed with SIGKILL while its plan's tasks are on the
workers. Assertions read the records: the simulator's action log (nothing issued twice,
nothing lost), the queue's and the journal's rows, the status branch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_crash_resume import crash_repo, exactly_once_problems
from tests.pg.support import PgFleet, Replica, start_replica, start_worker, wait_for
from tests.servers.postgres import Cluster

pytestmark = pytest.mark.slow

MACHINES = 10
WORKERS = {"RECONCILER_EXECUTE": "workers", "RECONCILER_CLAIM_LEASE": "2s"}


def role(replica: Replica) -> str | None:
    found = replica.controller()
    return found["role"] if found else None


def test_the_leader_killed_mid_plan_its_standby_resumes_on_the_workers(
    tmp_path: Path, pg: Cluster
) -> None:
    files = crash_repo(MACHINES)
    files["providers.yaml"] = files["providers.yaml"].replace('"0.3s"', '"2s"')
    fleet = PgFleet.create_pg(tmp_path, files, pg, env=WORKERS)
    workers = [start_worker(fleet, tmp_path, f"w{i}") for i in range(2)]
    first = start_replica(fleet, tmp_path, "a")
    second: Replica | None = None
    try:
        wait_for(lambda: role(first) == "leader", what="the first replica leads")
        second = start_replica(fleet, tmp_path, "b")
        wait_for(lambda: role(second) == "standby", what="the second stands by")
        wait_for(lambda: fleet.started_actions() >= MACHINES, what="the plan is under way")
        first.proc.kill()  # SIGKILL mid-plan: its tasks are on the workers
        first.proc.wait()
        assert fleet.status_commits() == []
        wait_for(lambda: role(second) == "leader", what="the standby takes over")
        wait_for(lambda: fleet.status_commits(), timeout=180, what="the status commit")
        statuses = json.loads(fleet.run("status", "--output", "json").stdout)
        assert {s["phase"] for s in statuses.values()} == {"Ready"}
        assert exactly_once_problems(fleet, MACHINES) == []
        assert len(fleet.status_commits()) == 1
    finally:
        for process in (first, second, *workers):
            if process is not None:
                process.stop()
    # Every task ran on a worker, once: none claimed twice, none run twice.
    queue = fleet.sql("SELECT state, claims, claimed_by FROM task_queue")
    assert len(queue) == len(fleet.journal_tasks()) > 0
    assert {(r["state"], r["claims"]) for r in queue} == {("done", 1)}
    assert {r["claimed_by"] for r in queue} <= {"w0", "w1"}
    assert {t["runs"] for t in fleet.journal_tasks()} == {1}
    assert "task claimed" not in first.output()  # the replicas ran none themselves
