"""A graceful stop resumes exactly like a crash: SIGTERM and SIGINT to `apply` and `run`.

A real `reconciler apply` / `reconciler run` runs a plan of slow work against a local
HTTP service on 127.0.0.1 that counts, per `Idempotency-Key`, the jobs it was asked
to start (each a long-running operation: 202 and a Location, done after a while),
and a command task that appends its idempotency key to a file when it completes.
The process is signalled while work is in flight, then started again. Asserted on
the other side: no job started twice, no key the restart made up (the keys of the
stopped plan are reused), every command's effect exactly once, and the journal
saying what stopped the plan.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import Fleet

pytestmark = pytest.mark.slow

MACHINES = 6
JOB_SECONDS = 1.2


@dataclass
class Jobs:
    """The service's own records: jobs started per key, and when each finishes."""

    started: Counter[str] = field(default_factory=Counter)
    done_at: dict[str, float] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


def serve_jobs() -> tuple[Jobs, ThreadingHTTPServer]:
    jobs = Jobs()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get("Idempotency-Key") or ""
            with jobs.lock:
                job = jobs.by_key.get(key)
                if job is None:  # a new job: the effect happens once per key
                    job = uuid.uuid4().hex
                    jobs.by_key[key] = job
                    jobs.started[key] += 1
                    jobs.done_at[job] = time.monotonic() + JOB_SECONDS
            self._send(202, {"status": "running"}, {"Location": f"/jobs/{job}"})

        def do_GET(self) -> None:
            job = self.path.rsplit("/", 1)[-1]
            with jobs.lock:
                done_at = jobs.done_at.get(job)
            if done_at is None:
                self._send(404, {"status": "failed"})
            else:
                finished = time.monotonic() >= done_at
                self._send(200, {"status": "succeeded" if finished else "running"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    jobs.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return jobs, server


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    found, server = serve_jobs()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


def repo(url: str, effects: Path) -> dict[str, str]:
    machines = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: m{i}}}\n"
        "spec: {provider: sim, pipeline: slow}\n"
        for i in range(MACHINES)
    )
    stages = f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: provision}}
spec:
  work:
    - name: job
      type: http
      method: POST
      url: {url}/jobs
      body: {{machine: "${{resource.name}}"}}
      poll: {{interval: 0.2s}}
      timeout: 2m
    - name: mark
      type: command
      argv: [sh, -c, 'sleep 0.5; echo "$RECONCILER_IDEMPOTENCY_KEY" >> {effects}']
"""
    return {
        "providers.yaml": (
            "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
            "spec: {type: simulator, limits: {concurrency: 2}}\n"
        ),
        "stages.yaml": stages,
        "pipelines.yaml": (
            "apiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: slow}\n"
            "spec: {steps: [{stage: provision}]}\n"
        ),
        "machines.yaml": machines,
    }


def wait_until(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.02)


def keys_in_journal(fleet: Fleet) -> set[str]:
    return {t["idempotency_key"] for t in fleet.journal_tasks()}


def check_exactly_once(fleet: Fleet, jobs: Jobs, effects: Path, keys_before: set[str]) -> None:
    assert jobs.started and max(jobs.started.values()) == 1, jobs.started  # no job twice
    assert len(jobs.started) == MACHINES
    marks = Counter(effects.read_text().split())
    assert len(marks) == MACHINES and max(marks.values()) == 1, marks  # each effect once
    # The restart made up no key: every key the stopped plan had used is still its own,
    # and only one plan ever ran.
    assert keys_before <= keys_in_journal(fleet)
    assert len(keys_in_journal(fleet)) == MACHINES * 2
    assert [p["state"] for p in fleet.journal_plans()] == ["reported"]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_apply_lets_tasks_finish_and_the_next_resumes_with_the_same_keys(
    tmp_path: Path, jobs: Jobs, sig: signal.Signals, code: int
) -> None:
    effects = tmp_path / "effects.txt"
    effects.touch()
    fleet = Fleet.create(tmp_path, repo(jobs.url, effects))
    log = tmp_path / "apply.log"
    proc = fleet.start("apply", "--grace", "30s", log=log)
    try:
        wait_until(lambda: len(jobs.started) >= 2)  # two resources in flight
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert f"stopped by {sig.name}" in text and "Traceback" not in text
    assert "resumes plan" in text
    (plan,) = fleet.journal_plans()
    assert (plan["state"], plan["stopped"]) == ("running", sig.name)
    assert len(jobs.started) < MACHINES  # nothing new started after the signal
    tasks = fleet.journal_tasks()
    assert all(t["state"] == "finished" for t in tasks)  # what was in flight finished
    keys_before = keys_in_journal(fleet)

    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed an unfinished plan" in again.stdout
    check_exactly_once(fleet, jobs, effects, keys_before)


def test_a_second_signal_stops_apply_at_once_and_nothing_runs_twice(
    tmp_path: Path, jobs: Jobs
) -> None:
    effects = tmp_path / "effects.txt"
    effects.touch()
    fleet = Fleet.create(tmp_path, repo(jobs.url, effects))
    log = tmp_path / "apply.log"
    proc = fleet.start("apply", log=log)
    try:
        wait_until(lambda: len(jobs.started) >= 2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "in flight" in log.read_text()
    keys_before = keys_in_journal(fleet)
    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    # The jobs cut off were acknowledged (202 and a Location): polled, not started again.
    check_exactly_once(fleet, jobs, effects, keys_before)


def test_sigterm_to_run_is_resumed_by_the_next_start_with_the_same_keys(
    tmp_path: Path, jobs: Jobs
) -> None:
    effects = tmp_path / "effects.txt"
    effects.touch()
    fleet = Fleet.create(tmp_path, repo(jobs.url, effects))
    log = tmp_path / "run.log"
    port = free_port()
    proc = fleet.start("run", "--listen", f"127.0.0.1:{port}", "--interval", "1h", log=log)
    try:
        wait_until(lambda: len(jobs.started) >= 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    (plan,) = fleet.journal_plans()
    assert (plan["state"], plan["stopped"]) == ("running", "SIGTERM")
    keys_before = keys_in_journal(fleet)
    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    check_exactly_once(fleet, jobs, effects, keys_before)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
