"""Pure pieces: webhook verification, event mapping; the scheduler's coalescing with a fake."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.controller.controller import CycleResult
from reconciler.controller.cycle import AtHead, CycleScope
from reconciler.controller.scheduler import Operations, Scheduler, UnknownProvider, event_resources
from reconciler.controller.webhooks import hmac_signature, receive, verify
from reconciler.load.load import load_files
from reconciler.settings import Settings
from reconciler.source import SourceResult
from tests.controller.server.conftest import repo_files

SECRET = "s3cret-value"


def test_github_signature_is_hmac_of_the_exact_body() -> None:
    body = b'{"ref": "refs/heads/main"}'
    good = {"X-Hub-Signature-256": hmac_signature(SECRET, body)}
    assert verify("github", SECRET, good, body)
    assert not verify("github", SECRET, good, body + b" ")
    assert not verify("github", SECRET, {"x-hub-signature-256": "sha1=abc"}, body)
    assert not verify("github", None, good, body)
    assert verify("gitlab", SECRET, {"x-gitlab-token": SECRET}, b"")
    assert not verify("gitlab", SECRET, {"x-gitlab-token": SECRET[:-1]}, b"")


@pytest.mark.parametrize(
    ("payload", "verdict"),
    [
        ({"ref": "refs/heads/main"}, "push"),
        ({"ref": "refs/heads/feature"}, "ignored"),
        ({"ref": "refs/tags/v1"}, "ignored"),
    ],
)
def test_only_the_tracked_branch_counts(payload: dict[str, str], verdict: str) -> None:
    body = json.dumps(payload).encode()
    headers = {"X-Hub-Signature-256": hmac_signature(SECRET, body), "X-GitHub-Event": "push"}
    assert receive("github", SECRET, headers, body, branch="main").verdict == verdict
    assert receive("github", SECRET, headers, body, branch="main", pinned=True).verdict == "push"


def test_ping_and_no_secret() -> None:
    body = b"{}"
    headers = {"X-Hub-Signature-256": hmac_signature(SECRET, body), "X-GitHub-Event": "ping"}
    assert receive("github", SECRET, headers, body, branch="main").verdict == "ignored"
    assert receive("github", None, headers, body, branch="main").verdict == "refused"


def test_event_payloads_map_to_the_providers_resources() -> None:
    files = {k: v.encode() for k, v in repo_files(3).items()}
    desired = load_files(files).desired
    assert desired is not None
    assert event_resources(desired, {}, "sim", {"resource": "Machine/m01"}) == {"Machine/m01"}
    assert event_resources(desired, {}, "sim", {"kind": "Machine", "name": "m02"}) == {
        "Machine/m02"
    }
    assert event_resources(desired, {}, "sim", {"name": "m00"}) == {"Machine/m00"}
    assert event_resources(desired, {}, "sim", {"serial": "SN02"}) == {"Machine/m02"}
    assert event_resources(desired, {}, "sim", {"resource": "Machine/other"}) == set()
    with pytest.raises(UnknownProvider):
        event_resources(desired, {}, "aws", {"name": "m00"})


def test_operations_are_bounded() -> None:
    ops = Operations(limit=3)
    made = [ops.new("sync") for _ in range(5)]
    assert len(ops) == 3
    assert ops.get(made[0].id) is None
    assert ops.get(made[-1].id) is not None


def test_operations_forget_finished_ones_before_unfinished() -> None:
    forgotten: list[str] = []
    ops = Operations(limit=3, on_forget=forgotten.append)
    pending, done, running = (ops.new(t) for t in ("sync", "event:sim", "webhook:github"))
    ops.update([done.id], phase="succeeded", finished=datetime.now(UTC))
    ops.update([running.id], phase="running", started=datetime.now(UTC))
    newest = ops.new("event:sim")
    assert forgotten == [done.id]  # the sync still pending is kept although older
    assert ops.get(pending.id) is not None
    ops.new("schedule")  # nothing finished is left: the oldest goes
    assert forgotten == [done.id, pending.id]
    assert [o.id for o in ops.recent()][1:] == [newest.id, running.id]


class FakeController:
    """Cycles that last until released, counted: to see coalescing without Git."""

    instances: list[FakeController] = []

    def __init__(self, settings: Settings, **_: Any) -> None:
        self.cycles = 0
        self.asked: list[tuple[bool, frozenset[str]]] = []
        self.holds: list[bool] = []
        self.release = threading.Event()
        self.running = threading.Event()
        self.source = type("S", (), {"mirror": type("M", (), {"exists": False})()})()
        FakeController.instances.append(self)

    async def reconcile(self, scope: CycleScope) -> CycleResult:
        assert isinstance(scope, AtHead)  # the scheduler's cycles are at the head
        self.cycles += 1
        self.asked.append((scope.full, scope.also))
        self.holds.append(scope.hold_failures)
        self.running.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        self.release.clear()
        return CycleResult(source=SourceResult(revision=None, load=None, head=None))

    def request_stop(self, reason: str) -> None:
        self.release.set()

    def close(self) -> None:
        return


def test_requests_during_a_cycle_queue_one_follow_up(tmp_path: Path) -> None:
    settings = Settings(repo=str(tmp_path), state_dir=tmp_path, interval=3600.0)
    scheduler = Scheduler(settings, controller_factory=FakeController)
    scheduler.start()  # requests the startup cycle
    fake = FakeController.instances[-1]
    try:
        assert fake.running.wait(5)
        ops = [scheduler.request_cycle("sync") for _ in range(20)]
        assert all(op is not None for op in ops)
        fake.running.clear()
        fake.release.set()  # the startup cycle ends; ONE follow-up runs for all 20
        assert fake.running.wait(5)
        fake.release.set()
        ids = [op.id for op in ops if op is not None]

        def phases() -> set[str]:
            return {op.phase for op in map(scheduler.operations.get, ids) if op is not None}

        for _ in range(250):
            if phases() == {"failed"}:  # finished: without a revision a cycle is not ok
                break
            time.sleep(0.02)
        assert phases() == {"failed"}
        assert fake.cycles == 2
    finally:
        assert scheduler.stop("test over", timeout=5)
    assert scheduler.request_cycle("sync") is None


def test_only_cycles_the_clock_alone_asked_for_hold_failures_back(tmp_path: Path) -> None:
    settings = Settings(repo=str(tmp_path), state_dir=tmp_path, interval=3600.0)
    scheduler = Scheduler(settings, controller_factory=FakeController)
    scheduler.start()  # the startup cycle: someone started the controller, try everything
    fake = FakeController.instances[-1]
    try:
        for triggers in (["schedule"], ["schedule", "sync"], ["webhook:github"]):
            assert fake.running.wait(5)
            fake.running.clear()
            for trigger in triggers:
                scheduler.request_cycle(trigger)
            fake.release.set()
        assert fake.running.wait(5)
        fake.release.set()
        assert fake.holds == [False, True, False, False]
    finally:
        assert scheduler.stop("test over", timeout=5)


def test_a_cycle_plans_the_waiting_events_and_is_full_after_events_were_shed(
    tmp_path: Path,
) -> None:
    settings = Settings(
        repo=str(tmp_path),
        state_dir=tmp_path,
        interval=3600.0,
        event_queue_size=2,
        event_debounce=3600.0,
        event_max_delay=3600.0,
    )
    scheduler = Scheduler(settings, controller_factory=FakeController)
    scheduler.start()
    fake = FakeController.instances[-1]
    try:
        assert fake.running.wait(5)
        first = scheduler.request_resources({"Machine/a", "Machine/b"})
        assert first.queued == ("Machine/a", "Machine/b")
        fake.running.clear()
        scheduler.request_cycle("webhook:github")
        fake.release.set()  # startup cycle ends; the follow-up covers a and b
        assert fake.running.wait(5)
        fake.running.clear()
        assert fake.asked[-1] == (False, frozenset({"Machine/a", "Machine/b"}))

        scheduler.request_resources({"Machine/c", "Machine/d"})
        shed = scheduler.request_resources({"Machine/e"})
        assert shed.shed == ("Machine/e",)
        scheduler.request_cycle("sync")
        fake.release.set()
        assert fake.running.wait(5)
        fake.running.clear()
        assert fake.asked[-1] == (True, frozenset({"Machine/c", "Machine/d"}))

        scheduler.request_cycle("sync")  # the full cycle recovered the shed: back to normal
        fake.release.set()
        assert fake.running.wait(5)
        assert fake.asked[-1] == (False, frozenset())
        fake.release.set()
    finally:
        assert scheduler.stop("test over", timeout=5)
