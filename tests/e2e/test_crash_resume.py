"""Crash test: `kill -9` a real `reconciler apply` at random points; no work repeated or lost.

An apply of 50 machines (5 provider actions each, 0.3 s per operation) against
the simulator is killed with SIGKILL several times — at points drawn from a seeded
RNG, measured in actions the simulator has seen start, plus a random delay — and
restarted until an apply completes. Then, from the records alone:

- the simulator's action log: every action of every machine started exactly once
  and succeeded (nothing executed twice, nothing lost), and none was issued again
  after the journal recorded its acknowledgement (it is polled instead);
- the journal: one plan, resumed across the restarts (tasks re-entered under the
  same idempotency keys) and finished, not superseded; every simulator operation
  belongs to it;
- the status branch: every machine Ready, at the last stage, with the observed
  fields every stage converges.

A kill in the window after the last task but before the status commit is tested
on its own (the plan is resumed from the journal and its stages and audit are
reported). `exactly_once_problems` is the assertion;
`test_checker_catches_a_resume_that_repeats_work` shows it fails on a real run
whose interrupted plan is not resumed.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.support import Fleet, git_texts

pytestmark = pytest.mark.slow

MACHINES = 50
ACTIONS = ("set-boot", "power-on", "install-os", "install-app", "configure")
TASKS_PER_MACHINE = len(ACTIONS) + 1  # and one wait-for
KILLS = 5
SEED = int(os.environ.get("RECONCILER_CRASH_SEED", "20261129"))  # explore: set another


def crash_repo(machines: int = MACHINES) -> dict[str, str]:
    """50 machines, 3 stages (one validated by a wait-for), every 10th depending on another."""
    machine_docs = []
    for i in range(machines):
        depends = f"\n  dependsOn: [node{i - 1:02d}]" if i % 10 == 9 else ""
        machine_docs.append(
            f"apiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: node{i:02d}}}\n"
            f"spec:\n  provider: sim\n  pipeline: node\n  params: {{os: ubuntu}}{depends}\n"
        )
    return {
        "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec:
  type: simulator
  settings: {latency: "0.3s"}
  limits: {concurrency: 20}
""",
        "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: power}
spec:
  converges: [params.power]
  work:
    - {name: set-pxe, type: provider, action: set-boot, args: {device: pxe}}
    - name: power-on
      type: provider
      action: power-on
      args: {set: {params.power: "${params.power}"}}
  validate:
    - name: powered
      type: wait-for
      interval: 0.1s
      condition: {field: power, equals: ["on"]}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  converges: [params.os]
  work:
    - {name: install, type: provider, action: install-os, args: {os: "${params.os}"}}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-app}
spec:
  converges: [params.application, params.tuned]
  work:
    - name: install
      type: provider
      action: install-app
      args: {application: "${params.application}"}
    - {name: tune, type: provider, action: configure, args: {tuned: "${params.tuned}"}}
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: node}
spec:
  inputs:
    - {name: os, required: true}
    - {name: application, default: web}
    - {name: tuned, default: "yes"}
    - {name: power, default: "on"}
  steps:
    - stage: power
    - stage: install-os
    - stage: install-app
