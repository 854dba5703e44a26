"""Workers: `RECONCILER_EXECUTE=workers`, tasks claimed from PostgreSQL by `reconciler worker`.

Real processes (the leader's `apply`, workers), a real cluster; the simulated fleet is
one file every process reaches. Assertions read the records: the queue's and the
journal's rows, the simulator's action log (nothing issued twice, nothing lost), each
worker's log.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from reconciler.execute.context import TaskResult
from reconciler.execute.manifest import TaskManifest
from reconciler.execute.store_pg import PgJournal
from reconciler.execute.worker import PgWorkQueue, QueueDispatch
from reconciler.model.tasks import ProviderActionTask
from reconciler.providers.base import ResourceRef
from reconciler.settings import load_settings
from tests.e2e.test_crash_resume import crash_repo, exactly_once_problems
from tests.pg.support import PgFleet, WorkerProc, start_worker, wait_for
from tests.servers.postgres import Cluster

pytestmark = pytest.mark.slow

WORKERS = {"RECONCILER_EXECUTE": "workers", "RECONCILER_CLAIM_LEASE": "2s"}


def two_sites(machines: int, latency: str = "0.2s") -> dict[str, str]:
    """`crash_repo`'s fleet split over two providers, one per site."""
    files = crash_repo(machines)
    files["providers.yaml"] = "---\n".join(
        f"apiVersion: reconciler/v1\nkind: Provider\nmetadata: {{name: sim-{site}}}\n"
        f'spec:\n  type: simulator\n  site: {site}\n  settings: {{latency: "{latency}"}}\n'
        "  limits: {concurrency: 20}\n"
        for site in ("dc1", "dc2")
    )
    docs = files["machines.yaml"].split("---\n")
    files["machines.yaml"] = "---\n".join(
        doc.replace("provider: sim", f"provider: sim-dc{1 + i % 2}") for i, doc in enumerate(docs)
    )
    return files


