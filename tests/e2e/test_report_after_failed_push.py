"""Plans that only wait for reporting: refused status pushes, provider events, one report each.

A real `reconciler run` against a `git daemon` whose pre-receive hook refuses
updates of the status branch while a marker file exists:

1. the startup cycle provisions the fleet (plan A); its status push is refused, so
   A is `executed` in the journal, not `reported`;
2. provider events (`POST /api/v1/events/sim`) for machines drifted by hand start
   targeted reconciles while A waits only for reporting: each heals its machine
   (plans B, C; the simulator's action log shows the re-install), and each status
   push is refused again;
3. the hook lets pushes through again and a later cycle (`POST /api/v1/sync`, or a
   further event) pushes.

What is asserted is on the served repository: every plan the journal holds is
named by exactly one status commit's `Executions` trailer (read by `git log`), and
its audit records under `audit/` are there exactly once (no task twice, none
missing); the journal marks every plan `reported`; and the commit that reports a
plan holds its resources' statuses — when an event's targeted reconcile is that
commit too (it looked only at the event's machine before, so the machines of the
startup plan had no status file although their plan was marked reported).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.controller import Controller, controller
from tests.e2e.support import Fleet
from tests.e2e.test_provisioning import files, machine
from tests.servers.git import Server, git, git_daemon

pytestmark = pytest.mark.slow

MACHINES = [f"m{i}" for i in range(1, 5)]
HEAL = "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: p}\nspec: {selfHeal: true}\n"
REFUSE_WHILE_MARKED = """#!/bin/sh
while read old new ref; do
    if [ "$ref" = refs/heads/reconciler/status ] && [ -f "{marker}" ]; then
        echo "status pushes are frozen for the audit" >&2
        exit 1
    fi
done
exit 0
"""


@contextmanager
def refusing_remote(tmp: Path, fleet: Fleet, marker: Path) -> Iterator[Server]:
    """The fleet's repository served by git daemon, status pushes refused while `marker`."""
    with git_daemon(tmp / "srv") as server:
        git("push", "-q", str(server.bare), "main", cwd=fleet.bare)
        hook = server.bare / "hooks" / "pre-receive"
        hook.write_text(REFUSE_WHILE_MARKED.replace("{marker}", str(marker)))
        hook.chmod(0o755)
        marker.write_text("frozen\n")
        yield server