""",
        "machines.yaml": "---\n".join(machine_docs),
    }


def exactly_once_problems(fleet: Fleet, machines: int = MACHINES) -> list[str]:
    """Everything the records show was executed twice, lost, or not resumed (empty: none)."""
    problems: list[str] = []
    log = fleet.action_log()
    started = [e for e in log if e["event"] == "started"]
    per_key = Counter(e["idempotency_key"] for e in started)
    problems += [f"idempotency key {k[:12]} started {n} times" for k, n in per_key.items() if n > 1]
    per_action = Counter((e["key"], e["action"]) for e in started)
    for i in range(machines):
        for action in ACTIONS:
            n = per_action[(f"Machine/node{i:02d}", action)]
            if n != 1:
                problems.append(f"Machine/node{i:02d}: {action} started {n} times")
    ends = ("succeeded", "failed", "cancelled")
    ended = {e["operation_id"]: e["event"] for e in log if e["event"] in ends}
    for e in started:
        if ended.get(e["operation_id"]) != "succeeded":
            problems.append(f"{e['key']}: {e['action']} ended {ended.get(e['operation_id'])}")

    # The journal: the interrupted plan was resumed (same execution, same keys), not replaced.
    plans = fleet.journal_plans()
    if [p["state"] for p in plans] != ["reported"]:
        problems.append(f"journal plans: {[(p['state'], p['reason']) for p in plans]}")
    tasks = fleet.journal_tasks()
    by_task = Counter((t["resource"], t["stage"], t["point"], t["task"]) for t in tasks)
    problems += [f"task {t} journaled under {n} keys" for t, n in by_task.items() if n > 1]
    journaled = {t["idempotency_key"]: t for t in tasks}
    problems += [
        f"{e['key']}: {e['action']} started under a key the journal does not know"
        for e in started
        if e["idempotency_key"] not in journaled
    ]
    # Once the journal holds an operation's acknowledgement, it is polled, never issued
    # again; a repeat under the same key may only come before (a crash in between).
    for e in started:
        row = journaled.get(e["idempotency_key"])
        if row is not None and row["acknowledged_at"] is None:
            problems.append(f"{e['key']}: {e['action']} never acknowledged in the journal")
    for e in (e for e in log if e["event"] == "repeated"):
        row = journaled.get(e["idempotency_key"])
        acked = row and row["acknowledged_at"] and datetime.fromisoformat(row["acknowledged_at"])
        if acked and e["at"] > acked.timestamp() + 0.001:
            problems.append(f"{e['key']}: {e['action']} issued again after its acknowledgement")
    unfinished = [t for t in tasks if t["state"] != "finished" or t["error"]]
    problems += [f"journal task not done: {t['resource']} {t['task']}" for t in unfinished]
    if len(tasks) != machines * TASKS_PER_MACHINE:
        problems.append(f"journal has {len(tasks)} tasks, not {machines * TASKS_PER_MACHINE}")
    return problems


def apply_until_done(fleet: Fleet, log: Path, attempts: int = 3) -> str:
    """Restart `apply` until one completes; its output."""
    for _ in range(attempts):
        done = fleet.run("apply")
        with log.open("a") as out:
            out.write(done.stdout + done.stderr)
        if done.returncode == 0:
            return done.stdout
    raise AssertionError(f"apply did not complete in {attempts} runs:\n{log.read_text()[-3000:]}")


def kill_when(fleet: Fleet, started: int, delay: float, log: Path) -> int:
    """Start `apply`, SIGKILL it `delay` s after the simulator saw `started` actions start."""
    proc = fleet.start("apply", log=log)
    try:
        deadline = time.monotonic() + 60
        while fleet.started_actions() < started and proc.poll() is None:
            assert time.monotonic() < deadline, "apply made no progress"
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        proc.kill()  # SIGKILL: no handler runs, no cleanup
        proc.wait()
    return proc.returncode


def test_kill_9_at_random_points_repeats_and_loses_nothing(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, crash_repo())
    rng = random.Random(SEED)
    total = MACHINES * len(ACTIONS)
    # Kill points: 4 inside the execution, the last one after every action started
    # (as the plan finishes, the status is written, or the process has exited).
    points = [*sorted(rng.sample(range(1, total - MACHINES), KILLS - 1)), total]
    log = tmp_path / "apply.log"
    codes = []
    for point in points:
        delay = rng.uniform(0.0, 0.4) if point < total else rng.uniform(0.2, 1.5)
        codes.append(kill_when(fleet, point, delay, log))
    assert codes[: KILLS - 1] == [-9] * (KILLS - 1), "every kill inside the execution landed"

    output = apply_until_done(fleet, log)

    assert exactly_once_problems(fleet) == []
    tasks = fleet.journal_tasks()
    assert any(t["runs"] > 1 for t in tasks), "some tasks were re-entered after a kill"
    assert "resumed an unfinished plan" in log.read_text()
    assert f"In sync: {MACHINES} resources" in output  # the last run made no new plan
    statuses = json.loads(fleet.run("status", "--output", "json").stdout)
    assert len(statuses) == MACHINES
    for key, status in statuses.items():
        assert status["phase"] == "Ready", (key, status["conditions"])
        assert status["stageReached"] == "install-app", key
        observed = status["observed"]
        assert observed["power"] == "on" and observed["bootDevice"] == "disk", key
        params = {k: observed["params"].get(k) for k in ("power", "os", "application", "tuned")}
        assert params == {"power": "on", "os": "ubuntu", "application": "web", "tuned": "yes"}
    # A second apply finds nothing to do and starts nothing.
    before = fleet.started_actions()
    again = fleet.run("apply")
    assert again.returncode == 0 and "In sync: 50 resources" in again.stdout, again.stdout
    assert fleet.started_actions() == before


def test_checker_catches_a_resume_that_repeats_work(tmp_path: Path) -> None:
    """A controller that drops the interrupted plan instead of resuming it re-runs the
    stage that was half done (a new plan, new keys): the assertion above sees it."""
    machines = 5
    fleet = Fleet.create(tmp_path, crash_repo(machines))
    log = tmp_path / "apply.log"
    assert kill_when(fleet, 1, 0.0, log) == -9
    with sqlite3.connect(fleet.state / "journal.sqlite") as db:  # forget the plan
        db.execute("UPDATE plans SET state = 'superseded', reason = 'test: not resumed'")
    apply_until_done(fleet, log)

    problems = exactly_once_problems(fleet, machines)
    assert any("set-boot started 2 times" in p for p in problems), problems
    assert any("journaled under 2 keys" in p for p in problems), problems
    assert any("superseded" in p for p in problems), problems


def test_a_kill_after_the_plan_ran_but_before_its_status_commit_still_reports_it(
    tmp_path: Path,
) -> None:
    """The window between the last task and the status commit: the plan stays
    unfinished in the journal until its status is committed, so the next run resumes
    it — from the journal alone, nothing runs again — and reports what it did."""
    machines = 10
    fleet = Fleet.create(tmp_path, crash_repo(machines))
    log = tmp_path / "apply.log"
    proc = fleet.start("apply", log=log)
    try:  # the executor logs plan.finished; then it observes, writes status, commits
        deadline = time.monotonic() + 60
        while '"event": "plan.finished"' not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, "apply ended early"
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.wait()
    assert sum(t["state"] == "finished" for t in fleet.journal_tasks()) == (
        machines * TASKS_PER_MACHINE
    )
    if fleet.status_commits():
        pytest.skip("the kill came after the status commit: the window was missed")
    # Every task ended: the plan is `executed`, its results wait in the journal.
    assert [p["state"] for p in fleet.journal_plans()] == ["executed"]
    started = fleet.started_actions()

    output = apply_until_done(fleet, log)

    assert "reported a plan that ended before from the journal" in output
    assert fleet.started_actions() == started  # nothing ran again
    assert exactly_once_problems(fleet, machines) == []
    statuses = json.loads(fleet.run("status", "--output", "json").stdout)
    assert {s["stageReached"] for s in statuses.values()} == {"install-app"}
    assert len(fleet.status_commits()) == 1
    audit = [
        json.loads(line)
        for where, text in git_texts(fleet.bare)
        if ":audit/" in where
        for line in text.splitlines()
        if line.strip()
    ]
    assert len(audit) == machines * TASKS_PER_MACHINE