def apply_with(fleet: PgFleet, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / "apply.log"
    return fleet.start("apply", log=log), log


def finished(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def stop_all(*workers: WorkerProc) -> None:
    for worker in workers:
        assert worker.stop() == 0, worker.output()[-2000:]


def test_tasks_of_a_site_run_only_on_workers_of_that_site(tmp_path: Path, pg: Cluster) -> None:
    machines = 6
    fleet = PgFleet.create_pg(tmp_path, two_sites(machines), pg, env=WORKERS)
    workers = [
        start_worker(fleet, tmp_path, "w-dc1", site="dc1"),
        start_worker(fleet, tmp_path, "w-dc2", site="dc2"),
    ]
    try:
        proc, log = apply_with(fleet, tmp_path)
        finished(proc, log)
    finally:
        stop_all(*workers)
    rows = fleet.sql("SELECT provider, site, state, claimed_by, claims FROM task_queue")
    assert len(rows) == len(fleet.journal_tasks()) > 0
    for row in rows:
        assert row["state"] == "done"
        assert row["site"] == row["provider"].removeprefix("sim-")
        assert row["claimed_by"] == f"w-{row['site']}", row
    assert exactly_once_problems(fleet, machines) == []
    # The leader ran nothing itself: every task's log is on the worker that ran it.
    assert not (fleet.state / "logs").exists()
    for worker in workers:
        assert "task done" in worker.output()


def test_a_worker_killed_mid_task_is_replaced_and_acknowledged_work_is_polled(
    tmp_path: Path, pg: Cluster
) -> None:
    machines = 4
    files = crash_repo(machines)
    files["providers.yaml"] = files["providers.yaml"].replace('"0.3s"', '"3s"')
    fleet = PgFleet.create_pg(tmp_path, files, pg, env=WORKERS)
    first = start_worker(fleet, tmp_path, "first")
    proc, log = apply_with(fleet, tmp_path)
    second = None
    try:
        wait_for(lambda: fleet.started_actions() >= machines, what="operations under way")
        first.proc.kill()  # SIGKILL: its claims stay until their lease runs out
        first.proc.wait()
        second = start_worker(fleet, tmp_path, "second")
        finished(proc, log)
    finally:
        if second is not None:
            stop_all(second)
    assert exactly_once_problems(fleet, machines) == []  # polled, never issued again
    again = fleet.sql("SELECT claims, claimed_by FROM task_queue WHERE claims > 1")
    assert again and {r["claimed_by"] for r in again} == {"second"}


def test_a_worker_paused_past_its_claim_is_fenced(tmp_path: Path, pg: Cluster) -> None:
    machines = 4
    files = crash_repo(machines)
    files["providers.yaml"] = files["providers.yaml"].replace('"0.3s"', '"3s"')
    fleet = PgFleet.create_pg(tmp_path, files, pg, env=WORKERS)
    first = start_worker(fleet, tmp_path, "first")
    proc, log = apply_with(fleet, tmp_path)
    second = None
    try:
        wait_for(lambda: fleet.started_actions() >= machines, what="operations under way")
        first.proc.send_signal(signal.SIGSTOP)
        held = {r["idempotency_key"] for r in fleet.sql(
            "SELECT idempotency_key FROM task_queue WHERE state = 'claimed'")}  # fmt: skip
        second = start_worker(fleet, tmp_path, "second")
        finished(proc, log)  # the second worker re-claimed the paused one's tasks
        first.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: "late result refused (fenced)" in first.output(),
                 what="the paused worker's late result is refused")  # fmt: skip
    finally:
        first.proc.send_signal(signal.SIGCONT)
        stop_all(first, *([second] if second else []))
    assert exactly_once_problems(fleet, machines) == []
    rows = fleet.sql(
        "SELECT claimed_by, claims FROM task_queue WHERE idempotency_key = ANY(%s)",
        (list(held),),
    )
    assert rows and all(r["claimed_by"] == "second" and r["claims"] == 2 for r in rows), rows


def test_a_database_restart_during_a_plan_loses_and_doubles_nothing(
    tmp_path: Path, pg: Cluster
) -> None:
    machines = 6
    files = crash_repo(machines)
    files["providers.yaml"] = files["providers.yaml"].replace('"0.3s"', '"1s"')
    fleet = PgFleet.create_pg(tmp_path, files, pg, env=WORKERS)
    workers = [start_worker(fleet, tmp_path, f"w{i}") for i in (1, 2)]
    try:
        proc, log = apply_with(fleet, tmp_path)
        wait_for(lambda: fleet.started_actions() >= machines, what="operations under way")
        pg.restart()  # fast: every session is cut
        finished(proc, log)
    finally:
        stop_all(*workers)
    assert exactly_once_problems(fleet, machines) == []
    text = log.read_text() + "".join(w.output() for w in workers)
    assert "database connection lost, reconnecting" in text


def manifest(i: int, provider: str = "p", limit: int = 2) -> TaskManifest:
    return TaskManifest(
        idempotency_key=f"key-{provider}-{i}",
        execution="e" * 64,
        resource=ResourceRef(
            kind="Machine",
            name=f"m{i}",
            key=f"Machine/m{i}",
            params={"rootPassword": "env:ROOT_PASSWORD"},
        ),
        stage="install-os",
        point="work",
        task=ProviderActionTask(name="install", type="provider", action="install-os"),
        provider=provider,
        provider_spec={"type": "simulator", "limits": {"concurrency": limit}},
        params={"os": "ubuntu", "rootPassword": "env:ROOT_PASSWORD"},
        secure_params=frozenset({"rootPassword"}),
    )


def test_a_manifest_is_a_value_that_round_trips() -> None:
    value = manifest(1)
    again = TaskManifest.from_json(value.to_json())
    assert again == value
    assert again.provider_document().spec.limits.concurrency == 2
    with pytest.raises(ValueError, match="not a task manifest"):
        TaskManifest.from_json('{"format": "other"}')


def test_a_providers_limit_holds_across_workers(
    tmp_path: Path, pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers asking for five tasks each get two between them (the limit), and a
    third only once one of those ended."""
    database = pg.new_database()
    for name, value in pg.env(database).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(state_dir=tmp_path, claim_lease=30.0)
    journal = PgJournal.connect(settings)
    dispatch = QueueDispatch(journal)
    for i in range(6):
        dispatch.enqueue(manifest(i))
    dispatch.enqueue(manifest(0, provider="other", limit=5))
    one = PgWorkQueue.connect(settings, name="one", site=None)
    two = PgWorkQueue.connect(settings, name="two", site="dc9")
    try:
        first, second = one.claim(5), two.claim(5)
        of_p = [c for c in first + second if c.manifest.provider == "p"]
        assert len(of_p) == 2
        assert [c.manifest.provider for c in first + second].count("other") == 1
        assert one.claim(5) == two.claim(5) == []  # full: nothing more of "p"
        done = of_p[0]
        queue = one if done in first else two
        claim_journal = queue.journal_for(done)
        claim_journal.mark_started(done.key, plan_hash="e" * 64, resource="Machine/m0",
                                   stage="install-os", point="work", task="install")  # fmt: skip
        claim_journal.mark_finished(done.key, TaskResult(status="succeeded", message="ok"))
        third = one.claim(5)
        assert [c.manifest.provider for c in third] == ["p"]
        assert third[0].key not in {c.key for c in of_p}
        # The manifest in the queue holds the reference, never a value.
        stored = journal.db.query("SELECT manifest_json FROM task_queue")
        assert all("env:ROOT_PASSWORD" in r["manifest_json"] for r in stored)
    finally:
        for closing in (one, two, journal):
            closing.close()
