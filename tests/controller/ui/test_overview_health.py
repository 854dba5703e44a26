"""The overview's live parts over HTTP against a real `reconciler run` subprocess.

A running operation with its progress (a slow command task, seen through `/ui/live`
while it runs); provider health with a provider whose observation fails (a Redfish
provider whose BMC port is closed on 127.0.0.1: its error shown) beside one that
answers, each with its last observation; and the revision in force going stale with
"remote unreachable" when the git daemon stops.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.controller.server.conftest import write_files
from tests.servers.git import free_port, git, restartable_git_daemon

pytestmark = pytest.mark.slow

TOKEN = "overview-token-0123456789"


def files(closed_port: int, pause: int) -> dict[str, str]:
    return {
        "providers.yaml": f"""\
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: lab}}
spec: {{type: simulator}}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: dc9-redfish}}
spec:
  type: redfish
  endpoint: http://127.0.0.1:{closed_port}
  credentials: {{username: env:DC9_USER, password: env:DC9_PASSWORD}}
""",
        "stages.yaml": f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: slow}}
spec:
  work:
    - {{name: wait, type: command, argv: [sleep, "{pause}"]}}
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: slow}
spec:
  steps: [{stage: slow}]
""",
        "machines.yaml": """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m1}
spec: {provider: lab, pipeline: slow}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: far-01}
spec: {provider: dc9-redfish, pipeline: slow}
""",
    }


def until(check: Callable[[], Any], log: Path, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except (httpx.HTTPError, KeyError):  # not up yet, or no status yet (404)
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen; log:\n{log.read_text()[-3000:]}")


def provider_row(html: str, name: str) -> str:
    rows = re.findall(r"<tr>(.*?)</tr>", html.split('id="providers"')[1], re.S)
    (row,) = [r for r in rows if f">{name}</a>" in r]
    return row


def test_overview_running_operation_provider_health_and_remote_unreachable(
    tmp_path: Path,
) -> None:
    closed = free_port()
    with restartable_git_daemon(tmp_path / "srv") as daemon:
        work = tmp_path / "work"
        git("clone", "-q", str(daemon.server.bare), str(work), cwd=tmp_path)
        write_files(work, files(closed, pause=0))
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "The fleet", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OV_TOKEN": TOKEN, "DC9_USER": "u",
               "DC9_PASSWORD": "p", "RECONCILER_API_TOKEN": "env:OV_TOKEN",
               "RECONCILER_API_READ_OPEN": "true"}  # fmt: skip
        env.pop("RECONCILER_CONFIG", None)
        argv = [sys.executable, "-m", "reconciler", "--repo", daemon.server.url, "--state-dir",
                str(tmp_path / "state"), "run", "--listen", f"127.0.0.1:{port}",
                "--interval", "1h"]  # fmt: skip
        log = tmp_path / "run.log"
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=20
            ) as ui:
                until(lambda: ui.get("/api/v1/resources/Machine/m1").json()["phase"] == "Ready",
                      log, "m1 Ready")  # fmt: skip
                page = ui.get("/").text
                lab, far = provider_row(page, "lab"), provider_row(page, "dc9-redfish")
                assert "answering" in lab and "observation failed" not in lab
                assert re.search(r'class="small provider-observed"><span title="\d{4}-', lab)
                assert "observation failed" in far
                assert f"127.0.0.1:{closed}" in far  # the error names what did not answer
                assert re.search(r'class="small provider-error">[^<]*\S', far)
                assert '<span class="muted">never</span>' in far  # never observed here

                # A running operation shows its progress, live (a new machine, a slow task).
                slower = files(closed, pause=4)
                slower["machines.yaml"] += (
                    "---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m2}\n"
                    "spec: {provider: lab, pipeline: slow}\n"
                )
                write_files(work, slower)
                git("commit", "-q", "-am", "Slower, and m2", cwd=work)
                git("push", "-q", "origin", "HEAD:main", cwd=work)
                op = ui.post("/api/v1/sync").json()["id"]
                live = until(lambda: (t := ui.get("/ui/live").text) and "<td>wait</td>" in t and t,
                             log, "the running task")  # fmt: skip
                assert re.search(r'<p id="live-counts">[^<]*\d', live)
                assert "<progress max=" in live
                assert f"/operations/{op}" in live
                assert re.search(r"<td><a href=\"/resources/Machine/m2\".*?<td>slow</td>"
                                 r"<td>wait</td>", live, re.S)  # fmt: skip
                until(lambda: ui.get(f"/api/v1/operations/{op}").json()["phase"]
                      not in ("pending", "running"), log, "the sync's end")  # fmt: skip

                # The remote stops answering: the revision in force is stale, and why.
                daemon.stop()
                ui.post("/api/v1/sync")
                stale = until(lambda: "Stale:" in (t := ui.get("/").text) and t, log, "stale")
                assert (
                    f"<b>Stale: RemoteUnavailable</b> — fetch from {daemon.server.url} failed"
                ) in stale
                assert "keeping last good revision" in stale
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
