"""End to end: the sample repository served by a real git daemon, applied by the real CLI.

`reconciler apply` runs as a subprocess against a git:// remote on 127.0.0.1;
the sample's webhooks and CMDB calls go to the demo's local receiver (a real
HTTP server); the simulator stands in for the fleet, as in the demo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli.demo import DEMO_SECRETS, demo_sink
from tests.conftest import ROOT
from tests.servers.git import free_port, git, git_daemon

pytestmark = pytest.mark.slow


class Fleet:
    """The served repository, a person's clone of it, and the controller's state dir."""

    def __init__(self, tmp: Path, url: str, bare: Path, sink_port: int) -> None:
        self.url = url
        self.bare = bare
        self.state = tmp / "state"
        self.work = tmp / "work"
        git("clone", "-q", str(bare), str(self.work), cwd=tmp)
        shutil.copytree(ROOT / "sample-repo", self.work, dirs_exist_ok=True)
        for path in self.work.rglob("*.yaml"):  # webhooks and CMDB go to this test's receiver
            path.write_text(path.read_text().replace("127.0.0.1:8099", f"127.0.0.1:{sink_port}"))
        self.push("Declare the sample fleet")

    def push(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def edit(self, path: str, old: str, new: str) -> None:
        target = self.work / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}"
        target.write_text(text.replace(old, new, 1))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **DEMO_SECRETS}
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler",
                "--repo",
                self.url,
                "--state-dir",
                str(self.state),
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    def statuses(self) -> dict[str, dict]:
        done = self.cli("status", "--output", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def status_file(self, path: str) -> str:
        return git("--git-dir", str(self.bare), "show", f"reconciler/status:{path}")

    def audit_since(self, commit: str) -> list[dict]:
        names = git(
            "--git-dir",
            str(self.bare),
            "diff",
            "--name-only",
            commit,
            "reconciler/status",
            "--",
            "audit",
        ).split()
        records: list[dict] = []
        for name in names:
            records += [json.loads(line) for line in self.status_file(name).splitlines() if line]
        return records

    def simulator(self, *args: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler.providers.simulator",
                *args,
                "--state-dir",
                str(self.state),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def observed(self, key: str) -> dict:
        return self.statuses()[key]["observed"]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with git_daemon(tmp_path / "srv") as server, demo_sink(free_port()) as port:
        yield Fleet(tmp_path, server.url, server.bare, port)


def test_apply_change_drift_and_self_heal(fleet: Fleet) -> None:
    first = fleet.cli("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Plan: 10 to create" in first.stdout
    statuses = fleet.statuses()
    assert len(statuses) == 10
    assert {s["phase"] for s in statuses.values()} == {"Ready"}
    assert statuses["Machine/r02-node02"]["stageReached"] == "register"
    head = git("--git-dir", str(fleet.bare), "rev-parse", "reconciler/status")
    assert "Reconciled-Revision:" in git(
        "--git-dir", str(fleet.bare), "log", "-1", "--format=%B", head
    )

    # Nothing changed: in sync, and no new status commit.
    again = fleet.cli("apply")
    assert again.returncode == 0, again.stderr
    assert "In sync: 10 resources" in again.stdout
    assert git("--git-dir", str(fleet.bare), "rev-parse", "reconciler/status") == head

    # A param change in Git runs only the stages that converge it, on that machine only.
    fleet.edit(
        "machines/rack-r01.yaml",
        '  profiles: [k8s-worker]\n  rack: r01\n  bmc: {address: "10.1.0.13"',
        '  profiles: [k8s-worker]\n  rack: r01\n  bmc: {address: "10.1.0.13"',
    )
    fleet.edit(
        "machines/rack-r01.yaml",
        "  dependsOn: [r01-node01]\n---",
        '  dependsOn: [r01-node01]\n  params: {applicationVersion: "1.32"}\n---',
    )
    fleet.push("Upgrade r01-node02 to Kubernetes 1.32")
    changed = fleet.cli("apply")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "~ Machine/r01-node02" in changed.stdout
    records = fleet.audit_since(head)
    assert {r["resource"] for r in records} == {"Machine/r01-node02"}
    assert {r["stage"] for r in records} == {"install-app", "register"}
    assert all(r["author"] == "A Human <human@example.com>" for r in records)
    assert fleet.observed("Machine/r01-node02")["params"]["applicationVersion"] == "1.32"

    # Drift by hand: reported, not corrected (selfHeal is off).
    fleet.simulator("drift", "Machine/r01-node03", "params.os", '"rhel-9"')
    drifted = fleet.cli("apply")
    assert drifted.returncode == 0, drifted.stderr
    assert "! Machine/r01-node03" in drifted.stdout
    status = fleet.statuses()["Machine/r01-node03"]
    assert status["phase"] == "Drifted"
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Drifted"]
    assert "`Machine/r01-node03`" in fleet.status_file("reports/drift.md")
    assert fleet.observed("Machine/r01-node03")["params"]["os"] == "rhel-9"

    # With selfHeal on (and no change window in the way), the drift is corrected.
    fleet.edit("policy.yaml", "  selfHeal: false", "  selfHeal: true")
    fleet.edit(
        "policy.yaml",
        "  changeWindows:\n    - {days: [tue, wed, thu], "
        'start: "09:00", end: "16:00", timezone: Europe/Paris}\n',
        "",
    )
    fleet.push("Let the controller correct drift")
    # Correcting it re-runs a destructive stage: off a terminal, refused without --yes.
    refused = fleet.cli("apply")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "apply refused: the plan holds 1 destructive action" in refused.stderr
    assert fleet.statuses()["Machine/r01-node03"]["phase"] == "Pending"
    assert fleet.observed("Machine/r01-node03")["params"]["os"] == "rhel-9"
    healed = fleet.cli("apply", "--yes")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    status = fleet.statuses()["Machine/r01-node03"]
    assert status["phase"] == "Ready"
    assert status["observed"]["params"]["os"] == "ubuntu-24.04"
    assert "| corrected (selfHeal) |" in fleet.status_file("reports/drift.md")
    assert fleet.cli("apply").returncode == 0
    assert "No drift" in fleet.status_file("reports/drift.md")


def test_invalid_commit_keeps_last_good_revision(fleet: Fleet) -> None:
    assert fleet.cli("apply").returncode == 0
    good = git("rev-parse", "HEAD", cwd=fleet.work)
    fleet.edit("machines/rack-r02.yaml", "pipeline: bare-metal", "pipeline: no-such-pipeline")
    bad = fleet.push("A typo")
    result = fleet.cli("apply")
    assert result.returncode == 1, "the head could not be applied: apply must say so"
    assert "ValidationFailed" in result.stderr
    assert "machines/rack-r02.yaml:9:13: unknown Pipeline 'no-such-pipeline'" in result.stderr
    controller = fleet.status_file("status/controller.yaml")
    assert f"revision: {good}" in controller
    assert bad in controller and "unknown Pipeline" in controller
    assert {s["phase"] for s in fleet.statuses().values()} == {"Ready"}


def test_status_that_cannot_be_pushed_is_said_and_kept_for_the_next_cycle(tmp_path: Path) -> None:
    from tests.conftest import BASE_FILES

    work = tmp_path / "checkout"
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    for path, text in BASE_FILES.items():
        (work / path).write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "two machines", cwd=work)
    state = tmp_path / "state"

    def apply(repo: Path | str, state_dir: Path = state) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler",
                "--repo",
                str(repo),
                "--state-dir",
                str(state_dir),
                "apply",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    # A working copy is refused before anything runs: pushing status to it would fail
    # only after the machines were installed.
    working_copy = apply(work, tmp_path / "other-state")
    assert working_copy.returncode == 1
    assert "is a working copy, not a bare repository" in working_copy.stderr
    assert "Traceback" not in working_copy.stderr
    assert not (tmp_path / "other-state" / "simulator.db").exists()

    # A remote (git daemon) whose server refuses the status push (a pre-receive hook).
    with git_daemon(tmp_path / "srv") as server:
        git("push", "-q", str(server.bare), "main", cwd=work)
        hook = server.bare / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'status pushes are closed today' >&2\nexit 1\n")
        hook.chmod(0o755)
        refused = apply(server.url)
        assert refused.returncode == 1
        assert "status NOT written" in refused.stderr
        assert "status pushes are closed today" in refused.stderr
        assert "Traceback" not in refused.stderr
        # The hook gone, the next cycle reports what already ran, running nothing.
        hook.unlink()
        done = apply(server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reported a plan that ended before from the journal" in done.stdout
    assert "status committed" in done.stdout
    log = subprocess.run(
        [sys.executable, "-m", "reconciler.providers.simulator", "log", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    started = [json.loads(line) for line in log.splitlines() if '"started"' in line]
    assert len(started) == len({(e["key"], e["action"], e["idempotency_key"]) for e in started})
    assert {e["key"] for e in started} == {"Machine/m1", "Machine/m2"}
