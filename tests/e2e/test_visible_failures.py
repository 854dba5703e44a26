"""Failures are visible where people look: a status commit the remote refuses, a status
file that cannot be read, a long message.

- `reconciler run` (a real process) against a `git daemon` whose pre-receive hook
  refuses pushes to the status branch: the sync operation's `errors`, the log line
  at error level, `/metrics` and the top of `reconciler status` all say so; once
  the hook is gone the next apply writes status and the failure is no longer shown.
- A status file edited by hand into broken YAML on the status branch: `reconciler
  status` names it at the top, the next cycle's `status/controller.yaml` carries
  Failed=True `StatusUnreadable` naming it (and nothing runs again), and the cycle
  after drops the condition.
- `reconciler status` never cuts a message: a failed task's long message is there whole.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BASE_FILES
from tests.controller.monitoring.test_metrics_and_logs import free_port, log_lines
from tests.e2e.support import Fleet
from tests.servers.git import git, git_daemon

pytestmark = pytest.mark.slow

TOKEN = "visible-failures-token-0123456789"
REFUSE_STATUS = """#!/bin/sh
while read old new ref; do
    if [ "$ref" = refs/heads/reconciler/status ]; then
        echo "status pushes are frozen for the audit" >&2
        exit 1
    fi
done
exit 0
"""


def request(url: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


def wait_until(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s")


def flat(text: str) -> str:
    """Output with every run of whitespace as one space: a message wrapped in its table
    column reads as one line again (its continuation lines hold nothing else)."""
    return " ".join(text.split())


def test_a_refused_status_push_shows_in_the_operation_the_log_metrics_and_status(
    tmp_path: Path,
) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES), env={"VISIBLE_TOKEN": TOKEN})
    with git_daemon(tmp_path / "srv") as server:
        git("push", "-q", str(server.bare), "main", cwd=fleet.bare)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / "run.log"
        argv = fleet.argv("run", "--listen", f"127.0.0.1:{port}", "--interval", "1h")
        argv[argv.index("--repo") + 1] = server.url
        env = {**fleet.env, "RECONCILER_API_TOKEN": "env:VISIBLE_TOKEN"}
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
        try:
            wait_until(lambda: [x for x in log_lines(log) if x.get("event") == "cycle"])
            hook = server.bare / "hooks" / "pre-receive"
            hook.write_text(REFUSE_STATUS)
            hook.chmod(0o755)
            work = tmp_path / "work"
            git("clone", "-q", str(server.bare), str(work), cwd=tmp_path)
            machines = work / "machines.yaml"
            machines.write_text(machines.read_text().replace("os: ubuntu", "os: rhel", 1))
            git("commit", "-q", "-am", "m1 runs RHEL", cwd=work)
            git("push", "-q", "origin", "HEAD:main", cwd=work)

            op = request(f"{url}/api/v1/sync", "POST")["id"]
            done = wait_until(
                lambda: (
                    (o := request(f"{url}/api/v1/operations/{op}"))["phase"]
                    in ("succeeded", "failed")
                    and o
                )
            )
            metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        assert done["phase"] == "failed", done
        assert any(
            e.startswith("status not written:") and "status pushes are frozen" in e
            for e in done["errors"]
        ), done
        failed = [x for x in log_lines(log) if x.get("event") == "cycle failed"]
        assert failed and failed[0]["level"] == "error"
        assert any("status pushes are frozen" in e for e in failed[0]["errors"])
        assert re.search(r"^reconciler_status_write_failures_total 1\.0$", metrics, re.M)
        assert re.search(r"^reconciler_status_write_failing 1\.0$", metrics, re.M)

        shown = fleet.run_as(server.url, "status")
        assert shown.returncode == 0, shown.stderr
        head, _, resources = shown.stdout.partition("RESOURCE")
        assert "CONTROLLER" in head and "Machine/m1" in resources  # the controller first
        assert "StatusWriteFailed" in head
        assert "status pushes are frozen for the audit" in flat(head)
        assert "what follows is the status branch as last written" in flat(head)

        hook.unlink()
        applied = fleet.run_as(server.url, "apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        again = fleet.run_as(server.url, "status")
    assert "StatusWriteFailed" not in again.stdout
    assert "RevisionLoaded" in again.stdout.partition("RESOURCE")[0]


def test_an_unreadable_status_file_is_a_controller_condition(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    assert fleet.run("apply").returncode == 0
    started = fleet.started_actions()
    work = tmp_path / "work"
    git("clone", "-q", "-b", "reconciler/status", str(fleet.bare), str(work), cwd=tmp_path)
    broken = work / "status" / "Machine" / "m1.yaml"
    broken.write_text(broken.read_text().replace("phase: Ready", "phase: [Ready", 1))
    git("commit", "-q", "-am", "A hand edit", cwd=work)
    git("push", "-q", "origin", "HEAD:reconciler/status", cwd=work)

    shown = fleet.run("status")
    head = flat(shown.stdout.partition("RESOURCE")[0])
    assert "StatusUnreadable" in head
    assert "status/Machine/m1.yaml: not YAML at line" in head

    assert fleet.run("apply").returncode == 0
    assert fleet.started_actions() == started  # its last applied state is the journal's
    controller = yaml.safe_load(
        git("--git-dir", str(fleet.bare), "show", "reconciler/status:status/controller.yaml")
    )
    failed = [c for c in controller["conditions"] if c["type"] == "Failed"]
    assert [c["reason"] for c in failed] == ["StatusUnreadable"]
    assert "status/Machine/m1.yaml" in failed[0]["message"]

    assert fleet.run("apply").returncode == 0  # the file was written again: readable
    controller = yaml.safe_load(
        git("--git-dir", str(fleet.bare), "show", "reconciler/status:status/controller.yaml")
    )
    assert [c["type"] for c in controller["conditions"]] == ["Ready"]


FAILING_STAGE = """\
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: check}
spec:
  work:
    - name: probe
      type: command
      argv: ["sh", "-c", "echo the probe found the rack switch unreachable; exit 3"]
"""


def test_status_shows_a_long_message_whole(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["stages.yaml"] += FAILING_STAGE
    files["pipelines.yaml"] = files["pipelines.yaml"].replace(
        "    - stage: install-os\n", "    - stage: check\n    - stage: install-os\n"
    )
    fleet = Fleet.create(tmp_path, files)
    assert fleet.run("apply").returncode == 1
    message = json.loads(fleet.run("status", "Machine/m1", "--output", "json").stdout)
    ready = next(c for c in message["conditions"] if c["type"] == "Ready")
    assert len(ready["message"]) > 120
    shown = fleet.run("status")
    assert flat(ready["message"]) in flat(shown.stdout)
