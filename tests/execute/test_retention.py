"""Retention: the choice on literal values, the state directory it prunes, and `apply` doing it.

The middle test builds a state directory with the production parts (a `Journal`,
`TaskLog` files, an `OperationStore`) and prunes it; the last runs `reconciler
apply` as a process, three times at three revisions, with the settings a user
would set, and reads the journal, the logs folder and an operation store after.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from reconciler.execute.context import TaskResult
from reconciler.execute.journal import Journal
from reconciler.execute.retention import (
    FINAL_STATES,
    PlanAge,
    Retention,
    apply_retention,
    forgotten_plans,
)
from reconciler.execute.tasklog import TaskLog
from reconciler.model.status import Failure, ResourceStatus
from reconciler.providers.base import OperationPhase
from reconciler.providers.support import OperationRecord, OperationStore
from tests.conftest import ROOT
from tests.controller.server.conftest import declare, push, repo_files

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0


def age(name: str, state: str, days_ago: float, order: int) -> PlanAge:
    return PlanAge(name, state, NOW - timedelta(days=days_ago), order)


def test_the_newest_and_the_recent_and_the_unfinished_are_kept() -> None:
    plans = [
        age("old-1", "finished", 30, 1),
        age("old-2", "superseded", 20, 2),
        age("running", "running", 40, 3),
        age("executed", "executed", 40, 4),
        age("old-3", "finished", 10, 5),
        age("recent", "finished", 1, 6),
        age("newest", "reported", 9, 7),
    ]
    keep_two_for_a_week = Retention(plans_kept=2, max_age=7 * DAY)
    # By time, the two newest final plans are "recent" and "newest"; of the others,
    # only the ones past a week go; running and executed plans never do.
    assert forgotten_plans(plans, keep_two_for_a_week, NOW) == {"old-1", "old-2", "old-3"}
    assert forgotten_plans(plans, Retention(plans_kept=0, max_age=15 * DAY), NOW) == {
        "old-1",
        "old-2",
    }
    assert forgotten_plans(plans, Retention(plans_kept=10, max_age=0), NOW) == set()


@given(
    st.lists(
        st.tuples(st.sampled_from(["running", "executed", *sorted(FINAL_STATES)]),
                  st.floats(0, 100)),
        max_size=30,
    ),
    st.integers(0, 10),
    st.floats(0, 50),
)  # fmt: skip
def test_what_is_forgotten_is_final_old_and_beyond_the_count(
    rows: list[tuple[str, float]], kept: int, max_days: float
) -> None:
    plans = [age(f"p{i}", state, days, i) for i, (state, days) in enumerate(rows)]
    gone = forgotten_plans(plans, Retention(plans_kept=kept, max_age=max_days * DAY), NOW)
    by_name = {p.plan_hash: p for p in plans}
    final = [p for p in plans if p.state in FINAL_STATES]
    assert all(by_name[g].state in FINAL_STATES for g in gone)
    assert all(by_name[g].last_active < NOW - timedelta(days=max_days) for g in gone)
    assert len(final) - len(gone) >= min(kept, len(final))


def finished_plan(journal: Journal, name: str, state_dir: Path) -> str:
    """A plan recorded, one task run and logged, the plan finished; its task's key."""
    plan_hash = name * 64
    journal.record_plan(plan_hash, "rev", "{}")
    key = f"key-{name}"
    journal.mark_started(
        key, plan_hash=plan_hash, resource="Machine/m", stage="s", point="work", task="t"
    )
    journal.mark_finished(key, TaskResult("succeeded", "ok"))
    with TaskLog.open(state_dir, plan_hash, "Machine/m", "s", "t", point="work") as log:
        log.write("did it")
    journal.finish_plan(plan_hash)
    return key


