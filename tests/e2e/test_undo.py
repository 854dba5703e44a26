"""Undo is a plan, not a promise: a `git revert` of an applied change is labelled as such.

Through the real CLI and real git: a profile change is committed and applied, then
reverted with `git revert` and pushed; `reconciler plan` (text, Markdown as in the PR
comment, JSON) shows an Undo section first, naming the reverted commit, and flags the
destructive stage whose wiped data re-running cannot bring back. What the journal
keeps per resource (each resolution applied) is read from its own table.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.support import Fleet, rows
from tests.repos import commit_change

pytestmark = pytest.mark.slow

STAGES = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  converges: [params.os]
  destructive: true
  work:
    - {name: install, type: provider, action: install-os}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: app}
spec:
  work:
    - {name: app, type: provider, action: install-app}
"""


def profile(os_name: str) -> str:
    return (
        "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: fleet}\n"
        f"spec: {{params: {{os: {os_name}}}}}\n"
    )


def files() -> dict[str, str]:
    machines = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: {name}}}\n"
        "spec: {provider: sim, pipeline: bm, profiles: [fleet]}\n"
        for name in ("m1", "m2")
    )
    return {
        "providers.yaml": (
            "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
            "spec: {type: simulator}\n"
        ),
        "stages.yaml": STAGES,
        "pipelines.yaml": (
            "apiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: bm}\n"
            "spec: {steps: [{stage: install-os}, {stage: app}]}\n"
        ),
        "profiles.yaml": profile("ubuntu"),
        "machines.yaml": machines,
    }


def git(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "Rev Erter",
        "GIT_AUTHOR_EMAIL": "reverter@example.com",
        "GIT_COMMITTER_NAME": "Rev Erter",
        "GIT_COMMITTER_EMAIL": "reverter@example.com",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_revert_commit_is_planned_as_an_undo_naming_the_commit(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, files())
    assert fleet.run("apply").returncode == 0
    commit_change(fleet.bare, {"profiles.yaml": profile("rhel")}, "Move to RHEL")
    change = git("rev-parse", "main", cwd=fleet.bare)
    ahead = fleet.run("plan")
    assert "Undo (" not in ahead.stdout  # a change, not an undo
    assert fleet.run("apply", "--yes").returncode == 0

    clone = tmp_path / "clone"
    git("clone", "-q", str(fleet.bare), str(clone), cwd=tmp_path)
    git("revert", "--no-edit", "HEAD", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)

    shown = fleet.run("plan")
    assert shown.returncode == 2, shown.stdout + shown.stderr
    text = shown.stdout
    first = text.splitlines()[2]  # after the header and a blank line: the Undo section
    assert first.startswith("Undo (the head brings back what was applied before")
    for key in ("Machine/m1", "Machine/m2"):
        assert f'~ {key}  undoes {change[:12]} "Move to RHEL" by A Person' in text
    assert "re-runs: install-os → app" in text
    assert text.count("CANNOT UNDO: install-os is destructive") == 2
    assert "data on the disks it wiped" in text
    assert text.index("Undo (") < text.index("Wave 1:")
    assert f"undoes: {change[:12]} (see Undo)" in text

    markdown = fleet.run("plan", "--output", "markdown").stdout
    assert markdown.index("**Undo (") < markdown.index("#### Wave 1")
    assert f'`Machine/m1` undoes `{change[:12]}` "Move to RHEL"' in markdown
    assert "**Cannot undo:** install-os is destructive" in markdown

    data = json.loads(fleet.run("plan", "--output", "json").stdout)
    undo = {u["key"]: u for u in data["undo"]}
    assert set(undo) == {"Machine/m1", "Machine/m2"}
    assert undo["Machine/m1"]["commit"] == change
    assert undo["Machine/m1"]["stages"] == ["install-os", "app"]
    assert len(undo["Machine/m1"]["cannotUndo"]) == 1
    actions = {a["key"]: a for w in data["waves"] for a in w["actions"]}
    assert actions["Machine/m1"]["undoes"] == change

    history = rows(
        fleet.state / "journal.sqlite",
        "SELECT resource, resolution, revision FROM resolutions ORDER BY resource, seq",
    )
    assert [r["resource"] for r in history] == ["Machine/m1"] * 2 + ["Machine/m2"] * 2
    assert history[1]["revision"] == change
