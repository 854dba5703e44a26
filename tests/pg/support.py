"""A `Fleet` whose controller keeps its journal in PostgreSQL, and replicas of `run` over it.

The records are read from the other side: the database's rows, the simulator's action
log, the status branch, each replica's HTTP API and log.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.support import Fleet
from tests.servers.git import free_port
from tests.servers.postgres import Cluster


@dataclass
class PgFleet(Fleet):
    """`tests.e2e.support.Fleet` with `RECONCILER_DATABASE_URL` set: same CLI, same
    assertions, the journal's rows from the database."""

    cluster: Cluster | None = None
    database: str = ""

    @classmethod
    def create_pg(
        cls, tmp: Path, files: dict[str, str], cluster: Cluster, env: dict[str, str] | None = None
    ) -> PgFleet:
        database = cluster.new_database()
        base = Fleet.create(tmp, files, env={**cluster.env(database), **(env or {})})
        return cls(base.bare, base.state, base.env, cluster, database)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        assert self.cluster is not None
        try:
            with self.cluster.connect(self.database) as conn:
                cursor = conn.execute(query, args)
                return [dict(r) for r in cursor.fetchall()] if cursor.description else []
        except Exception as exc:  # the tables are not created before the first start
            if "does not exist" in str(exc):
                return []
            raise

    def journal_plans(self) -> list[dict[str, Any]]:
        return self.sql("SELECT * FROM plans ORDER BY created_at, seq")

    def journal_tasks(self) -> list[dict[str, Any]]:
        return self.sql("SELECT * FROM tasks ORDER BY seq")


TOKEN = "pg-test-api-token-0123456789"


@dataclass
class Replica:
    """One `reconciler run` process of a fleet: its own state directory and port."""

    name: str
    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH, timeout=10.0)

    def post(self, path: str) -> httpx.Response:
        return httpx.post(self.url + path, headers=AUTH, timeout=20.0)

    def controller(self) -> dict[str, Any] | None:
        try:
            answer = self.get("/api/v1/controller")
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def shared_fleet(fleet: Fleet) -> Path:
    """The simulator's fleet, outside every replica (as real infrastructure is): made in
    `fleet.state`; each replica's state directory links its `simulator.db` to it."""
    done = fleet.run_module(
        "reconciler.providers.simulator", "log", "--state-dir", str(fleet.state)
    )
    assert done.returncode == 0, done.stderr
    return fleet.state / "simulator.db"


def start_replica(fleet: Fleet, tmp: Path, name: str, env: dict[str, str] | None = None) -> Replica:
    state = tmp / name
    state.mkdir(parents=True, exist_ok=True)
    link = state / "simulator.db"
    if not link.exists():
        link.symlink_to(shared_fleet(fleet))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "reconciler", "--repo", str(fleet.bare)]
    argv += ["--state-dir", str(state), "run", "--listen", f"127.0.0.1:{port}"]
    full_env = {
        **fleet.env,
        "RECONCILER_API_TOKEN": "env:RECONCILER_TEST_TOKEN",
        "RECONCILER_TEST_TOKEN": TOKEN,
        "RECONCILER_INTERVAL": "1h",
        "RECONCILER_INTERVAL_JITTER": "0s",
        "RECONCILER_LEADER_LEASE": "2s",
        **(env or {}),
    }
    log = tmp / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=full_env)
    return Replica(name, url, log, proc)


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what or check}")


@dataclass
class WorkerProc:
    """One `reconciler worker` process."""

    name: str
    log: Path
    proc: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_worker(
    fleet: Fleet,
    tmp: Path,
    name: str,
    *,
    site: str | None = None,
    concurrency: int = 10,
    env: dict[str, str] | None = None,
) -> WorkerProc:
    """A worker with its own state directory; the simulated fleet is the shared one."""
    state = tmp / f"worker-{name}"
    state.mkdir(parents=True, exist_ok=True)
    link = state / "simulator.db"
    if not link.exists():
        link.symlink_to(shared_fleet(fleet))
    argv = [sys.executable, "-m", "reconciler", "--state-dir", str(state), "worker"]
    argv += ["--name", name, "--concurrency", str(concurrency)]
    if site:
        argv += ["--site", site]
    log = tmp / f"worker-{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env={**fleet.env, **(env or {})})
    return WorkerProc(name, log, proc)
