"""Benchmark: beyond one machine — workers, a standby's takeover, the queue's rate.

On a fresh PostgreSQL cluster of this machine (`tests.servers.postgres`: initdb and
pg_ctl in a temporary folder), with real processes:

- `workers_speedup_4`: the same plan of slow tasks (simulator operations of fixed
  latency, one task per machine) run by 4 `reconciler worker` processes of concurrency 1
  ÷ by one; execution time from the leader's `plan.started` to `plan.finished` (ideal 4).
- `leader_takeover_s`: two `reconciler run` replicas, the leader SIGKILLed mid-plan:
  seconds until the standby's first action on the fleet (the first simulator action-log
  event after the kill). Lease 3 s: a standby tries every second; a killed holder's
  database session ends at once, so it need not wait the lease out.
- `queue_claims_per_s`: trivial tasks (simulator actions of no latency) enqueued at
  once, claimed and completed by 4 idle workers (concurrency 8 each): tasks ÷ seconds
  until the last is done.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.figures import Figures, report

ROOT = Path(__file__).resolve().parent.parent


def fleet_files(machines: int, latency: str, *, chain: bool = False) -> dict[str, str]:
    """One task per machine; with `chain`, each machine depends on the one before."""
    head = "apiVersion: reconciler/v1\n"
    docs = [
        f"{head}kind: Machine\nmetadata: {{name: m{i:03d}}}\nspec: {{provider: sim, pipeline: p"
        + (f", dependsOn: [m{i - 1:03d}]" if chain and i else "")
        + "}\n"
        for i in range(machines)
    ]
    return {
        "providers.yaml": f"{head}kind: Provider\nmetadata: {{name: sim}}\n"
        f'spec: {{type: simulator, settings: {{latency: "{latency}"}}, '
        "limits: {concurrency: 100}}\n",
        "stages.yaml": f"{head}kind: Stage\nmetadata: {{name: work}}\nspec:\n"
        "  work:\n    - {name: run, type: provider, action: configure}\n",
        "pipelines.yaml": f"{head}kind: Pipeline\nmetadata: {{name: p}}\nspec:\n"
        "  steps:\n    - stage: work\n",
        "machines.yaml": "---\n".join(docs),
    }


class Setup:
    """A declared repository, a database, and how to start reconciler's processes."""

    def __init__(self, tmp: Path, cluster: Any, files: dict[str, str]) -> None:
        from reconciler.cli.demo import commit_directory

        self.tmp = tmp
        source = tmp / "declared"
        for name, text in files.items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_text(text)
        self.bare = tmp / "infra.git"
        commit_directory(self.bare, source, "fleet")
        self.fleet = tmp / "fleet"
        self.fleet.mkdir()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            **cluster.env(cluster.new_database()),
            "RECONCILER_API_TOKEN": "env:BENCH_TOKEN",
            "BENCH_TOKEN": "bench-token-0123456789",
            "RECONCILER_INTERVAL": "1h",
            "RECONCILER_INTERVAL_JITTER": "0s",
        }
        subprocess.run(
            [sys.executable, "-m", "reconciler.providers.simulator", "log",
             "--state-dir", str(self.fleet)],
            env=self.env, check=True, capture_output=True,
        )  # fmt: skip

    def state(self, name: str) -> Path:
        state = self.tmp / name
        state.mkdir(exist_ok=True)
        if not (state / "simulator.db").exists():
            (state / "simulator.db").symlink_to(self.fleet / "simulator.db")
        return state

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "reconciler", "--state-dir", str(self.state(name)), *args]
        log = (self.tmp / f"{name}.log").open("ab")
        return subprocess.Popen(argv, stdout=log, stderr=log, env={**self.env, **(env or {})})

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def actions(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.fleet / 'simulator.db'}?mode=ro", uri=True)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM action_log ORDER BY seq")]
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _execution_seconds(log: str) -> float:
    stamps = {}
    for line in log.splitlines():
        if line.startswith("{") and '"plan.' in line:
            event = json.loads(line)
            stamps[event["event"]] = datetime.fromisoformat(event["timestamp"])
    return (stamps["plan.finished"] - stamps["plan.started"]).total_seconds()


