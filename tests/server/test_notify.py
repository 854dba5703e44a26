"""Notifications on transitions only: pure transitions and ledger, then end to end on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.notify import Ledger, Transition, transitions
from reconciler.providers.simulator import SimulatorProvider
from reconciler.status import ResourceStatus, set_condition
from reconciler.webhooks import hmac_signature
from tests.server.conftest import declare, repo_files, running, settings_for

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
    # Resolved: the same failure again is a new alert; and the ledger survives a restart.
    assert Ledger(tmp_path / "ledger.json").decide(other, NOW).send


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
