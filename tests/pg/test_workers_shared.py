"""Workers sharing what one process used to hold alone: the provider's rate, the task's
deadline, the revision's tree.

Real processes (the leader's `apply`, `reconciler worker`s), a real PostgreSQL cluster.
Assertions are made on the other side: the requests an HTTP API received (its own log
of arrivals), the database's rows, files a task wrote, each worker's log.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.pg.support import PgFleet, WorkerProc, start_worker, wait_for
from tests.servers.postgres import Cluster

pytestmark = pytest.mark.slow

HAVE_ANSIBLE = (Path(sys.executable).parent / "ansible-playbook").exists() or bool(
    shutil.which("ansible-playbook")
)

WORKERS = {"RECONCILER_EXECUTE": "workers", "RECONCILER_CLAIM_LEASE": "2s"}


@dataclass
class CountingApi:
    """A JSON API that answers every call and logs when each request arrived (its clock)."""

    url: str = ""
    arrivals: list[tuple[str, str, float]] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[float]:
        return sorted(t for method, _, t in self.arrivals if method == "POST")


@contextmanager
def counting_api() -> Iterator[CountingApi]:
    api = CountingApi()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with api.lock:
                api.arrivals.append(("GET", self.path, time.monotonic()))
                name = self.path.rsplit("/", 1)[-1]
                found = name in api.created
            self._answer(200 if found else 404, {"name": name} if found else {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with api.lock:
                api.arrivals.append(("POST", self.path, time.monotonic()))
                if self.path == "/api/w":
                    api.created.add(str(body.get("name")))
            self._answer(200, {"ok": True})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def rated_repo(api: CountingApi, resources: int, rate: float) -> dict[str, str]:
    provider = f"""\
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: ipam}}
spec:
  type: http
  endpoint: {api.url}
  limits: {{concurrency: 20, ratePerSecond: {rate}}}
  settings:
    observe: {{url: "/api/w/{{name}}"}}
    create: {{url: /api/w, body: {{name: "{{name}}"}}}}
    actions:
      ping: {{url: "/api/w/{{name}}/ping"}}
"""
    stages = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: allocate}
spec:
  work:
    - {name: create, type: provider, action: create}
    - {name: ping, type: provider, action: ping}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: network}
spec:
  steps: [{stage: allocate}]
"""
    docs = [
        f"apiVersion: reconciler/v1\nkind: Resource\nmetadata: {{name: vlan{i:02d}}}\n"
        "spec:\n  provider: ipam\n  pipeline: network\n  type: vlan\n"
        for i in range(resources)
    ]
    return {"providers.yaml": provider, "stages.yaml": stages, "resources.yaml": "---\n".join(docs)}


def most_in_one_second(times: list[float]) -> int:
    """The most requests any one-second window of the server's clock saw."""
    return max(
        (sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times)), default=0
    )


def stop_all(*workers: WorkerProc) -> None:
    for worker in workers:
        assert worker.stop() == 0, worker.output()[-2000:]


def test_rate_per_second_holds_across_all_workers_together(tmp_path: Path, pg: Cluster) -> None:
    rate, resources = 3, 6
    with counting_api() as api:
        fleet = PgFleet.create_pg(tmp_path, rated_repo(api, resources, rate), pg, env=WORKERS)
        workers = [start_worker(fleet, tmp_path, f"w{i}", concurrency=10) for i in range(3)]
        try:
            done = fleet.run("apply")
        finally:
            stop_all(*workers)
        assert done.returncode == 0, done.stdout + done.stderr
        posts = api.posts()
    assert len(posts) == 2 * resources  # create and ping of each, nothing twice
    ran_on = {r["claimed_by"] for r in fleet.sql("SELECT claimed_by FROM task_queue")}
    assert len(ran_on) > 1, ran_on  # the calls did come from several workers
    # Per worker, three workers would reach three times the rate; together they hold it
    # (one more than the rate in a window: a request that left on time arrived a little late).
    assert most_in_one_second(posts) <= rate + 1, posts
    # Every call a worker made went through the provider's shared bucket.
    bucket = fleet.sql("SELECT provider, calls FROM provider_rate")
    assert bucket == [{"provider": "ipam", "calls": 2 * resources}]


# --- the task's deadline reaches the worker ---------------------------------------------


