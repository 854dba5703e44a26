"""Leader election: replicas of `reconciler run` on one database, one leads, a standby
takes over; every write of a leader is fenced by its epoch.

Real `reconciler run` processes (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), a real cluster; the
simulated fleet is one file all replicas reach (as real infrastructure is outside
each of them). Assertions read the records: the simulator's action log, the journal's
rows, the status branch, each replica's API and log.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from reconciler.cli.demo import demo_sink
from reconciler.controller.leader import LeaderLease
from reconciler.execute.lease import LeaseHeld
from reconciler.execute.store_pg import Fenced, PgJournal
from reconciler.settings import Settings
from tests.e2e.test_crash_resume import crash_repo, exactly_once_problems
from tests.pg.support import PgFleet, Replica, start_replica, wait_for
from tests.servers.git import free_port
from tests.servers.postgres import PASSWORD, PASSWORD_ENV, Cluster

pytestmark = pytest.mark.slow

MACHINES = 10


def slow_fleet(tmp_path: Path, pg: Cluster, latency: str = "0.5s") -> PgFleet:
    files = crash_repo(MACHINES)
    files["providers.yaml"] = files["providers.yaml"].replace('"0.3s"', f'"{latency}"')
    return PgFleet.create_pg(tmp_path, files, pg)


def role(replica: Replica) -> str | None:
    found = replica.controller()
    return found["role"] if found else None


def test_one_leads_a_standby_forwards_and_takes_over_after_kill_9(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = slow_fleet(tmp_path, pg, latency="2s")  # ~12 s of plan: the kill lands in it
    first = start_replica(fleet, tmp_path, "a")
    wait_for(lambda: role(first) == "leader", what="the first replica leads")
    second = start_replica(fleet, tmp_path, "b")
    try:
        standby = wait_for(lambda: second.controller(), what="the second replica answers")
        assert standby["role"] == "standby"
        assert standby["leader"]["address"] == first.url
        assert standby["epoch"] == 1 and standby["lease"] == "database"
        # A POST to the standby is the leader's: forwarded, answered by it.
        synced = second.post("/api/v1/sync")
        assert synced.status_code == 202, synced.text
        assert synced.headers["x-reconciler-leader"] == first.url
        assert first.get(f"/api/v1/operations/{synced.json()['id']}").status_code == 200

        wait_for(lambda: fleet.started_actions() >= MACHINES, what="the plan is under way")
        first.proc.kill()  # SIGKILL mid-plan
        first.proc.wait()
        assert fleet.status_commits() == []

        wait_for(lambda: role(second) == "leader", what="the standby takes over")
        assert second.controller()["epoch"] == 2
        wait_for(lambda: fleet.status_commits(), timeout=120, what="the status commit")
        statuses = json.loads(fleet.run("status", "--output", "json").stdout)
        assert {s["phase"] for s in statuses.values()} == {"Ready"}
        # The plan was resumed with its own keys: nothing ran twice, nothing was lost,
        # and its status was written once.
        assert exactly_once_problems(fleet, MACHINES) == []
        assert len(fleet.status_commits()) == 1
        assert second.stop() == 0
    finally:
        second.stop()
    for replica in (first, second):
        assert PASSWORD not in replica.output()
    assert "standing by" in second.output()


def test_a_leader_paused_past_its_lease_is_fenced_and_steps_down(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = slow_fleet(tmp_path, pg, latency="1s")
    first = start_replica(fleet, tmp_path, "a")
    second = None
    try:
        wait_for(lambda: role(first) == "leader", what="the first replica leads")
        second = start_replica(fleet, tmp_path, "b")
        wait_for(lambda: role(second) == "standby", what="the second stands by")
        wait_for(lambda: fleet.started_actions() >= MACHINES, what="the plan is under way")
        first.proc.send_signal(signal.SIGSTOP)  # past its 2 s lease: its session stays open
        wait_for(lambda: role(second) == "leader", what="the standby takes the expired lease")
        first.proc.send_signal(signal.SIGCONT)
        # The paused leader finds a newer epoch: it starts nothing more and stops.
        assert first.proc.wait(timeout=60) == 1
        assert "leadership lost" in first.output()
        wait_for(lambda: fleet.status_commits(), timeout=120, what="the new leader's status")
        assert exactly_once_problems(fleet, MACHINES) == []
        assert len(fleet.status_commits()) == 1
        assert fleet.sql("SELECT epoch, holder FROM leader_lease")[0]["epoch"] == 2
    finally:
        first.proc.send_signal(signal.SIGCONT)
        first.stop()
        if second is not None:
            second.stop()


def test_a_standby_that_cannot_reach_the_leader_answers_503_with_its_address(
    tmp_path: Path, pg: Cluster
) -> None:
    fleet = slow_fleet(tmp_path, pg)
    gone = f"http://127.0.0.1:{free_port()}"  # a leader whose API nobody answers
    first = start_replica(fleet, tmp_path, "a", env={"RECONCILER_ADVERTISE_URL": gone})
    try:
        wait_for(lambda: role(first) == "leader", what="the first replica leads")
        second = start_replica(fleet, tmp_path, "b")
        try:
            wait_for(lambda: role(second) == "standby", what="the second stands by")
            answer = second.post("/api/v1/sync")
            assert answer.status_code == 503
            assert answer.json() == {
                "detail": f"this replica is a standby; the leader is at {gone}",
                "leader": gone,
            }
            assert answer.headers["x-reconciler-leader"] == gone
            assert second.get("/api/v1/resources").status_code == 200  # reads: served here
        finally:
            second.stop()
    finally:
        assert first.stop() == 0


def test_without_a_database_the_controller_is_the_leader_of_its_state_directory(
    tmp_path: Path,
) -> None:
    fleet = PgFleet.create(tmp_path, crash_repo(1))
    env = dict(fleet.env)
    for name in ("RECONCILER_DATABASE_URL", "RECONCILER_DATABASE_PASSWORD"):
        env.pop(name, None)
    fleet.env = env
    replica = start_replica(fleet, tmp_path, "only")
    try:
        found = wait_for(lambda: replica.controller(), what="the API answers")
        assert found["role"] == "leader" and found["lease"] == "state-directory"
        assert found["epoch"] is None and found["leader"]["pid"] == replica.proc.pid
    finally:
        assert replica.stop() == 0


def test_a_write_of_a_superseded_leader_is_refused(
    tmp_path: Path, pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fence itself, on the real database: a journal carrying epoch 1 cannot write
    once epoch 2 leads, and its write leaves the row as the new leader has it."""
    database = pg.new_database()
    settings = Settings(
        repo=str(tmp_path),
        state_dir=tmp_path / "state",
        database_url=pg.url(database),
        database_password=f"env:{PASSWORD_ENV}",
        leader_lease=60.0,
    )
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    old = LeaderLease.take(settings)
    old_journal = PgJournal.connect(settings, epoch=old.epoch)
    old_journal.set_fact("written_by", "old")
    with pytest.raises(LeaseHeld, match="is led by"):
        LeaderLease.take(settings)  # the lease is in force: nobody else takes it
    old._stop.set()  # its heartbeat stops, as a paused process's does
    with pg.connect(database) as conn:  # ...and its lease runs out
        conn.execute("UPDATE leader_lease SET expires_at = now() - interval '1 second'")
    new = LeaderLease.take(settings)
    assert (old.epoch, new.epoch) == (1, 2)
    new_journal = PgJournal.connect(settings, epoch=new.epoch)
    new_journal.set_fact("written_by", "new")
    with pytest.raises(Fenced, match="epoch 1 is not in force, the lease is held by"):
        old_journal.set_fact("written_by", "old again")
    with pytest.raises(Fenced):
        old_journal.record_plan("p" * 64, None, "{}")
    assert new_journal.fact("written_by") == "new"
    assert new_journal.unfinished_plan() is None
    assert not old.renew()  # its heartbeat would find the lease lost
    for closing in (old_journal, new_journal):
        closing.close()
    new.release()
    old.db.close()


def test_the_notification_ledger_is_kept_in_the_database(tmp_path: Path, pg: Cluster) -> None:
    port = free_port()
    files = crash_repo(2)
    files["policy.yaml"] = (
        "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: default}\nspec:\n"
        f'  notifications:\n    - {{url: "http://127.0.0.1:{port}/hooks/infra", '
        "secret: env:RECONCILER_TEST_NOTIFY}\n"
    )
    fleet = PgFleet.create_pg(tmp_path, files, pg, env={"RECONCILER_TEST_NOTIFY": "n0tify"})
    with demo_sink(port):
        replica = start_replica(fleet, tmp_path, "a")
        try:
            ledger = wait_for(
                lambda: fleet.sql("SELECT value FROM meta WHERE name = 'notification_ledger'"),
                what="the ledger in the database",
            )
        finally:
            assert replica.stop() == 0
    alerts = json.loads(ledger[0]["value"])["alerts"]
    assert sorted(alerts) == ["Machine/node00|Ready", "Machine/node01|Ready"]
    assert not (tmp_path / "a" / "notifications.json").exists()
