"""`reconciler demo`, the README's first command, as a user runs it: from an empty folder.

A real subprocess with a fresh temporary directory as its working directory: it
makes the local Git repository from sample-repo/, runs one cycle against the
simulator and ends with every resource Ready on the status branch; run again, it
says "in sync" and makes no commit.

The demo receives its webhooks on 127.0.0.1:8099, a fixed port: this test holds a
lock file while it runs (so two runs of it never overlap) and waits for the port
to be free (another program's demo may hold it for a while).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from reconciler.cli.demo import DEMO_SINK_PORT
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PORT_WAIT = 120.0


@contextlib.contextmanager
def demo_port() -> Iterator[None]:
    """Hold the demo's port for this test: a lock among our tests, a wait for others."""
    lock = Path("/tmp") / f"reconciler-demo-{DEMO_SINK_PORT}.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_demo(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`reconciler demo` in `cwd`, retried while another process holds the port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["PYTHONPATH"] = str(ROOT)
    deadline = time.monotonic() + PORT_WAIT
    while True:
        while not port_free(DEMO_SINK_PORT) and time.monotonic() < deadline:
            time.sleep(0.2)
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "demo"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        busy = f"cannot listen on 127.0.0.1:{DEMO_SINK_PORT}" in done.stderr
        if not busy or time.monotonic() >= deadline:
            return done


def status_branch(cwd: Path) -> tuple[str, dict[str, str]]:
    """The status branch's tip and its status files (path -> text) in the demo's repository."""
    repo = pygit2.Repository(str(cwd / ".reconciler" / "demo" / "infra.git"))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    files: dict[str, str] = {}

    def walk(tree: pygit2.Tree, prefix: str) -> None:
        for entry in tree:
            obj = repo[entry.id]
            if isinstance(obj, pygit2.Tree):
                walk(obj, f"{prefix}{entry.name}/")
            else:
                files[f"{prefix}{entry.name}"] = obj.data.decode()

    walk(tip.tree, "")
    return str(tip.id), files


def test_demo_from_an_empty_folder_ends_ready_and_then_in_sync(tmp_path: Path) -> None:
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    with demo_port():
        first = run_demo(cwd)
        assert first.returncode == 0, first.stdout + first.stderr
        created = re.search(r"Plan: (\d+) to create", first.stdout)
        assert created, first.stdout
        resources = int(created.group(1))
        assert f"resources: {resources} Ready" in first.stdout
        assert "status committed:" in first.stdout
        tip, files = status_branch(cwd)
        statuses = {p: f for p, f in files.items() if re.match(r"status/(Machine|Instance)/", p)}
        assert len(statuses) == resources
        for path, text in statuses.items():
            assert "phase: Ready" in text, (path, text)
        assert "reports/drift.json" in files
        # The stand-in webhooks: one summary line per resource, not one per stage.
        summaries = [x for x in first.stderr.splitlines() if x.startswith("  [demo webhooks] ")]
        assert sorted(x.split()[2].rstrip(":") for x in summaries) == sorted(
            p.removeprefix("status/").removesuffix(".yaml") for p in statuses
        )
        assert "[demo webhook /hooks" not in first.stderr
        assert json.loads(files["reports/drift.json"]) is not None

        second = run_demo(cwd)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "demo: using" in second.stdout
        assert f"In sync: {resources} resources" in second.stdout
        assert "status unchanged: no commit" in second.stdout
        assert status_branch(cwd)[0] == tip
