"""Audit records say who asked, who merged and who approved — truly, end to end.

A small fleet is served by `git daemon` on 127.0.0.1; several named people commit
to a clone and push: a change made on a branch by Ada and merged by Bob (the
merge commit carries `Approved-by` trailers from a listed reviewer and from
someone not listed), a change to another machine in the same file by Carol, a
profile change by Dave, and an unrelated commit by Eve on top. The controller runs
in-process (`run_apply`, as the CLI does); the records are read from the status
branch of the served repository and through `reconciler audit` (typer's CliRunner).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from reconciler.cli.cli import app
from reconciler.cli.commands import run_apply
from reconciler.settings import Settings
from tests.servers.git import git, git_daemon

pytestmark = pytest.mark.slow

OPS = ("Ops Team", "ops@example.com")
ADA = ("Ada Lovelace", "ada@example.com")
BOB = ("Bob Merger", "bob@example.com")
CAROL = ("Carol Shaw", "carol@example.com")
DAVE = ("Dave Cutler", "dave@example.com")
EVE = ("Eve Notes", "eve@example.com")
GRACE = ("Grace Hopper", "grace@example.com")
MALLORY = ("Mallory Claims", "mallory@example.com")


def who(person: tuple[str, str]) -> str:
    return f"{person[0]} <{person[1]}>"


FILES = {
    "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec: {type: simulator}
""",
    "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  converges: [params.os]
  work:
    - {name: install, type: provider, action: install-os, args: {os: "${params.os}"}}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: app}
spec:
  converges: [params.application]
  work:
    - name: install
      type: provider
      action: install-app
      args: {application: "${params.application}"}
""",
    "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: node}
spec:
  inputs:
    - {name: os, required: true}
    - {name: application, default: plain}
  steps:
    - stage: install-os
    - stage: app
""",
    "profiles.yaml": """\
apiVersion: reconciler/v1
kind: Profile
metadata: {name: global}
spec: {params: {}}
---
apiVersion: reconciler/v1
kind: Profile
metadata: {name: web}
spec: {params: {application: nginx}}
""",
    "machines.yaml": """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m1}
spec: {provider: sim, pipeline: node, params: {os: ubuntu}}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m2}
spec: {provider: sim, pipeline: node, profiles: [web], params: {os: ubuntu}}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m3}
spec: {provider: sim, pipeline: node, params: {os: ubuntu}}
""",
    "policy.yaml": f"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {{name: default}}
spec:
  approvals:
    required: false
    reviewers:
      - paths: [machines.yaml]
        names: ["{who(GRACE)}"]
