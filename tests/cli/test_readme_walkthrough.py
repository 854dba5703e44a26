"""The README's "Your first repository" walk-through cannot rot: its documents work.

Every ```yaml block of that section (from its heading to the next `## `) is
written to a file of its own, in order, and the folder goes through the real CLI:
`reconciler validate` exits 0 and counts the resources the walk-through declares;
committed to a bare repository, `reconciler apply` against the simulator brings
every resource to Ready. The blocks together declare every kind, so a kind
missing from the walk-through fails the test too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.e2e.support import Fleet

SECTION = "## Your first repository"
KINDS = {"Provider", "Stage", "Pipeline", "Profile", "Machine", "Instance", "Resource", "Policy"}
BLOCK = re.compile(r"^( *)```yaml\n(.*?)^\1```$", re.M | re.S)


def walkthrough_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [textwrap.dedent(body) for _, body in BLOCK.findall(section)]


def documents(blocks: list[str]) -> list[dict]:
    return [d for block in blocks for d in yaml.safe_load_all(block) if d]


def test_the_walkthrough_declares_every_kind() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) >= 7, blocks
    assert {d["kind"] for d in documents(blocks)} == KINDS


def test_the_walkthrough_validates_and_applies(tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    files = {f"readme-{i:02d}.yaml": block for i, block in enumerate(blocks)}
    folder = tmp_path / "infra"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    resources = sorted(
        f"{d['kind']}/{d['metadata']['name']}"
        for d in documents(blocks)
        if d["kind"] in ("Machine", "Instance", "Resource")
    )
    assert resources == ["Instance/api-01", "Machine/web-01", "Resource/rack-r01-vlan"]

    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(folder)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(resources)} resources" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr

    fleet = Fleet.create(tmp_path, files)
    applied = fleet.run("apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    statuses = json.loads(fleet.run("status", "--output", "json").stdout)
    assert {k: s["phase"] for k, s in statuses.items()} == dict.fromkeys(resources, "Ready")