def drift(fleet: Fleet, key: str) -> None:
    done = fleet.run_module(
        "reconciler.providers.simulator", "drift", "--state-dir", str(fleet.state),
        key, "params.os", '"rhel"',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def installs(fleet: Fleet, key: str) -> int:
    return sum(
        1
        for e in fleet.action_log()
        if e["event"] == "succeeded" and e["key"] == key and e["action"] == "install-os"
    )


def plans_in(fleet: Fleet, state: str) -> list[str]:
    return [p["plan_hash"] for p in fleet.journal_plans() if p["state"] == state]


def heal_by_event(api: Controller, fleet: Fleet, name: str) -> None:
    """Drift one machine, send its provider event, wait until its plan has executed."""
    key = f"Machine/{name}"
    before, plans = installs(fleet, key), len(fleet.journal_plans())
    drift(fleet, key)
    answer = api.client.post("/api/v1/events/sim", json={"name": name})
    assert answer.status_code == 202, answer.text
    assert answer.json()["resources"] == [key]
    api.wait_for(lambda: installs(fleet, key) == before + 1)
    api.wait_for(lambda: len(fleet.journal_plans()) == plans + 1 and not plans_in(fleet, "running"))


def sync(api: Controller) -> dict[str, Any]:
    op = api.client.post("/api/v1/sync").json()["id"]
    return api.wait_for(
        lambda: (
            (o := api.client.get(f"/api/v1/operations/{op}").json())["phase"]
            in ("succeeded", "failed")
            and o
        )
    )


def reported_by_trailers(bare: Path) -> Counter[str]:
    """Each execution id named by an `Executions` trailer of the status branch, counted."""
    found: Counter[str] = Counter()
    if not git("--git-dir", str(bare), "branch", "--list", "reconciler/status"):
        return found  # no status commit landed
    listing = git(
        "--git-dir", str(bare), "log", "refs/heads/reconciler/status",
        "--format=%(trailers:key=Executions,valueonly,separator=%x2C)%x00",
    )  # fmt: skip
    for commit in listing.split("\0"):
        found.update(e.strip() for e in commit.replace("\n", ",").split(",") if e.strip())
    return found


def audit_lines(bare: Path) -> list[dict[str, Any]]:
    """Every JSON line of every file under audit/ at the status branch's tip."""
    git_dir = str(bare)
    paths = git("--git-dir", git_dir, "ls-tree", "-r", "--name-only", "reconciler/status", "audit")
    records = []
    for path in paths.split():
        text = git("--git-dir", git_dir, "show", f"reconciler/status:{path}")
        records += [json.loads(line) | {"file": path} for line in text.splitlines() if line]
    return records


def status_phases(bare: Path) -> dict[str, str]:
    """Each machine's phase in `status/Machine/` at the status branch's tip."""
    git_dir = str(bare)
    paths = git("--git-dir", git_dir, "ls-tree", "--name-only", "reconciler/status:status/Machine")
    return {
        path.removesuffix(".yaml"): yaml.safe_load(
            git("--git-dir", git_dir, "show", f"reconciler/status:status/Machine/{path}")
        )["phase"]
        for path in paths.split()
    }


def assert_each_plan_reported_once(fleet: Fleet, bare: Path) -> None:
    plans = fleet.journal_plans()
    assert [p["state"] for p in plans] == ["reported"] * len(plans), plans
    executions = {p["plan_hash"] for p in plans}
    trailers = reported_by_trailers(bare)
    assert set(trailers) == executions
    assert [e for e, n in trailers.items() if n != 1] == []
    records = audit_lines(bare)
    assert {r["execution"] for r in records} == executions
    runs = Counter((r["execution"], r["resource"], r["stage"], r["task"]) for r in records)
    assert [k for k, n in runs.items() if n != 1] == []
    # One audit file per execution, and every task the journal ran is in it.
    files_of = {e: {r["file"] for r in records if r["execution"] == e} for e in executions}
    assert all(len(f) == 1 for f in files_of.values()), files_of
    journaled = Counter(t["plan_hash"] for t in fleet.journal_tasks() if t["finished_at"])
    assert Counter(r["execution"] for r in records) == journaled


def test_events_while_pushes_fail_then_a_sync_reports_every_plan_once(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, files(*map(machine, MACHINES), policy=HEAL))
    marker = tmp_path / "frozen"
    with (
        refusing_remote(tmp_path, fleet, marker) as server,
        controller(fleet, tmp_path, repo=server.url) as api,
    ):
        api.wait_for(lambda: plans_in(fleet, "executed"))  # A: provisioned, not reported
        api.wait_for_line("cycle failed")
        assert all(installs(fleet, f"Machine/{m}") == 1 for m in MACHINES)
        heal_by_event(api, fleet, "m2")  # B
        heal_by_event(api, fleet, "m3")  # C
        assert len(plans_in(fleet, "executed")) == 3
        assert "still running" not in api.log.read_text()
        assert reported_by_trailers(server.bare) == Counter()  # nothing landed yet

        marker.unlink()
        done = sync(api)
        assert done["phase"] == "succeeded", done
        assert_each_plan_reported_once(fleet, server.bare)
        assert status_phases(server.bare) == dict.fromkeys(MACHINES, "Ready")
        # A later cycle has nothing more to report: no execution named again.
        assert sync(api)["phase"] == "succeeded"
        assert_each_plan_reported_once(fleet, server.bare)


def test_events_while_pushes_fail_then_an_event_reports_every_plan_once(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, files(*map(machine, MACHINES), policy=HEAL))
    marker = tmp_path / "frozen"
    with (
        refusing_remote(tmp_path, fleet, marker) as server,
        controller(fleet, tmp_path, repo=server.url) as api,
    ):
        api.wait_for(lambda: plans_in(fleet, "executed"))
        heal_by_event(api, fleet, "m2")
        marker.unlink()
        heal_by_event(api, fleet, "m4")  # its commit lands: it reports A and B too
        api.wait_for(lambda: not plans_in(fleet, "executed"))
        assert_each_plan_reported_once(fleet, server.bare)
        # The commit reporting A holds A's results: every machine's status, Ready.
        assert status_phases(server.bare) == dict.fromkeys(MACHINES, "Ready")
