"""`--target` given twice on `plan` and `apply`: the union of both and their dependencies.

Through the real CLI against the simulator, asserted on the plan JSON and the
simulator's action log: m2 depends on m1, m3 and m4 stand alone; targeting m2 and
m4 plans and runs m1, m2 and m4, and never touches m3 (even with prune on). Two
targets of which one is not declared are refused before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import BASE_FILES
from tests.e2e.support import Fleet

MORE = "".join(
    f"""\
---
apiVersion: reconciler/v1
kind: Machine
metadata: {{name: {name}}}
spec:
  provider: sim
  pipeline: bm
  params: {{os: ubuntu}}
"""
    for name in ("m3", "m4")
)
PRUNE = "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: p}\nspec: {prune: true}\n"


def started_keys(fleet: Fleet) -> set[str]:
    return {e["key"] for e in fleet.action_log() if e["event"] == "started"}


def fleet_of_four(tmp_path: Path) -> Fleet:
    files = {**BASE_FILES, "policy.yaml": PRUNE}
    files["machines.yaml"] += MORE
    return Fleet.create(tmp_path, files)


def test_two_targets_plan_and_apply_both_and_their_dependencies(tmp_path: Path) -> None:
    fleet = fleet_of_four(tmp_path)
    targets = ("--target", "Machine/m2", "--target", "Machine/m4")

    planned = fleet.run("plan", *targets, "--output", "json")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    actions = [a["key"] for w in json.loads(planned.stdout)["waves"] for a in w["actions"]]
    assert sorted(actions) == ["Machine/m1", "Machine/m2", "Machine/m4"]

    applied = fleet.run("apply", *targets)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert started_keys(fleet) == {"Machine/m1", "Machine/m2", "Machine/m4"}
    assert "decommission" not in applied.stdout

    statuses = json.loads(fleet.run("status", "--output", "json").stdout)
    assert {k for k, s in statuses.items() if s["phase"] == "Ready"} == {
        "Machine/m1",
        "Machine/m2",
        "Machine/m4",
    }
    assert statuses.get("Machine/m3", {}).get("phase") != "Ready"

    # The untargeted m3 is all a plain plan still has to do.
    rest = fleet.run("plan", "--output", "json")
    actions = [a["key"] for w in json.loads(rest.stdout)["waves"] for a in w["actions"]]
    assert actions == ["Machine/m3"]


def test_two_targets_one_undeclared_is_an_error_and_runs_nothing(tmp_path: Path) -> None:
    fleet = fleet_of_four(tmp_path)
    for command in ("plan", "apply"):
        result = fleet.run(command, "--target", "Machine/m4", "--target", "Machine/nope")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "not declared: Machine/nope" in result.stderr
        assert "Traceback" not in result.stderr
    assert started_keys(fleet) == set()
