"""The journal's API and crash semantics (real SIGKILL), run_journaled, and the lease."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.errors import PermanentError
from reconciler.execute import (
    Journal,
    Lease,
    LeaseHeld,
    TaskResult,
    idempotency_key,
    run_journaled,
)
from tests.servers.fake_http import ApiServer

from .conftest import assert_no_canary, child_env, make_ctx, task

PLAN = "a" * 64


def test_idempotency_key_is_stable_and_distinct() -> None:
    key = idempotency_key(PLAN, "Machine/m1", "install-os", "install")
    assert key == idempotency_key(PLAN, "Machine/m1", "install-os", "install")
    assert len(key) == 64 and int(key, 16) >= 0
    others = {
        idempotency_key("b" * 64, "Machine/m1", "install-os", "install"),
        idempotency_key(PLAN, "Machine/m2", "install-os", "install"),
        idempotency_key(PLAN, "Machine/m1", "install-app", "install"),
        idempotency_key(PLAN, "Machine/m1", "install-os", "verify"),
        idempotency_key(PLAN, "Machine/m1", "install-os", "install", "post-notify"),
    }
    assert key not in others and len(others) == 5


def test_plan_lifecycle(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        assert journal.unfinished_plan() is None
        journal.record_plan(PLAN, "rev1", '{"actions": []}')
        journal.record_plan(PLAN, "rev1", '{"actions": []}')  # resuming: a no-op
        assert journal.unfinished_plan() == (PLAN, '{"actions": []}')
        with pytest.raises(PermanentError, match="still running"):
            journal.record_plan("b" * 64, "rev2", "{}")
        journal.supersede_plan(PLAN, "revision rev2 declared")
        row = journal.plan(PLAN)
        assert row is not None and row.state == "superseded" and row.reason
        journal.record_plan("b" * 64, "rev2", "{}")
        journal.finish_plan("b" * 64)
        assert journal.unfinished_plan() is None
        mode = journal._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_task_states(tmp_path: Path) -> None:
    key = idempotency_key(PLAN, "Machine/m1", "s", "t")
    with Journal.open(tmp_path) as journal:
        journal.mark_started(
            key, plan_hash=PLAN, resource="Machine/m1", stage="s", point="work", task="t"
        )
        assert journal.task_state(key).state == "started"  # type: ignore[union-attr]
        journal.mark_acknowledged(key, "http://x/op/1")
        journal.mark_progress(key, attempts=2, note="running 40%")
        journal.mark_started(
            key, plan_hash=PLAN, resource="Machine/m1", stage="s", point="work", task="t"
        )
        row = journal.task_state(key)
        assert row is not None
        assert (row.state, row.operation_id, row.attempts, row.runs) == (
            "acknowledged",
            "http://x/op/1",
            2,
            2,
        )
        journal.mark_finished(key, TaskResult("failed", "boom", attempts=3))
        row = journal.task_state(key)
        assert row is not None and row.state == "finished" and row.error == "boom"
        assert row.result == TaskResult("failed", "boom", attempts=3)
        assert [r.idempotency_key for r in journal.tasks(PLAN)] == [key]


WRITER = """
import sys
from pathlib import Path
from reconciler.execute import Journal, TaskResult, idempotency_key
journal = Journal.open(Path(sys.argv[1]))
journal.record_plan("a" * 64, "rev", "{}")
i = 0
while True:
    key = idempotency_key("a" * 64, f"Machine/m{i}", "s", "t")
    journal.mark_started(key, plan_hash="a" * 64, resource=f"Machine/m{i}", stage="s",
                         point="work", task="t")
    journal.mark_acknowledged(key, f"op-{i}")
    journal.mark_finished(key, TaskResult("succeeded", "ok", {"i": i}, f"op-{i}"))
    print(i, flush=True)
    i += 1
"""


def test_sigkill_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    assert child.stdout is not None
    reported = -1
    for line in child.stdout:
        reported = int(line)
        if reported >= 300:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    with Journal.open(tmp_path) as journal:
        assert journal._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = journal.tasks(PLAN)
        finished = [r for r in rows if r.state == "finished"]
        # every finish the writer reported is there, with its result
        assert len(finished) >= reported + 1
        assert all(r.result is not None and r.result.ok for r in finished)
        # at most the one task in flight is not finished, and it is in a valid state
        unfinished = [r for r in rows if r.state != "finished"]
        assert len(unfinished) <= 1
        assert journal.unfinished_plan() is not None  # the plan is resumed, not lost


RUNNER = """
import asyncio, sys
from pathlib import Path
from reconciler.execute import Journal, TaskContext, run_journaled
from pydantic import TypeAdapter
from reconciler.model.tasks import Task
task = TypeAdapter(Task).validate_python({
    "name": "create", "type": "http", "url": sys.argv[2], "body": {"x": 1},
    "poll": {"interval": 0.02}, "timeout": 60})
ctx = TaskContext(resource_key="Machine/m1", resource_kind="Machine", resource_name="m1",
                  idempotency_key=sys.argv[3], plan_hash="a" * 64, stage="s", point="work")
