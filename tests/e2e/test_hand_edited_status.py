"""Status files hand-edited into valid YAML of the wrong shape (a list, a number where a
list belongs): `reconciler audit` and the next `reconciler apply` read past them
instead of stopping with a traceback.

The status branch is the controller's, but anyone with push access can commit to it;
what they leave there is data, never a reason for a cycle to fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import BASE_FILES
from tests.e2e.support import Fleet
from tests.servers.git import git

pytestmark = pytest.mark.slow


def hand_edit(fleet: Fleet, tmp: Path, files: dict[str, str]) -> None:
    """Commit `files` (path -> text) onto the status branch of the served repository."""
    work = tmp / "work"
    git("clone", "-q", "-b", "reconciler/status", str(fleet.bare), str(work), cwd=tmp)
    for name, text in files.items():
        (work / name).write_text(text)
    git("commit", "-q", "-am", "A hand edit", cwd=work)
    git("push", "-q", "origin", "HEAD:reconciler/status", cwd=work)


def status_file(fleet: Fleet, path: str) -> object:
    return yaml.safe_load(git("--git-dir", str(fleet.bare), "show", f"reconciler/status:{path}"))


def test_audit_reads_past_a_status_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    assert fleet.run("apply").returncode == 0
    before = fleet.run("audit", "Machine/m1", "--output", "json")
    assert before.returncode == 0, before.stderr
    hand_edit(fleet, tmp_path, {"status/Machine/m1.yaml": "- not\n- a mapping\n"})

    shown = fleet.run("audit", "Machine/m1", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    story = json.loads(shown.stdout)
    # The commit that edited the file tells nothing about m1: the story is the one before,
    # the applied actions and the status they reached.
    assert story == json.loads(before.stdout)
    kinds = [e["kind"] for e in story["entries"]]
    assert "action" in kinds and "status" in kinds, kinds


@pytest.mark.parametrize(
    "text",
    ["- not\n- a mapping\n", "branch: main\nconditions: 5\n", "conditions: [Ready, 7]\n"],
    ids=["a-list", "conditions-a-number", "conditions-not-mappings"],
)
def test_apply_writes_the_controller_file_again_over_a_hand_edit(tmp_path: Path, text: str) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    assert fleet.run("apply").returncode == 0
    hand_edit(fleet, tmp_path, {"status/controller.yaml": text})

    again = fleet.run("apply")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    controller = status_file(fleet, "status/controller.yaml")
    assert isinstance(controller, dict)
    assert [c["type"] for c in controller["conditions"]] == ["Ready"]


def test_status_reads_past_a_controller_file_of_another_shape(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    assert fleet.run("apply").returncode == 0
    hand_edit(fleet, tmp_path, {"status/controller.yaml": "branch: main\nconditions: 5\n"})

    shown = fleet.run("status")
    assert "Traceback" not in shown.stderr, shown.stderr
    assert shown.returncode == 0, shown.stderr
    assert "Machine/m1" in shown.stdout


@pytest.mark.parametrize(
    "text",
    ['{"drifted": [{"since": "2026-01-01T00:00:00Z"}]}\n', '["not", "a", "report"]\n'],
    ids=["entry-without-resource", "a-list"],
)
def test_a_targeted_apply_reads_past_a_drift_report_of_another_shape(
    tmp_path: Path, text: str
) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    assert fleet.run("apply").returncode == 0
    hand_edit(fleet, tmp_path, {"reports/drift.json": text})

    again = fleet.run("apply", "--target", "Machine/m1")
    assert "Traceback" not in again.stderr, again.stderr
    assert again.returncode == 0, again.stderr
    report = json.loads(
        git("--git-dir", str(fleet.bare), "show", "reconciler/status:reports/drift.json")
    )
    assert isinstance(report, dict)
    assert report["drifted"] == []