def workers_run(cluster: Any, workers: int, machines: int, latency: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        setup = Setup(Path(folder), cluster, fleet_files(machines, latency))
        procs = [
            setup.start(f"w{i}", "worker", "--concurrency", "1", "--name", f"w{i}")
            for i in range(workers)
        ]
        try:
            argv = ("--repo", str(setup.bare), "apply")
            leader = setup.start("leader", *argv, env={"RECONCILER_EXECUTE": "workers"})
            if leader.wait(timeout=900) != 0:
                raise RuntimeError(f"apply failed: {setup.log('leader')[-500:]}")
            return _execution_seconds(setup.log("leader"))
        finally:
            _stop(*procs)


AUTH = {"Authorization": "Bearer bench-token-0123456789"}


def _role(port: int) -> str | None:
    import httpx

    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/controller", headers=AUTH)
    except httpx.HTTPError:
        return None
    return answer.json()["role"] if answer.status_code == 200 else None


def _wait(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise RuntimeError(f"not within {timeout}s: {check}")


def takeover(cluster: Any, machines: int) -> float:
    from tests.servers.git import free_port

    with tempfile.TemporaryDirectory() as folder:
        # A plan long enough for the standby to be up before the kill: a chain of tasks.
        setup = Setup(Path(folder), cluster, fleet_files(machines, "3s", chain=True))
        env = {"RECONCILER_LEADER_LEASE": "3s"}
        ports = [free_port(), free_port()]
        procs = []
        for name, port in zip(("a", "b"), ports, strict=True):
            argv = ["--repo", str(setup.bare), "run", "--listen", f"127.0.0.1:{port}"]
            procs.append(setup.start(name, *argv, env=env))
        try:
            _wait(lambda: sorted(str(_role(port)) for port in ports) == ["leader", "standby"])
            leader = next(p for p, port in zip(procs, ports, strict=True)
                          if _role(port) == "leader")  # fmt: skip
            _wait(lambda: any(a["event"] == "started" for a in setup.actions()))
            time.sleep(0.5)
            killed = time.time()
            leader.kill()
            leader.wait()
            first = _wait(lambda: [a["at"] for a in setup.actions() if a["at"] > killed], 120)
            return min(first) - killed
        finally:
            _stop(*procs)


def _trivial(i: int) -> Any:
    from reconciler.execute.manifest import TaskManifest
    from reconciler.model.tasks import ProviderActionTask
    from reconciler.providers.base import ResourceRef

    return TaskManifest(
        idempotency_key=f"bench-{i}",
        execution="b" * 64,
        resource=ResourceRef(kind="Machine", name=f"m{i}", key=f"Machine/m{i}"),
        stage="work",
        point="work",
        task=ProviderActionTask(name="run", type="provider", action="configure"),
        provider="sim",
        provider_spec={"type": "simulator", "limits": {"concurrency": 10_000}},
    )


def claims_rate(cluster: Any, tasks: int, workers: int) -> float:
    from reconciler.execute.store_pg import PgJournal
    from reconciler.execute.worker import QueueDispatch
    from reconciler.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        setup = Setup(Path(folder), cluster, fleet_files(1, "0s"))
        procs = [
            setup.start(f"w{i}", "worker", "--concurrency", "8", "--name", f"w{i}")
            for i in range(workers)
        ]
        try:
            os.environ.update(cluster.env(""))  # the password's reference resolves here
            settings = Settings(
                database_url=setup.env["RECONCILER_DATABASE_URL"],
                database_password=setup.env["RECONCILER_DATABASE_PASSWORD"],
            )
            journal = PgJournal.connect(settings)
            _wait(lambda: all("worker started" in setup.log(f"w{i}") for i in range(workers)))
            dispatch = QueueDispatch(journal)
            manifests = [_trivial(i) for i in range(tasks)]
            began = time.monotonic()
            for manifest in manifests:
                dispatch.enqueue(manifest)
            done = "SELECT count(*) AS n FROM task_queue WHERE state = 'done'"
            _wait(lambda: journal.db.one(done)["n"] >= tasks, 600)
            seconds = time.monotonic() - began
            journal.close()
            return tasks / seconds
        finally:
            _stop(*procs)


def run(quick: bool) -> Figures:
    from tests.servers.postgres import cluster

    machines, latency = (8, "0.5s") if quick else (16, "1s")
    with cluster() as pg:
        one = workers_run(pg, 1, machines, latency)
        four = workers_run(pg, 4, machines, latency)
        taken = takeover(pg, 6)
        rate = claims_rate(pg, 200 if quick else 1000, 4)
    return {
        "workers_speedup_4": {
            "value": one / four,
            "unit": "x",
            "reference": f"{machines} tasks of {latency} (concurrency 1 per worker): 1 worker "
            f"{one:.2f} s / 4 workers {four:.2f} s; ideal 4",
        },
        "leader_takeover_s": {
            "value": taken,
            "unit": "s",
            "reference": "SIGKILL of the leader to the standby's first action on the fleet "
            "(lease 3 s, a standby tries every 1 s; includes its start as leader)",
        },
        "queue_claims_per_s": {
            "value": rate,
            "unit": "/s",
            "reference": "trivial tasks claimed and completed by 4 workers (concurrency 8) "
            "on this machine's PostgreSQL",
        },
        "workers_1_s": {"value": one, "unit": "s", "reference": "-"},
        "workers_4_s": {"value": four, "unit": "s", "reference": "-"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    report(run(args.quick), args.json)


if __name__ == "__main__":
    main()
