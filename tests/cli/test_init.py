"""`reconciler init`, the combined schema and modelines: a user's own repository.

The scaffold is validated, committed with git, cloned bare and applied by the real
CLI against the simulator: exit 0 and every resource Ready on the status branch.
The combined schema is checked with a JSON Schema validator on every document of the
scaffold and of sample-repo (multi-document files included), and must refuse a bad one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml

from tests.cli.test_options import cli
from tests.conftest import ROOT

GIT = ["git", "-c", "user.name=A Human", "-c", "user.email=human@example.com"]


def documents(root: Path) -> list[tuple[Path, dict[str, object]]]:
    found = []
    for path in sorted(root.rglob("*.yaml")):
        if "playbooks" in path.parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path, doc))
    return found


def test_init_validates_and_applies_with_the_simulator(tmp_path: Path) -> None:
    work = tmp_path / "infra"
    made = cli("init", str(work))
    assert made.returncode == 0, made.stderr
    kinds = {doc["kind"] for _, doc in documents(work)}
    assert kinds == {"Provider", "Stage", "Pipeline", "Profile", "Machine", "Policy"}
    assert (work / ".reconcilerignore").is_file()
    settings = json.loads((work / ".vscode" / "settings.json").read_text())
    (schema_path,) = settings["yaml.schemas"]
    assert (work / schema_path).is_file()

    valid = cli("validate", str(work))
    assert valid.returncode == 0, valid.stdout + valid.stderr

    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*GIT, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", "Our fleet"], check=True)
    bare = tmp_path / "infra.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    applied = cli("apply", "--repo", str(bare), "--state-dir", str(tmp_path / "state"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    status = subprocess.run(
        ["git", "--git-dir", str(bare), "show", "reconciler/status:status/Machine/web-01.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(status)["phase"] == "Ready"
    assert yaml.safe_load(status)["observed"]["params"]["application"] == "web"


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    refused = cli("init", str(tmp_path))
    assert refused.returncode == 1
    assert "is not an empty directory" in refused.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_modelines_of_the_scaffold_resolve_to_the_combined_schema(tmp_path: Path) -> None:
    work = tmp_path / "infra"
    assert cli("init", str(work)).returncode == 0
    for path in work.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target == (work / "schemas" / "reconciler.json").resolve(), path


def test_the_combined_schema_validates_every_kind_in_multi_document_files(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path / "infra")).returncode == 0
    schema = json.loads((ROOT / "schemas" / "reconciler.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    seen = set()
    for root in (tmp_path / "infra", ROOT / "sample-repo"):
        for path, doc in documents(root):
            errors = [e.message for e in validator.iter_errors(doc)]
            assert errors == [], (path, doc["kind"], errors)
            seen.add(doc["kind"])
    assert seen == {"Provider", "Stage", "Pipeline", "Profile", "Machine", "Instance", "Policy"}
    machine = {
        "apiVersion": "reconciler/v1",
        "kind": "Machine",
        "metadata": {"name": "m1"},
        "spec": {"provider": "p", "pipeline": "x", "colour": "red"},
    }
    assert not validator.is_valid(machine)  # an unknown field
    assert not validator.is_valid({**machine, "kind": "Printer"})  # an unknown kind


def test_schema_out_points_the_repository_modelines_at_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "sample-repo", repo)
    out = tmp_path / "editor-schemas"
    done = cli("schema", "--out", str(out), "--modelines", str(repo))
    assert done.returncode == 0, done.stderr
    assert (out / "reconciler.json").is_file()
    machines = (repo / "machines" / "rack-r01.yaml").read_text().splitlines()
    assert machines[0] == "# yaml-language-server: $schema=../../editor-schemas/reconciler.json"
    assert (
        machines[1:] == (ROOT / "sample-repo/machines/rack-r01.yaml").read_text().splitlines()[1:]
    )
    playbook = repo / "playbooks" / "harden.yaml"
    assert playbook.read_text() == (ROOT / "sample-repo/playbooks/harden.yaml").read_text()
    again = cli("schema", "--out", str(out), "--modelines", str(repo))
    assert "modeline:" not in again.stderr  # nothing left to change
    assert cli("validate", str(repo)).returncode == 0
