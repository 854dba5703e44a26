"""One planning path: what a pull request's plan shows is what the controller runs.

Through the real CLI on a bare repository: `reconciler plan --base main --head BRANCH`
on a branch that changes one machine and adds another; then the branch is merged
and `reconciler apply` runs. The actions and stages the reviewer saw are exactly the
ones the controller's plan holds and executes (same observed state in between).
"""

from __future__ import annotations

import json
from pathlib import Path

import pygit2

from tests.conftest import BASE_FILES
from tests.e2e.support import Fleet, rows

NEW = """\
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m3}
spec:
  provider: sim
  pipeline: bm
  params: {os: ubuntu}
  dependsOn: [m1]
"""


def branch_with(fleet: Fleet, name: str, text: str) -> str:
    repo = pygit2.Repository(str(fleet.bare))
    main = repo.revparse_single("refs/heads/main").peel(pygit2.Commit)
    builder = repo.TreeBuilder(main.tree)
    builder.insert("machines.yaml", repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB)
    who = pygit2.Signature("A Person", "person@example.com")
    return str(
        repo.create_commit(f"refs/heads/{name}", who, who, "Change m2, add m3",
                           builder.write(), [main.id])
    )  # fmt: skip


def shown(plan_json: str) -> list[tuple[str, str, list[str], str | None]]:
    data = json.loads(plan_json)
    return sorted(
        (a["key"], a["operation"], list(a["stages"]), a.get("blocked"))
        for w in data["waves"]
        for a in w["actions"]
    )


def test_the_pull_request_plan_is_what_the_controller_plans_and_runs(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    assert fleet.run("apply").returncode == 0
    machines = BASE_FILES["machines.yaml"].replace("params: {os: rhel}", "params: {os: ubuntu}")
    head = branch_with(fleet, "request/change", machines + NEW)

    review = fleet.run("plan", "--base", "main", "--head", "request/change", "--output", "json")
    assert review.returncode == 2, review.stdout + review.stderr
    reviewed = shown(review.stdout)
    assert [(k, op) for k, op, _, _ in reviewed] == [
        ("Machine/m2", "update"),
        ("Machine/m3", "create"),
    ]

    repo = pygit2.Repository(str(fleet.bare))
    repo.references["refs/heads/main"].set_target(pygit2.Oid(hex=head))  # merged
    after = fleet.run("plan", "--output", "json")
    assert after.returncode == 2, after.stdout + after.stderr
    assert shown(after.stdout) == reviewed

    applied = fleet.run("apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    plans = rows(fleet.state / "journal.sqlite", "SELECT plan_json FROM plans ORDER BY rowid")
    assert shown(plans[-1]["plan_json"]) == reviewed