def command_repo(work: str, files: dict[str, str] | None = None) -> dict[str, str]:
    """One simulated machine whose one stage runs the given `work` task list (YAML)."""
    return {
        "providers.yaml": "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
        "spec:\n  type: simulator\n",
        "stages.yaml": "apiVersion: reconciler/v1\nkind: Stage\nmetadata: {name: prepare}\n"
        f"spec:\n  work:\n{work}---\napiVersion: reconciler/v1\nkind: Pipeline\n"
        "metadata: {name: node}\nspec:\n  steps: [{stage: prepare}]\n",
        "machines.yaml": "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: node00}\n"
        "spec:\n  provider: sim\n  pipeline: node\n",
        **(files or {}),
    }


def queued(fleet: PgFleet) -> list[dict[str, object]]:
    return fleet.sql("SELECT manifest_json FROM task_queue WHERE state = 'queued'")


def test_a_task_queued_past_its_deadline_fails_on_the_worker_without_running(
    tmp_path: Path, pg: Cluster
) -> None:
    marker = tmp_path / "ran"
    work = f"    - {{name: touch, type: command, argv: [touch, {marker}], timeout: 2s}}\n"
    fleet = PgFleet.create_pg(tmp_path, command_repo(work), pg, env=WORKERS)
    apply = fleet.start("apply", log=tmp_path / "apply.log")
    try:
        rows = wait_for(lambda: queued(fleet), what="the task queued")
        deadline = json.loads(str(rows[0]["manifest_json"]))["deadline"]
        assert deadline is not None  # the manifest carries it
        while time.time() < deadline + 0.5:  # no worker runs yet: it waits past it
            time.sleep(0.1)
        worker = start_worker(fleet, tmp_path, "late")
        try:
            assert apply.wait(timeout=120) != 0  # the task failed
        finally:
            stop_all(worker)
    finally:
        if apply.poll() is None:
            apply.kill()
    assert not marker.exists()  # not run: its time was up before any worker took it
    (task,) = fleet.journal_tasks()
    assert task["state"] == "finished"
    assert "deadline exceeded" in task["error"] and "not run" in task["error"], task["error"]
    assert "task claimed" in worker.output()


# --- the revision's tree on the worker --------------------------------------------------

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write the marker
      ansible.builtin.copy:
        dest: "{{ target }}"
        content: "configured {{ reconciler_resource }}\\n"
"""


@pytest.mark.skipif(not HAVE_ANSIBLE, reason="ansible-core is not installed")
def test_a_worker_runs_playbooks_and_commands_from_the_revisions_tree(
    tmp_path: Path, pg: Cluster
) -> None:
    played, copied = tmp_path / "played.txt", tmp_path / "copied.txt"
    work = (
        "    - name: configure\n      type: ansible\n      playbook: playbooks/site.yaml\n"
        f"      extraVars: {{target: {played}}}\n"
        f"    - {{name: copy, type: command, argv: [cp, data/hello.txt, {copied}]}}\n"
    )
    files = {
        "playbooks/site.yaml": PLAYBOOK,
        ".reconcilerignore": "playbooks/**\n",
        "data/hello.txt": "hello from the revision\n",
    }
    fleet = PgFleet.create_pg(tmp_path, command_repo(work, files), pg, env=WORKERS)
    worker = start_worker(fleet, tmp_path, "w-tree")  # no --repo: the manifest says where
    wait_for(lambda: "worker started" in worker.output(), what="the worker started")
    try:
        done = fleet.run("apply")
    finally:
        stop_all(worker)
    assert done.returncode == 0, done.stdout + done.stderr + worker.output()[-3000:]
    assert played.read_text() == "configured Machine/node00\n"
    assert copied.read_text() == "hello from the revision\n"  # a command's cwd: the tree
    rows = fleet.sql("SELECT claimed_by, manifest_json FROM task_queue")
    assert {r["claimed_by"] for r in rows} == {"w-tree"}
    revision = json.loads(str(rows[0]["manifest_json"]))["revision"]
    # The worker's own mirror and tree, in its own state directory.
    assert (tmp_path / "worker-w-tree" / "mirror.git" / "HEAD").is_file()
    assert (tmp_path / "worker-w-tree" / "trees" / revision / "playbooks" / "site.yaml").is_file()
