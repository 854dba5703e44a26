"""Benchmark: the same N REST calls done by an Ansible playbook and by reconciler.

What a team would otherwise write: an inventory of N hosts and a play with one
`ansible.builtin.uri` task (default forks, local connection), against the same
local HTTP service on 127.0.0.1 that answers each PUT after a fixed latency.
reconciler runs the same calls as `http` tasks of one stage through its executor
(journaled, with idempotency keys, as in production). Figure: `vs_ansible`, the
ratio of Ansible's wall time to reconciler's (higher is better for reconciler).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.figures import report
from reconciler.execute.engine import Executor
from reconciler.execute.journal import Journal
from reconciler.load.load import load_files
from reconciler.plan.plan import Operation, Plan, PlannedAction, PlanPolicy, Summary, Wave


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops concurrent connects
    daemon_threads = True


class _Service(BaseHTTPRequestHandler):
    latency = 0.05
    calls = 0
    lock = threading.Lock()

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        time.sleep(self.latency)
        with _Service.lock:
            _Service.calls += 1
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


def _repo(n: int, url: str) -> dict[str, bytes]:
    docs = [
        f"""apiVersion: reconciler/v1
kind: Provider
metadata: {{name: sim}}
spec: {{type: simulator, limits: {{concurrency: 50}}}}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: register}}
spec:
  work:
    - name: put
      type: http
      method: PUT
      url: "{url}/items/${{resource.name}}"
      body: {{name: "${{resource.name}}"}}
      expectStatus: [200]
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {{name: rest}}
spec:
  steps: [{{stage: register}}]
"""
    ]
    docs += [
        f"""apiVersion: reconciler/v1
kind: Machine
metadata: {{name: host-{i:04d}}}
spec: {{provider: sim, pipeline: rest}}
"""
        for i in range(n)
    ]
    return {"repo.yaml": "---\n".join(docs).encode()}


def run_reconciler(n: int, url: str, state: Path) -> float:
    result = load_files(_repo(n, url))
    assert result.ok, result.diagnostics[:3]
    desired = result.desired
    actions = tuple(
        PlannedAction(
            key=key,
            kind=r.kind,
            name=r.name,
            provider=r.provider,
            operation=Operation.CREATE,
            stages=("register",),
        )
        for key, r in desired.resources.items()
    )
    plan = Plan.build(
        revision="bench",
        policy=PlanPolicy(prune=False, self_heal=False, max_destructive_actions=0),
        waves=[Wave(number=1, actions=actions)],
        summary=Summary(create=n),
    )
    with Journal.open(state) as journal:
        executor = Executor(journal=journal, providers={}, desired=desired, state_dir=state)
        executor.providers = {"sim": object()}  # type: ignore[dict-item]  # http tasks need none
        start = time.perf_counter()
        outcome = asyncio.run(executor.execute(plan))
        elapsed = time.perf_counter() - start
    assert not outcome.failed, outcome.failed[:1]
    return elapsed


def run_ansible(n: int, url: str, work: Path) -> float:
    inventory = work / "inventory.ini"
    inventory.write_text(
        "[fleet]\n"
        + "".join(f"host-{i:04d} ansible_connection=local\n" for i in range(n))
        + "[fleet:vars]\nansible_python_interpreter="
        + shutil.which("python3")
        + "\n"  # type: ignore[operator]
    )
    playbook = work / "play.yaml"
    playbook.write_text(
        f"""- hosts: fleet
  gather_facts: false
  tasks:
    - name: put
      ansible.builtin.uri:
        url: "{url}/items/{{{{ inventory_hostname }}}}"
        method: PUT
        body_format: json
        body: {{name: "{{{{ inventory_hostname }}}}"}}
        status_code: 200
"""
    )
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(work / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(work / "tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    start = time.perf_counter()
    done = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return elapsed


def run(n: int, latency: float) -> dict[str, dict[str, Any]]:
    if shutil.which("ansible-playbook") is None:
        return {
            "vs_ansible": {"value": None, "unit": "x", "reference": "ansible-core not installed"}
        }
    _Service.latency = latency
    server = _Server(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_reconciler(n, url, Path(tmp) / "state")
            calls_ours = _Service.calls
            theirs = run_ansible(n, url, Path(tmp))
            calls_theirs = _Service.calls - calls_ours
    finally:
        server.shutdown()
        server.server_close()
    assert calls_ours == n and calls_theirs == n, (calls_ours, calls_theirs)
    return {
        f"vs_ansible_reconciler_{n}_s": {"value": ours, "unit": "s", "reference": "-"},
        f"vs_ansible_ansible_{n}_s": {"value": theirs, "unit": "s", "reference": "uri, 5 forks"},
        "vs_ansible": {
            "value": theirs / ours,
            "unit": "x",
            "reference": f"Ansible wall time / reconciler's, {n} PUTs at {latency * 1000:.0f} ms",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="REST calls")
    parser.add_argument("--latency", type=float, default=0.05, help="service latency, seconds")
    parser.add_argument("--quick", action="store_true", help="50 calls")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = run(50 if args.quick else args.n, args.latency)
    report(figures, args.json)


if __name__ == "__main__":
    main()
