"""Real parts for the server's tests: a declared Git repository, the API on 127.0.0.1.

`declare(tmp_path, ...)` makes a bare Git repository (a local path as the remote)
holding `n` simulator machines with one provider-action stage each. `running(...)`
starts the real app: the scheduler's worker and uvicorn in a thread on a free
port of 127.0.0.1, stopped cleanly at the end.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from reconciler.controller.scheduler import Scheduler
from reconciler.controller.server import create_app
from reconciler.settings import Settings
from tests.repos import commit_tree

TOKEN = "test-api-token-0123456789"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
ENV = {"RECONCILER_TEST_TOKEN": TOKEN, "RECONCILER_TEST_WEBHOOK": WEBHOOK_SECRET}


def repo_files(
    n: int,
    *,
    latency: str = "0s",
    os_name: str = "ubuntu",
    policy: str = "",
    failure_rate: float = 0.0,
) -> dict:
    machines = "---\n".join(
        f"""\
apiVersion: reconciler/v1
kind: Machine
metadata: {{name: m{i:02d}}}
spec:
  provider: sim
  pipeline: bm
  bmc: {{serial: SN{i:02d}}}
  params: {{os: {os_name}}}
"""
        for i in range(n)
    )
    files = {
        "providers.yaml": f"""\
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: sim}}
spec:
  type: simulator
  settings: {{latency: "{latency}", failureRate: {failure_rate}}}
  limits: {{concurrency: 50}}
""",
        "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  converges: [params.os]
  work:
    - {name: install, type: provider, action: install-os}
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bm}
spec:
  inputs:
    - {name: os, allowed: [ubuntu, rhel], required: true}
  steps:
    - stage: install-os
""",
        "machines.yaml": machines,
    }
    if policy:
        files["policy.yaml"] = policy
    return files


def write_files(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root


def declare(tmp_path: Path, files: dict[str, str]) -> Path:
    """A bare repository whose main holds `files` (one commit)."""
    bare = tmp_path / "infra.git"
    commit_tree(bare, files, "Declare the fleet")
    return bare


def push(bare: Path, files: dict[str, str], message: str = "Change") -> str:
    """A new commit on main of `bare` holding `files` (a whole new tree), parent the old tip."""
    return commit_tree(bare, files, message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(bare: Path, state_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repo": str(bare),
        "state_dir": state_dir,
        "listen": f"127.0.0.1:{free_port()}",
        "interval": 3600.0,
        "interval_jitter": 0.0,
        "api_token": "env:RECONCILER_TEST_TOKEN",
        "webhook_secret": "env:RECONCILER_TEST_WEBHOOK",
        "event_debounce": 0.3,
        "event_max_delay": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Running:
    scheduler: Scheduler
    client: httpx.Client
    url: str

    def wait_for(self, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"not true within {timeout}s: {check}")

    def operation(self, op_id: str, timeout: float = 30.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            body = self.client.get(f"/api/v1/operations/{op_id}").json()
            return body if body["phase"] in ("succeeded", "failed") else None

        return self.wait_for(finished, timeout)

    def idle(self) -> None:
        """Wait until nothing is queued or running."""
        s = self.scheduler
        self.wait_for(
            lambda: s._cycle_wanted is None and not s.busy and not s._pending and s.cycles_run
        )


@contextmanager
def running(settings: Settings, monkeypatch: Any) -> Iterator[Running]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    scheduler = Scheduler(settings)
    scheduler.start()
    host, _, port = settings.listen.rpartition(":")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(scheduler),
            host=host,
            port=int(port),
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{settings.listen}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10.0)
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield Running(scheduler, client, url)
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
        scheduler.stop("test over", timeout=30)
