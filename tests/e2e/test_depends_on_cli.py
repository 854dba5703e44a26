"""`dependsOn` means what it says, through the real CLI: a dependent never starts while
what it depends on is blocked by a gate, Unknown (its observation failed), or failed
in an earlier cycle (a cycle a person asks for holds nothing in backoff).

Every cycle is a `reconciler apply` subprocess on a bare repository. The dependent
stays in the plan, blocked with `DependencyNotReady` naming the dependency, and runs
in the first cycle after the dependency is Ready. Asserted on the simulator's
action log and the status branch.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pygit2
import yaml

from tests.controller.server.conftest import push, repo_files
from tests.controller.server.test_incremental import with_failing_check
from tests.e2e.support import Fleet

ADA = "Ada Lovelace <ada@example.com>"
DEPENDENT = "name: m01}\nspec:\n"


def depending(files: dict[str, str]) -> dict[str, str]:
    files = dict(files)
    files["machines.yaml"] = files["machines.yaml"].replace(
        DEPENDENT, DEPENDENT + "  dependsOn: [m00]\n"
    )
    assert "dependsOn: [m00]" in files["machines.yaml"]
    return files


def started(fleet: Fleet) -> list[str]:
    return [e["key"] for e in fleet.action_log() if e["event"] == "started"]


def status(fleet: Fleet, name: str) -> dict[str, Any]:
    repo = pygit2.Repository(str(fleet.bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    return yaml.safe_load(repo[tip.tree["status"]["Machine"][f"{name}.yaml"].id].data)


def waits_for_m00(fleet: Fleet, because: str, *, within_plan: bool = False) -> None:
    """m01 is Stalled, DependencyNotReady, naming m00 and why it is not Ready (or, when
    m00 ran and failed in the same plan, that it did not succeed)."""
    node = status(fleet, "m01")
    assert node["phase"] == "Stalled", node
    stalled = next(c for c in node["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "DependencyNotReady", stalled
    expected = (
        "dependency Machine/m00 did not succeed"
        if within_plan
        else f"dependency Machine/m00 is not Ready: {because}"
    )
    assert stalled["message"].startswith(expected), stalled["message"]
    plan = fleet.run("plan", "--output", "json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    (action,) = [
        a
        for w in json.loads(plan.stdout)["waves"]
        for a in w["actions"]
        if a["key"] == "Machine/m01"
    ]
    if within_plan:  # m00 is planned again: m01 waits for it inside the plan
        assert action["blocked"] is None and "Machine/m00" in action["dependsOn"], action
    else:
        assert action["blocked"].startswith("dependency Machine/m00"), action


def test_a_dependency_blocked_by_a_gate_holds_its_dependent(tmp_path: Path) -> None:
    policy = f"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {{name: default}}
spec:
  protected: [{{name: Machine/m00}}]
  approvals:
    required: true
    reviewers: [{{paths: [machines.yaml], names: ["{ADA}"]}}]
"""
    files = depending(repo_files(2, policy=policy))
    fleet = Fleet.create(tmp_path, files)
    for _ in range(2):  # the same head twice: still waiting
        first = fleet.run("apply")
        assert first.returncode == 2, first.stdout + first.stderr
        assert started(fleet) == []
        assert status(fleet, "m00")["phase"] == "Stalled"
        waits_for_m00(fleet, "its create is blocked")

    push(fleet.bare, files, f"Approve m00\n\nApproved-by: {ADA}")
    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert started(fleet) == ["Machine/m00", "Machine/m01"]
    assert status(fleet, "m01")["phase"] == "Ready"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


def test_an_unknown_dependency_holds_its_dependent(tmp_path: Path) -> None:
    files = depending(repo_files(2))
    port = closed_port()
    files["providers.yaml"] += f"""\
---
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: far}}
spec:
  type: http
  endpoint: "http://127.0.0.1:{port}"
  settings:
    observe: {{url: "/machines/{{name}}"}}
    maxRetries: 0
    timeout: 2s
"""
    unreachable = files["machines.yaml"].replace(
        "name: m00}\nspec:\n  provider: sim\n", "name: m00}\nspec:\n  provider: far\n"
    )
    assert unreachable != files["machines.yaml"]
    fleet = Fleet.create(tmp_path, {**files, "machines.yaml": unreachable})
    for _ in range(2):
        first = fleet.run("apply")
        assert first.returncode != 0, first.stdout + first.stderr
        assert "Traceback" not in first.stderr
        assert status(fleet, "m00")["phase"] == "Unknown"
        waits_for_m00(fleet, "its unknown is blocked: observation unknown: far: ")
        assert started(fleet) == []

    # m00 moves to a provider that answers: it is created, then m01 after it.
    push(fleet.bare, files, "m00 on the simulator")
    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert started(fleet) == ["Machine/m00", "Machine/m01"]
    assert status(fleet, "m01")["phase"] == "Ready"


def test_a_dependency_that_failed_in_an_earlier_cycle_holds_its_dependent(
    tmp_path: Path,
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "m00").touch()  # m00's install-os fails while this flag exists
    files = depending(repo_files(2))
    with_failing_check(files, flags)
    fleet = Fleet.create(tmp_path, files)
    first = fleet.run("apply")
    assert first.returncode == 1, first.stdout + first.stderr
    assert status(fleet, "m00")["phase"] == "Failed"
    assert started(fleet) == ["Machine/m00"]
    waits_for_m00(fleet, "", within_plan=True)

    # Asked again (no backoff: a person's cycle retries m00), still failing: m01 waits.
    second = fleet.run("apply")
    assert second.returncode == 1, second.stdout + second.stderr
    assert started(fleet) == ["Machine/m00", "Machine/m00"]
    waits_for_m00(fleet, "", within_plan=True)

    (flags / "m00").unlink()
    third = fleet.run("apply")
    assert third.returncode == 0, third.stdout + third.stderr
    assert started(fleet) == ["Machine/m00"] * 3 + ["Machine/m01"]
    assert {n: status(fleet, n)["phase"] for n in ("m00", "m01")} == {
        "m00": "Ready",
        "m01": "Ready",
    }
