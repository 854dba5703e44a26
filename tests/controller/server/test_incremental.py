"""Incremental cycles of a long-running controller, on a real Git repository.

A new head is planned from what it changed only; the same head again, and a
Policy change, plan everything. What is asserted comes from the records: the
simulator's action log, and the status branch the controller commits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pygit2
import yaml

from reconciler.controller.controller import Controller
from reconciler.controller.cycle import AtHead
from reconciler.model.status import ResourceStatus
from reconciler.plan.scope import FullCycle, Scope
from reconciler.providers.simulator import SimulatorProvider
from reconciler.report.yaml_text import status_yaml
from reconciler.source.readback import read_statuses
from tests.controller.server.conftest import declare, push, repo_files, settings_for

PRUNE = """\
apiVersion: reconciler/v1
kind: Policy
metadata: {name: default}
spec: {prune: true}
"""


def status_commit(bare: Path) -> tuple[str, dict[str, str], list[str]]:
    """The last status commit's message, each resource's phase, and the keys drifted
    and not corrected."""
    repo = pygit2.Repository(str(bare))
    commit = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    phases = {}
    for entry in commit.tree["status"]["Machine"]:
        name = entry.name.rsplit(".", 1)[0]
        phases[name] = yaml.safe_load(repo[entry.id].data)["phase"]
    drift = json.loads(repo[commit.tree["reports/drift.json"].id].data)
    return commit.message, phases, [d["resource"] for d in drift["drifted"] if not d["corrected"]]


def with_failing_check(files: dict[str, str], flags: Path) -> None:
    """A second task in install-os that fails while a flag file named for the machine
    exists in `flags` (a real process, one attempt)."""
    files["stages.yaml"] += f"""\
    - name: check
      type: command
      argv: [{sys.executable}, -c, "import os, sys; sys.exit(os.path.exists(sys.argv[1]))",
             "{flags}/${{resource.name}}"]
      retry: {{attempts: 1}}