""",
}


class People:
    """A clone of the served repository where each person commits as themselves."""

    def __init__(self, tmp: Path, url: str, bare: Path) -> None:
        self.bare = bare
        self.work = tmp / "work"
        self.settings = Settings(repo=url, state_dir=tmp / "state", branch="main")
        git("clone", "-q", str(bare), str(self.work), cwd=tmp)
        for name, text in FILES.items():
            (self.work / name).write_text(text)

    def git(self, person: tuple[str, str], *args: str) -> str:
        name, email = person
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.work),
        }
        import subprocess

        done = subprocess.run(
            ["git", *args], cwd=self.work, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def commit(self, person: tuple[str, str], *message: str) -> str:
        self.git(person, "add", "-A")
        paragraphs = [arg for m in message for arg in ("-m", m)]
        self.git(person, "commit", "-q", "--allow-empty", *paragraphs)
        return self.git(person, "rev-parse", "HEAD")

    def edit(self, path: str, old: str, new: str) -> None:
        target = self.work / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}"
        target.write_text(text.replace(old, new, 1))

    def push(self) -> None:
        self.git(OPS, "push", "-q", "origin", "HEAD:main")

    def apply(self) -> None:
        assert run_apply(self.settings, quiet=True) == 0

    def records(self) -> list[dict]:
        listing = git(
            "--git-dir", str(self.bare), "ls-tree", "-r", "--name-only", "reconciler/status",
            "audit",
        )  # fmt: skip
        out = []
        for path in listing.split():
            text = git("--git-dir", str(self.bare), "show", f"reconciler/status:{path}")
            out += [json.loads(line) for line in text.splitlines() if line.strip()]
        return out

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(
            app,
            ["--repo", self.settings.repo, "--state-dir", str(self.settings.state_dir), *args],
        )
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture
def people(tmp_path: Path) -> Iterator[People]:
    try:
        with git_daemon(tmp_path / "srv") as server:
            yield People(tmp_path, server.url, server.bare)
    finally:
        structlog.reset_defaults()  # run_apply in-process configures logging for a CLI


def test_each_change_is_credited_to_who_made_it_and_who_merged_and_approved_it(
    people: People,
) -> None:
    declared = people.commit(OPS, "Declare the fleet")
    people.push()
    people.apply()
    first = people.records()
    assert {r["author"] for r in first} == {who(OPS)}
    assert {(r["change"], r["committer"], r["merge"]) for r in first} == {
        (declared, who(OPS), None)
    }

    # Ada re-images m1 on a branch; Bob merges it, with approvals in the merge commit.
    people.git(ADA, "checkout", "-q", "-b", "request/m1-rhel")
    people.edit(
        "machines.yaml", "{name: m1}\nspec: {provider: sim, pipeline: node, params: {os: ubuntu}}",
        "{name: m1}\nspec: {provider: sim, pipeline: node, params: {os: rhel}}",
    )  # fmt: skip
    ada = people.commit(ADA, "Re-image m1 with RHEL")
    people.git(BOB, "checkout", "-q", "main")
    people.git(
        BOB, "merge", "-q", "--no-ff", "request/m1-rhel", "-m", "Merge request/m1-rhel",
        "-m", f"Approved-by: {who(GRACE)}\nApproved-by: {who(MALLORY)}",
    )  # fmt: skip
    merge = people.git(BOB, "rev-parse", "HEAD")
    # Carol re-images m3: another document of the same file, after the merge.
    people.edit(
        "machines.yaml", "{name: m3}\nspec: {provider: sim, pipeline: node, params: {os: ubuntu}}",
        "{name: m3}\nspec: {provider: sim, pipeline: node, params: {os: rhel}}",
    )  # fmt: skip
    carol = people.commit(CAROL, "Re-image m3 with RHEL")
    # Dave changes the web profile: m2 resolves from it.
    people.edit("profiles.yaml", "application: nginx", "application: apache")
    dave = people.commit(DAVE, "web servers run apache")
    # Eve's commit on top touches no declared document.
    (people.work / "NOTES.md").write_text("Change freeze starts Friday.\n")
    eve = people.commit(EVE, "Notes")
    people.push()
    people.apply()

    latest = [r for r in people.records() if r["revision"] == eve]
    by_resource: dict[str, list[dict]] = {}
    for record in latest:
        by_resource.setdefault(record["resource"], []).append(record)
    assert set(by_resource) == {"Machine/m1", "Machine/m2", "Machine/m3"}
    assert {r["stage"] for r in by_resource["Machine/m1"]} == {"install-os", "app"}
    assert not [r for r in latest if who(EVE) in json.dumps(r)]  # the head's author is nobody's

    m1 = by_resource["Machine/m1"]
    assert {(r["author"], r["change"], r["committer"], r["merge"]) for r in m1} == {
        (who(ADA), ada, who(BOB), merge)
    }
    assert {r["execution"] for r in m1} == {latest[0]["execution"]}
    for record in m1:
        assert record["approvers"] == [who(GRACE)]
        assert sorted(record["approvals"], key=lambda a: a["name"]) == [
            {"name": who(GRACE), "commit": merge, "status": "verified", "via": "trailer"},
            {"name": who(MALLORY), "commit": merge, "status": "claimed", "via": "trailer"},
        ]
    m3 = by_resource["Machine/m3"]
    assert {(r["author"], r["change"], r["committer"], r["merge"]) for r in m3} == {
        (who(CAROL), carol, who(CAROL), None)
    }
    assert all(r["approvals"] == [] and r["approvers"] == [] for r in m3)
    m2 = by_resource["Machine/m2"]
    assert {(r["author"], r["change"], r["committer"]) for r in m2} == {
        (who(DAVE), dave, who(DAVE))
    }
    assert {r["stage"] for r in m2} == {"app"}

    # `reconciler audit` tells m1's story with them.
    story = json.loads(people.cli("audit", "Machine/m1", "--output", "json"))
    actions = [e for e in story["entries"] if e["kind"] == "action"]
    assert [(a["operation"], a["author"]) for a in actions] == [
        ("create", who(OPS)),
        ("update", who(ADA)),
    ]
    update = actions[-1]
    assert update["change"] == ada and update["change_subject"] == "Re-image m1 with RHEL"
    assert update["committer"] == who(BOB) and update["merge"] == merge
    assert update["subject"] == "Notes"  # the declared revision it was applied at
    assert {(a["name"], a["status"]) for a in update["approvals"]} == {
        (who(GRACE), "verified"),
        (who(MALLORY), "claimed"),
    }
    text = people.cli("audit", "Machine/m1")
    assert f'asked by:    {who(ADA)} (commit {ada[:12]} "Re-image m1 with RHEL")' in text
    assert f"merged by:   {who(BOB)} (merge {merge[:12]})" in text
    assert f"{who(GRACE)} (verified, commit {merge[:12]})" in text
    assert f"{who(MALLORY)} (claimed, commit {merge[:12]})" in text
