"""Notifications on transitions only: pure transitions and ledger, then end to end on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.controller.notify import Ledger, Transition, transitions
from reconciler.controller.webhooks import hmac_signature
from reconciler.model.status import ResourceStatus, set_condition
from reconciler.providers.simulator import SimulatorProvider
from tests.controller.server.conftest import (
    ENV,
    TOKEN,
    declare,
    free_port,
    push,
    repo_files,
    running,
    settings_for,
)

NOW = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
SECRET = "notify-secret-0123456789"


def status(ready: str, *, failed: str | None = None, drifted: bool = False) -> ResourceStatus:
    conditions = set_condition((), "Ready", ready, "Reconciled", "ok", NOW)  # type: ignore[arg-type]
    if failed:
        conditions = set_condition(conditions, "Failed", "True", "TaskFailed", failed, NOW)
    if drifted:
        conditions = set_condition(conditions, "Drifted", "True", "DriftDetected", "os", NOW)
    return ResourceStatus(kind="Machine", name="m1", conditions=conditions)


def events(before: ResourceStatus | None, after: ResourceStatus) -> list[str]:
    return [
        t.event
        for t in transitions({"Machine/m1": before} if before else {}, {"Machine/m1": after})
    ]


def test_transitions_only_on_change() -> None:
    assert events(None, status("True")) == ["Ready"]
    assert events(status("True"), status("True")) == []
    assert events(status("True"), status("False", failed="boom")) == ["Failed"]
    assert events(status("False", failed="boom"), status("False", failed="boom")) == []
    assert events(status("False", failed="boom"), status("True")) == ["Ready"]
    assert events(status("True"), status("False", drifted=True)) == ["DriftDetected"]
    assert events(status("False", drifted=True), status("False", drifted=True)) == []
    assert events(status("False", drifted=True), status("True")) == ["Ready", "DriftCleared"]


def test_a_repeated_alert_is_counted_not_sent(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    failed = Transition("Machine/m1", "Failed", "TaskFailed", "stage os: boom")
    assert ledger.decide(failed, NOW).send
    again = ledger.decide(failed, NOW)
    assert not again.send and again.count == 2
    other = Transition("Machine/m1", "Failed", "TaskFailed", "stage os: another error")
    assert ledger.decide(other, NOW).send
    ready = ledger.decide(Transition("Machine/m1", "Ready", "Reconciled", "ok"), NOW)
    assert ready.send and ready.resolves == {"event": "Failed", "count": 1}
    # Resolved: the same failure again is a new alert.
    assert ledger.decide(other, NOW).send
    # Nothing is written until the cycle's end (`save`, once); then it survives a restart.
    assert not (tmp_path / "ledger.json").exists()
    ledger.save()
    again_later = Ledger(tmp_path / "ledger.json").decide(other, NOW)
    assert not again_later.send and again_later.count == 2


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["X-Reconciler-Signature-256"] == hmac_signature(SECRET, body)
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Hooks", (_Hooks,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_notifications_follow_transitions_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = hooks
    monkeypatch.setenv("RECONCILER_TEST_NOTIFY", SECRET)
    policy = f"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {{name: default}}
spec:
  notifications:
    - {{url: "{url}", secret: env:RECONCILER_TEST_NOTIFY}}
"""
    bare = declare(tmp_path, repo_files(2, policy=policy))
    state = tmp_path / "state"
    with running(settings_for(bare, state), monkeypatch) as api:
        api.idle()
        assert sorted((r["event"], r["resource"]["key"]) for r in received) == [
            ("Ready", "Machine/m00"),
            ("Ready", "Machine/m01"),
        ]
        received.clear()
        # Nothing changes: a new cycle sends nothing.
        assert api.operation(api.client.post("/api/v1/sync").json()["id"])["phase"] == "succeeded"
        assert received == []

        sim = SimulatorProvider.open(state, name="sim", repository=str(bare))
        sim.drift("Machine/m01", "params.os", "rhel")
        api.client.post("/api/v1/events/sim", json={"resource": "Machine/m01"})
        api.wait_for(lambda: received)
        assert [(r["event"], r["resource"]["key"]) for r in received] == [
            ("DriftDetected", "Machine/m01")
        ]
        api.client.post("/api/v1/events/sim", json={"resource": "Machine/m01"})
        api.wait_for(lambda: api.scheduler.reconciles["Machine/m01"] == 2)
        api.idle()
        assert len(received) == 1  # still drifted: no transition, nothing sent

        sim.drift("Machine/m01", "params.os", "ubuntu")
        api.client.post("/api/v1/events/sim", json={"resource": "Machine/m01"})
        api.wait_for(lambda: len(received) == 2)
        api.idle()
        # Ready again is the same alert as the first Ready (counted); DriftCleared is sent.
        assert [r["event"] for r in received] == ["DriftDetected", "DriftCleared"]
        assert received[1]["resolves"] == {"event": "DriftDetected", "count": 1}
        metrics = api.client.get("/metrics").text
        assert 'reconciler_notifications_total{event="Ready",result="repeated"} 1.0' in metrics
        assert 'reconciler_notifications_total{event="Ready",result="sent"} 2.0' in metrics


