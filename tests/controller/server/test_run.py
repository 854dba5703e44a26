"""`reconciler run` as a real process: SIGTERM during a long apply, restart, nothing done twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from reconciler.providers.simulator import SimulatorProvider
from tests.controller.server.conftest import ENV, TOKEN, declare, free_port, repo_files

ROOT = Path(__file__).resolve().parents[3]


def start(bare: Path, state: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **ENV,
        "PYTHONPATH": str(ROOT),
        "RECONCILER_API_TOKEN": "env:RECONCILER_TEST_TOKEN",
        "RECONCILER_INTERVAL_JITTER": "0s",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "--repo",
            str(bare),
            "--state-dir",
            str(state),
            "--listen",
            f"127.0.0.1:{port}",
            "--interval",
            "1h",
            "run",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")


def started(state: Path) -> list[dict]:
    sim = SimulatorProvider.open(state, name="sim")
    try:
        return [e for e in sim.action_log() if e["event"] == "started"]
    finally:
        sim._db.close()


def test_sigterm_during_a_long_apply_then_restart_does_nothing_twice(tmp_path: Path) -> None:
    files = repo_files(6, latency="1s")
    files["providers.yaml"] = files["providers.yaml"].replace("concurrency: 50", "concurrency: 2")
    bare = declare(tmp_path, files)
    state = tmp_path / "state"
    port = free_port()
    first = start(bare, state, port)
    try:
        wait_for(lambda: started(state) if (state / "simulator.db").exists() else None)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    before = started(state)
    assert 0 < len(before) < 6, before  # stopped part way: some machines not started

    port = free_port()
    second = start(bare, state, port)
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
        )

        def all_ready() -> bool:
            resources = client.get("/api/v1/resources").json()["resources"]
            return len(resources) == 6 and {r["phase"] for r in resources} == {"Ready"}

        wait_for(all_ready, timeout=30)
        client.close()
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err

    after = started(state)
    by_key = Counter(e["idempotency_key"] for e in after)
    assert set(by_key.values()) == {1}
    by_action = Counter((e["key"], e["action"]) for e in after)
    assert by_action == {(f"Machine/m{i:02d}", "install-os"): 1 for i in range(6)}