def test_a_state_directory_keeps_what_plans_and_statuses_need(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    for name in "abcde":
        finished_plan(journal, name, tmp_path)
    running = "r" * 64
    journal.record_plan(running, "rev", "{}")  # unfinished: resumed by the next start
    journal.mark_started(
        "key-r", plan_hash=running, resource="Machine/m", stage="s", point="work", task="t"
    )
    journal.close()
    store = OperationStore(tmp_path / "http-api.db")
    done = OperationPhase.SUCCEEDED
    store.put(OperationRecord("op-old", "key-x", "Machine/m", "create", done, started_at=1.0))
    store.put(OperationRecord("op-busy", "key-y", "Machine/m", "create", started_at=1.0))
    store.put(OperationRecord("op-resume", "key-r", "Machine/m", "create", done, started_at=1.0))
    later = datetime.now(UTC) + timedelta(days=30)  # when retention runs: all plans are old
    store.put(OperationRecord("op-recent", "key-z", "Machine/m", "create", done,
                              started_at=(later - timedelta(days=1)).timestamp()))  # fmt: skip
    store.close()
    # A resource's status still points at the log of plan a (its last failure).
    log_of_a = next((tmp_path / "logs" / ("a" * 12)).rglob("*.log"))
    failed = ResourceStatus(
        kind="Machine", name="m", failure=Failure(stage="s", task="t", error="x", log=str(log_of_a))
    )

    pruned = apply_retention(
        tmp_path, Retention(plans_kept=2, max_age=7 * DAY), now=later, statuses={"m": failed}
    )

    db = sqlite3.connect(tmp_path / Journal.FILENAME)
    plans = {h[:1] for (h,) in db.execute("SELECT plan_hash FROM plans")}
    tasks = {k for (k,) in db.execute("SELECT idempotency_key FROM tasks")}
    assert plans == {"d", "e", "r"} and tasks == {"key-d", "key-e", "key-r"}
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["a" * 12, "d" * 12, "e" * 12]
    ops = sqlite3.connect(tmp_path / "http-api.db").execute("SELECT operation_id FROM operations")
    assert sorted(op for (op,) in ops) == ["op-busy", "op-recent", "op-resume"]
    assert (pruned.plans, pruned.tasks, pruned.log_folders, pruned.operations) == (3, 3, 2, 1)


def apply(bare: Path, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "reconciler", "--repo", str(bare), "--state-dir", str(state),
         "apply"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


def test_apply_keeps_the_journal_the_logs_and_the_operation_stores_bounded(
    tmp_path: Path,
) -> None:
    bare = declare(tmp_path, repo_files(2))
    state = tmp_path / "state"
    state.mkdir()
    store = OperationStore(state / "http-api.db")  # what an http provider left behind
    done = OperationPhase.SUCCEEDED
    store.put(OperationRecord("op-old", "key-x", "Machine/m00", "create", done, started_at=1.0))
    store.put(OperationRecord("op-busy", "key-y", "Machine/m00", "create", started_at=1.0))
    store.close()
    settings = {"RECONCILER_PLANS_KEPT": "1", "RECONCILER_RETENTION": "0s"}
    for os_name in ("ubuntu", "rhel", "ubuntu"):
        push(bare, repo_files(2, os_name=os_name), f"os {os_name}")
        done_run = apply(bare, state, **settings)
        assert done_run.returncode == 0, done_run.stderr[-2000:]

    db = sqlite3.connect(state / Journal.FILENAME)
    plans = [tuple(r) for r in db.execute("SELECT plan_hash, state FROM plans")]
    assert len(plans) == 1 and plans[0][1] in FINAL_STATES
    resources = {r for (r,) in db.execute("SELECT resource FROM tasks")}
    runs = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    assert resources == {"Machine/m00", "Machine/m01"} and runs == 2  # the last plan's only
    assert [p.name for p in (state / "logs").iterdir()] == [plans[0][0][:12]]
    ops = sqlite3.connect(state / "http-api.db").execute("SELECT operation_id FROM operations")
    assert [op for (op,) in ops] == ["op-busy"]

    # The same three applies keeping a day (another repository): nothing is let go.
    (tmp_path / "two").mkdir()
    bare = declare(tmp_path / "two", repo_files(2))
    kept = tmp_path / "two" / "state"
    for os_name in ("rhel", "ubuntu", "rhel"):
        push(bare, repo_files(2, os_name=os_name), f"os {os_name}")
        done_run = apply(bare, kept, RECONCILER_PLANS_KEPT="1", RECONCILER_RETENTION="1d")
        assert done_run.returncode == 0, done_run.stderr[-2000:]
    count = sqlite3.connect(kept / Journal.FILENAME).execute("SELECT COUNT(*) FROM plans")
    assert count.fetchone()[0] == 3
    assert len(list((kept / "logs").iterdir())) == 3
