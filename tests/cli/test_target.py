"""`--target KIND/NAME` on `plan` and `apply`: those resources and what they depend on.

Through the real CLI against the simulator; asserted on the simulator's action log
and the plan JSON. Resources outside the target are neither observed as orphans nor
touched, even with prune on.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import BASE_FILES
from tests.e2e.support import Fleet

THIRD = """\
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m3}
spec:
  provider: sim
  pipeline: bm
  params: {os: ubuntu}
"""
PRUNE = "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: p}\nspec: {prune: true}\n"


def started_keys(fleet: Fleet) -> set[str]:
    return {e["key"] for e in fleet.action_log() if e["event"] == "started"}


def test_target_limits_plan_and_apply_to_a_resource_and_its_dependencies(
    tmp_path: Path,
) -> None:
    files = {**BASE_FILES, "policy.yaml": PRUNE}
    files["machines.yaml"] += THIRD
    fleet = Fleet.create(tmp_path, files)

    planned = fleet.run("plan", "--target", "Machine/m3", "--output", "json")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    actions = [a["key"] for w in json.loads(planned.stdout)["waves"] for a in w["actions"]]
    assert actions == ["Machine/m3"]

    applied = fleet.run("apply", "--target", "Machine/m2")  # m2 dependsOn m1
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert started_keys(fleet) == {"Machine/m1", "Machine/m2"}
    assert "decommission" not in applied.stdout

    rest = fleet.run("apply", "--target", "m3")  # a bare name, when it names one resource
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert started_keys(fleet) == {"Machine/m1", "Machine/m2", "Machine/m3"}


def test_a_target_that_is_not_declared_is_an_error(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    for command in ("plan", "apply"):
        result = fleet.run(command, "--target", "Machine/nope")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "not declared: Machine/nope" in result.stderr
        assert "Traceback" not in result.stderr
    assert started_keys(fleet) == set()