asyncio.run(run_journaled(Journal.open(Path(sys.argv[1])), task, ctx, state_dir=Path(sys.argv[1])))
"""


def _wait_for_row_state(path: Path, key: str, state: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    db = path / Journal.FILENAME
    while time.monotonic() < end:
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    row = conn.execute(
                        "SELECT state FROM tasks WHERE idempotency_key = ?", (key,)
                    ).fetchone()
                if row and row[0] == state:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"task never reached {state}")


def test_acknowledged_operation_is_polled_not_reissued_after_sigkill(
    api: ApiServer, tmp_path: Path
) -> None:
    key = idempotency_key(PLAN, "Machine/m1", "s", "create", "work")
    url = f"{api.url}/jobs?polls=40"
    child = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path), url, key], env=child_env()
    )
    try:
        _wait_for_row_state(tmp_path, key, "acknowledged")
        time.sleep(0.1)  # let it poll a little
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    polls_before = len(api.requests("GET", "/jobs/ops/"))
    assert polls_before < 40  # killed mid-operation

    t = task(name="create", type="http", url=url, body={"x": 1}, poll={"interval": 0.02})
    ctx = make_ctx(idempotency_key=key, plan_hash=PLAN, stage="s", point="work")
    with Journal.open(tmp_path) as journal:
        result = asyncio.run(run_journaled(journal, t, ctx, state_dir=tmp_path))
        assert result.ok, result.message
        assert len(api.requests("POST", "/jobs")) == 1  # never re-issued
        assert len(api.requests("GET", "/jobs/ops/")) > polls_before
        row = journal.task_state(key)
        assert row is not None and row.state == "finished" and row.runs == 2
        # finished: a third run does nothing at all
        requests_so_far = len(api.received)
        again = asyncio.run(run_journaled(journal, t, ctx, state_dir=tmp_path))
        assert again == result and len(api.received) == requests_so_far
    log = Path(result.log_path or "")
    assert "resuming operation" in log.read_text()


def test_started_but_not_acknowledged_is_retried_with_the_same_key(
    api: ApiServer, tmp_path: Path
) -> None:
    key = idempotency_key(PLAN, "Machine/m1", "s", "create", "work")
    t = task(
        name="create",
        type="http",
        url=f"{api.url}/jobs?polls=1&fail=500",
        body={"password": "${params.token}"},
        poll={"interval": 0.02},
        retry={"attempts": 3, "initialBackoff": 0.01},
    )
    notes: list[tuple[int, str]] = []
    ctx = make_ctx(
        idempotency_key=key,
        plan_hash=PLAN,
        stage="s",
        point="work",
        on_progress=lambda attempts, note: notes.append((attempts, note)),
    )
    with Journal.open(tmp_path) as journal:
        # a crash right after mark_started, before any answer
        journal.mark_started(
            key, plan_hash=PLAN, resource="Machine/m1", stage="s", point="work", task="create"
        )
        result = asyncio.run(run_journaled(journal, t, ctx, state_dir=tmp_path))
    assert result.ok, result.message
    posts = api.requests("POST", "/jobs")
    assert [p.headers["Idempotency-Key"] for p in posts] == [key, key]
    assert notes[0][0] == 2 and "attempt 1 failed" in notes[0][1] and "500" in notes[0][1]
    assert any("accepted" in note for _, note in notes[1:])
    with Journal.open(tmp_path) as journal:
        row = journal.task_state(key)
        assert row is not None and row.attempts == 2 and row.progress
    assert_no_canary(tmp_path, result.to_json())


HOLDER = """
import sys, time
from pathlib import Path
from reconciler.execute import Lease
lease = Lease.acquire(Path(sys.argv[1]), holder="controller-A")
print("held", flush=True)
time.sleep(60)
"""


def test_lease_excludes_a_second_holder_and_survives_a_dead_one(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld) as info:
            Lease.acquire(tmp_path, holder="controller-B")
        assert "controller-A" in str(info.value) and f"pid {child.pid}" in str(info.value)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the dead holder's file is still there, but it blocks nobody
    assert json.loads((tmp_path / "lease").read_text())["pid"] == child.pid
    with Lease.acquire(tmp_path, holder="controller-B") as lease:
        assert lease.holder["pid"] == os.getpid()
        assert json.loads((tmp_path / "lease").read_text())["holder"] == "controller-B"
    with Lease.acquire(tmp_path, holder="controller-C"):
        pass


def test_acknowledged_at_keeps_the_first_acknowledgement(tmp_path: Path) -> None:
    """A resumed task acknowledges again; the record keeps when the remote first accepted."""
    key = idempotency_key(PLAN, "Machine/m1", "s", "ack")
    with Journal.open(tmp_path) as journal:
        journal.mark_started(
            key, plan_hash=PLAN, resource="Machine/m1", stage="s", point="work", task="ack"
        )
        journal.mark_acknowledged(key, "op-1")
        first = journal.task_state(key).acknowledged_at  # type: ignore[union-attr]
        time.sleep(0.01)
        journal.mark_acknowledged(key, "op-1")
        assert journal.task_state(key).acknowledged_at == first  # type: ignore[union-attr]
