"""A real `reconciler run` subprocess serving the portal, configured from the environment only.

The other portal tests build the controller in-process from `Settings`; here the
controller is `sys.executable -m reconciler run` with its portal settings read
from the environment as an operator sets them (`RECONCILER_FORGE*`,
`RECONCILER_PLAN_BRANCHES`, `RECONCILER_API_TOKENS` as JSON). The repository is
served by `git daemon` on 127.0.0.1 (the lab of `tests.controller.portal.conftest` plus a
catalog pipeline `burn-in` whose command task fails after merge), and the forge is
the recording fake of `tests.controller.portal.test_forge` (GitHub cannot run here).
Shared by `tests/portal/test_run_subprocess.py` and `tests/ui/test_requests_page.py`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT
from tests.controller.portal.conftest import FILES, TOKENS
from tests.controller.portal.test_forge import FORGE_TOKEN, Recorder, fake_forge
from tests.controller.server.conftest import write_files
from tests.servers.git import free_port, git, git_daemon

BURN_ERROR = "disk 3 <b>failed</b> the burn-in <script>window.__pwned=1</script>"
BURN_IN = {
    "burn-in.yaml": f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: burn-in}}
spec:
  work:
    - name: stress-disks
      type: command
      argv: [sh, -c, "echo '{BURN_ERROR}' >&2; exit 3"]
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {{name: burn}}
spec:
  catalog:
    title: Burned-in server
    kinds: [Machine]
  inputs:
    - {{name: os, allowed: [ubuntu-24.04, rhel-9], required: true}}
  steps:
    - stage: install-os
    - stage: burn-in
""",
}
API_TOKENS = {
    "backstage": {"token": "env:PORTAL_TOKEN", "scopes": ["read", "request"]},
    "ops": {"token": "env:OPS_TOKEN", "scopes": ["sync"]},
}


@dataclass
class RunningPortal:
    """The served repository, a person's clone, the controller subprocess and the fake forge."""

    url: str
    bare: Path
    work: Path
    state: Path
    log: Path
    forge: Recorder

    def client(self, token: str = TOKENS["PORTAL_TOKEN"]) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20.0)

    def wait_for(self, check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{what} did not happen; log:\n{self.log.read_text()[-3000:]}")

    def wait_phase(self, request_id: str, *phases: str) -> dict[str, Any]:
        with self.client() as portal:

            def reached() -> dict[str, Any] | None:
                body = portal.get(f"/api/v1/requests/{request_id}").json()
                return body if body["phase"] in phases else None

            found: dict[str, Any] = self.wait_for(reached, f"request {request_id} in {phases}")
            return found

    def merge(self, branch: str) -> str:
        git("fetch", "-q", "origin", cwd=self.work)
        git("checkout", "-q", "main", cwd=self.work)
        git("merge", "-q", "--no-ff", "-m", f"Merge {branch}", f"origin/{branch}", cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def sync(self) -> None:
        """A cycle now (`POST /api/v1/sync` with the ops token, which may only sync)."""
        with self.client(TOKENS["OPS_TOKEN"]) as ops:
            assert ops.post("/api/v1/sync").status_code == 202


def portal_env(state: Path, repo: str, forge_url: str) -> dict[str, str]:
    """The environment an operator gives `reconciler run` for the portal (no flags)."""
    env = {**os.environ, **TOKENS, "PYTHONPATH": str(ROOT), "FORGE_TOKEN": FORGE_TOKEN}
    env.pop("RECONCILER_CONFIG", None)
    env.update(
        RECONCILER_REPO=repo,
        RECONCILER_STATE_DIR=str(state),
        RECONCILER_INTERVAL="1h",
        RECONCILER_API_TOKENS=json.dumps(API_TOKENS),
        RECONCILER_PLAN_BRANCHES="request/*",
        RECONCILER_FORGE="github",
        RECONCILER_FORGE_URL=forge_url,
        RECONCILER_FORGE_PROJECT="acme/infra",
        RECONCILER_FORGE_TOKEN="env:FORGE_TOKEN",
        RECONCILER_GIT_AUTHOR_NAME="reconciler-bot",
        RECONCILER_GIT_AUTHOR_EMAIL="bot@reconciler.example",
    )
    return env


@contextmanager
def run_portal(tmp: Path) -> Iterator[RunningPortal]:
    """The lab on a git daemon, the fake forge, and `reconciler run` over both."""
    with git_daemon(tmp / "srv") as server, fake_forge() as (forge_url, recorder):
        work = tmp / "work"
        git("clone", "-q", str(server.bare), str(work), cwd=tmp)
        write_files(work, {**FILES, **BURN_IN})
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "The lab", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        port = free_port()
        log = tmp / "controller.log"
        env = portal_env(tmp / "state", server.url, forge_url)
        argv = [sys.executable, "-m", "reconciler", "run", "--listen", f"127.0.0.1:{port}"]
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=out, env=env, cwd=tmp)
        found = RunningPortal(
            f"http://127.0.0.1:{port}", server.bare, work, tmp / "state", log, recorder
        )
        try:
            found.wait_for(lambda: _ready(found), "the controller's first cycle")
            yield found
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def _ready(portal: RunningPortal) -> bool:
    try:
        with portal.client() as client:
            return client.get("/api/v1/catalog").status_code == 200
    except httpx.HTTPError:
        return False


__all__ = ["BURN_ERROR", "RunningPortal", "run_portal"]