class Receiver(ThreadingHTTPServer):
    """A webhook target on 127.0.0.1 that can fail on demand (`fail_with` a status code)
    or hold every request until `release` is set; it counts requests in flight."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.lock = threading.Lock()
        self.fail_with: int | None = None
        self.release = threading.Event()
        self.release.set()
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.in_flight = 0
        self.most = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def events(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r["event"], r["resource"]["key"]) for r in self.received]


class _Receive(BaseHTTPRequestHandler):
    server: Receiver  # type: ignore[assignment]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.most = max(server.most, server.in_flight)
        server.release.wait(30)
        with server.lock:
            server.in_flight -= 1
            code = server.fail_with
            if code is None:
                server.received.append(json.loads(body))
            else:
                server.refused += 1
        self.send_response(code or 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def statuses(*names: str, failed: str | None = None) -> dict[str, ResourceStatus]:
    out = {}
    for name in names:
        ready = "False" if failed == name else "True"
        found = status(ready, failed="boom" if failed == name else None)
        out[f"Machine/{name}"] = found.model_copy(update={"name": name})
    return out


def target(url: str) -> Any:
    from reconciler.model.kinds import NotificationTarget

    return NotificationTarget.model_validate({"url": url})


def test_an_alert_that_could_not_be_sent_is_sent_after_the_next_cycle(
    tmp_path: Path, receiver: Receiver
) -> None:
    from reconciler.controller.notify import Notifier

    targets = [target(receiver.url)]
    receiver.fail_with = 503
    notifier = Notifier(tmp_path)
    asyncio.run(notifier.cycle_done(targets, {}, statuses("a", "b"), revision="r1"))
    assert receiver.events() == [] and receiver.refused == 2 * 3  # three tries each
    ledger = json.loads((tmp_path / "notifications.json").read_text())
    assert sorted((p["event"], p["resource"]) for p in ledger["pending"]) == [
        ("Ready", "Machine/a"),
        ("Ready", "Machine/b"),
    ]

    # The next cycle changes nothing; the target is back: both are sent, once, and
    # a restart in between loses nothing (a new Notifier reads the ledger).
    receiver.fail_with = None
    later = Notifier(tmp_path)
    same = statuses("a", "b")
    asyncio.run(later.cycle_done(targets, same, same, revision="r1"))
    assert sorted(receiver.events()) == [("Ready", "Machine/a"), ("Ready", "Machine/b")]
    asyncio.run(later.cycle_done(targets, same, same, revision="r1"))
    assert len(receiver.events()) == 2
    assert json.loads((tmp_path / "notifications.json").read_text())["pending"] == []


def test_a_resource_deleted_is_forgotten_by_the_ledger(tmp_path: Path, receiver: Receiver) -> None:
    from reconciler.controller.notify import Notifier

    targets = [target(receiver.url)]
    notifier = Notifier(tmp_path)
    asyncio.run(notifier.cycle_done(targets, {}, statuses("a", "b", failed="b"), revision="r1"))
    receiver.fail_with = 503
    asyncio.run(notifier.cycle_done(targets, {}, statuses("c"), revision="r1"))
    ledger = json.loads((tmp_path / "notifications.json").read_text())
    assert sorted(ledger["alerts"]) == ["Machine/c|Ready"]
    assert [p["resource"] for p in ledger["pending"]] == ["Machine/c"]


def test_sends_are_bounded_in_concurrency_and_each_resource_in_order(
    tmp_path: Path, receiver: Receiver
) -> None:
    from reconciler.controller.notify import SEND_CONCURRENCY, Notifier

    names = [f"m{i:02d}" for i in range(3 * SEND_CONCURRENCY)]
    receiver.release.clear()
    notifier = Notifier(tmp_path)

    async def cycle() -> None:
        await notifier.cycle_done([target(receiver.url)], {}, statuses(*names), revision="r")

    def hold_then_release() -> None:
        deadline = time.monotonic() + 30
        while receiver.in_flight < SEND_CONCURRENCY and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # room for any POST beyond the bound to arrive
        receiver.release.set()

    releaser = threading.Thread(target=hold_then_release)
    releaser.start()
    asyncio.run(cycle())
    releaser.join()
    assert receiver.most == SEND_CONCURRENCY
    assert len(receiver.events()) == len(names)


def run_process(bare: Path, state: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **ENV,
        "RECONCILER_TEST_NOTIFY": SECRET,
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        "RECONCILER_API_TOKEN": "env:RECONCILER_TEST_TOKEN",
        "RECONCILER_INTERVAL_JITTER": "0s",
    }
    argv = [sys.executable, "-m", "reconciler", "--repo", str(bare), "--state-dir", str(state),
            "--listen", f"127.0.0.1:{port}", "--interval", "1h", "run"]  # fmt: skip
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_run_sends_again_what_a_failing_target_missed_and_forgets_deleted_resources(
    tmp_path: Path, receiver: Receiver
) -> None:
    policy = f"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {{name: default}}
spec:
  notifications:
    - {{url: "{receiver.url}", secret: env:RECONCILER_TEST_NOTIFY}}
"""
    bare = declare(tmp_path, repo_files(2, policy=policy))
    state = tmp_path / "state"
    ledger = state / "notifications.json"
    receiver.fail_with = 503  # the chat service is down when the machines become Ready
    port = free_port()
    process = run_process(bare, state, port)
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
    )

    def pending() -> list[tuple[str, str]]:
        if not ledger.exists():
            return []
        data = json.loads(ledger.read_text())
        return sorted((p["event"], p["resource"]) for p in data.get("pending", []))

    def synced() -> None:
        op = client.post("/api/v1/sync").json()["id"]
        finished = ("succeeded", "failed")
        wait(lambda: client.get(f"/api/v1/operations/{op}").json()["phase"] in finished)

    try:
        wait(lambda: pending() == [("Ready", "Machine/m00"), ("Ready", "Machine/m01")])
        assert receiver.events() == []
        receiver.fail_with = None  # back up: the next cycle (nothing changed) sends them
        synced()
        assert sorted(receiver.events()) == [("Ready", "Machine/m00"), ("Ready", "Machine/m01")]
        assert pending() == []
        synced()
        assert len(receiver.events()) == 2  # delivered once

        push(bare, repo_files(1, policy=policy), "Retire m01")
        synced()
        alerts = json.loads(ledger.read_text())["alerts"]
        assert sorted(alerts) == ["Machine/m00|Ready"]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-2000:]


def wait(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError, ValueError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")