"""


def started(sim: SimulatorProvider, since: int) -> list[tuple[str, str]]:
    return [(e["key"], e["action"]) for e in sim.action_log()[since:] if e["event"] == "started"]


def test_a_new_head_is_planned_from_what_it_changed_and_the_same_head_again_in_full(
    tmp_path: Path,
) -> None:
    files = repo_files(6, policy=PRUNE)
    bare = declare(tmp_path, files)
    state = tmp_path / "state"
    with Controller(settings_for(bare, state, full_resync_interval=3600.0)) as controller:
        first = asyncio.run(controller.reconcile(AtHead()))
        assert first.ok and isinstance(first.scope, FullCycle), first.scope
        sim = SimulatorProvider.open(state, name="sim", repository=str(bare))
        seen = len(sim.action_log())
        sim.drift("Machine/m05", "params.os", "rhel")  # by hand: only a full cycle sees it

        changed = repo_files(6, policy=PRUNE)
        machines = changed["machines.yaml"].split("---\n")
        machines[1] = machines[1].replace("os: ubuntu", "os: rhel")  # m01 edited
        machines[2] = machines[2].replace("name: m02", "name: m09")  # m02 gone, m09 new
        changed["machines.yaml"] = "---\n".join(machines)
        push(bare, changed, "Move m01 to rhel, replace m02 by m09")

        second = asyncio.run(controller.reconcile(AtHead()))
        assert second.ok, second
        assert isinstance(second.scope, Scope), second.scope
        assert second.scope.changed == {"Machine/m01", "Machine/m09"}
        assert second.scope.removed == {"Machine/m02"}
        assert sorted(started(sim, seen)) == [
            ("Machine/m01", "install-os"),
            ("Machine/m02", "decommission"),
            ("Machine/m09", "install-os"),
        ]
        message, phases, drifted = status_commit(bare)
        assert "(incremental: 2 of 6 declared resources planned" in message
        assert phases == {f"m{i:02d}": "Ready" for i in (0, 1, 3, 4, 5, 9)}
        assert drifted == []  # m05 was not looked at

        seen = len(sim.action_log())
        # The same head: every resource observed.
        third = asyncio.run(controller.reconcile(AtHead()))
        assert isinstance(third.scope, FullCycle) and "no new revision" in third.scope.reason
        message, phases, drifted = status_commit(bare)
        assert "incremental" not in message
        assert drifted == ["Machine/m05"] and phases["m05"] == "Drifted"
        assert started(sim, seen) == []

        push(bare, {**changed, "policy.yaml": PRUNE.replace("true", "false")}, "Prune off")
        fourth = asyncio.run(controller.reconcile(AtHead()))
        assert fourth.scope == FullCycle("the Policy changed")


def test_a_failed_resource_is_planned_again_with_the_next_head(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    files = repo_files(4)
    with_failing_check(files, flags)
    bare = declare(tmp_path, files)
    state = tmp_path / "state"
    with Controller(settings_for(bare, state, full_resync_interval=3600.0)) as controller:
        assert asyncio.run(controller.reconcile(AtHead())).ok
        (flags / "m03").touch()
        changed = dict(files)
        changed["machines.yaml"] = files["machines.yaml"].replace(
            "serial: SN03}\n  params: {os: ubuntu}", "serial: SN03}\n  params: {os: rhel}"
        )
        push(bare, changed, "m03 to rhel")
        failed = asyncio.run(controller.reconcile(AtHead()))
        assert isinstance(failed.scope, Scope) and not failed.ok
        assert status_commit(bare)[1]["m03"] == "Failed"

        (flags / "m03").unlink()
        push(bare, {**changed, "README.md": "unrelated\n"}, "Docs only")
        sim = SimulatorProvider.open(state, name="sim", repository=str(bare))
        seen = len(sim.action_log())
        retried = asyncio.run(controller.reconcile(AtHead()))
        assert isinstance(retried.scope, Scope), retried.scope
        assert retried.scope.changed == frozenset()
        assert retried.scope.revisited == {"Machine/m03"}
        assert retried.ok
        assert started(sim, seen) == [("Machine/m03", "install-os")]  # the failed stage again
        assert status_commit(bare)[1] == dict.fromkeys(("m00", "m01", "m02", "m03"), "Ready")


def test_status_files_are_parsed_once_per_content(tmp_path: Path) -> None:
    repo = pygit2.init_repository(str(tmp_path / "status.git"), bare=True)
    signature = pygit2.Signature("t", "t@example.com")

    def commit_statuses(files: dict[str, bytes]) -> None:
        index = pygit2.Index()
        for path, data in files.items():
            index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
        tree = index.write_tree(repo)
        ref = "refs/heads/reconciler/status"
        parents = [repo.references[ref].target] if ref in repo.references else []
        repo.create_commit(ref, signature, signature, "status", tree, parents)

    def status(name: str, phase: str) -> bytes:
        return status_yaml(ResourceStatus(kind="Machine", name=name, phase=phase)).encode()

    commit_statuses(
        {
            "status/Machine/a.yaml": status("a", "Ready"),
            "status/Machine/b.yaml": status("b", "Failed"),
            "status/Machine/c.yaml": b"phase: [unclosed",  # edited by hand: skipped
        }
    )
    cache: dict[pygit2.Oid, ResourceStatus | None] = {}
    first = read_statuses(repo, "reconciler/status", cache)
    assert {k: s.phase for k, s in first.items()} == {"Machine/a": "Ready", "Machine/b": "Failed"}
    assert len(cache) == 3

    commit_statuses(
        {
            "status/Machine/a.yaml": status("a", "Ready"),
            "status/Machine/b.yaml": status("b", "Ready"),
        }
    )
    again = read_statuses(repo, "reconciler/status", cache)
    assert again == read_statuses(repo, "reconciler/status")  # the same as without a cache
    assert {k: s.phase for k, s in again.items()} == {"Machine/a": "Ready", "Machine/b": "Ready"}
    assert again["Machine/a"] is first["Machine/a"]  # unchanged content: not parsed again
    assert len(cache) == 2  # only what the branch holds now


def test_scheduled_cycles_leave_a_failure_alone_until_its_backoff_runs_out(
    tmp_path: Path,
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    for name in ("m01", "m02"):
        (flags / name).touch()
    files = repo_files(3)
    with_failing_check(files, flags)
    bare = declare(tmp_path, files)
    state = tmp_path / "state"
    with Controller(settings_for(bare, state)) as controller:
        first = asyncio.run(controller.reconcile(AtHead(hold_failures=True)))
        assert not first.ok and first.held == {}
        retry_at = {}
        for key in ("Machine/m01", "Machine/m02"):
            failure = first.statuses[key].failure
            assert failure is not None and failure.attempts == 1 and failure.retry_at is not None
            retry_at[key] = failure.retry_at

        for name in ("m01", "m02"):  # the cause is gone, but the clock has not run out
            (flags / name).unlink()
        sim = SimulatorProvider.open(state, name="sim", repository=str(bare))
        seen = len(sim.action_log())
        scheduled = asyncio.run(controller.reconcile(AtHead(hold_failures=True)))
        assert scheduled.held == retry_at
        assert started(sim, seen) == []
        assert status_commit(bare)[1] == {"m00": "Ready", "m01": "Failed", "m02": "Failed"}

        # A provider event about m01 waiting when the scheduled cycle began: m01 is tried.
        evented_scope = AtHead(also=frozenset({"Machine/m01"}), hold_failures=True)
        evented = asyncio.run(controller.reconcile(evented_scope))
        assert evented.held == {"Machine/m02": retry_at["Machine/m02"]}
        assert started(sim, seen) == [("Machine/m01", "install-os")]
        assert status_commit(bare)[1] == {"m00": "Ready", "m01": "Ready", "m02": "Failed"}

        asked = asyncio.run(controller.reconcile(AtHead()))  # POST /sync, a push, `apply`: at once
        assert asked.ok and asked.held == {}
        assert started(sim, seen)[1:] == [("Machine/m02", "install-os")]
        assert status_commit(bare)[1]["m02"] == "Ready"
