"""Pull requests, approval gates and audit, end to end against a real git daemon.

The sample repository is served by `git daemon` on 127.0.0.1; a person's clone
pushes branches and merges; the controller runs full cycles in-process (the
same `run_apply` the CLI calls) and `reconciler audit` runs through the CLI.
The simulator stands in for the fleet, as in the demo.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml
from typer.testing import CliRunner

from reconciler.cli.cli import app
from reconciler.cli.commands import run_apply
from reconciler.cli.demo import DEMO_SECRETS, demo_sink
from reconciler.settings import Settings
from tests.conftest import ROOT
from tests.servers.git import free_port, git, git_daemon

pytestmark = pytest.mark.slow

ADA = "Ada Lovelace <ada@example.com>"
GRACE = "Grace Hopper <grace@example.com>"

POLICY = {
    "apiVersion": "reconciler/v1",
    "kind": "Policy",
    "metadata": {"name": "default"},
    "spec": {
        "prune": True,
        "selfHeal": False,
        "maxDestructiveActions": 3,
        "protected": [{"name": "Machine/r01-node01"}, {"matchLabels": {"role": "storage"}}],
        "approvals": {
            "required": True,
            "reviewers": [
                {"paths": ["machines/rack-r01.yaml"], "names": [ADA]},
                {"labels": {"role": "storage"}, "names": [GRACE]},
            ],
        },
    },
}

R02_NODE03 = """---
# yaml-language-server: $schema=../../schemas/machine.json
apiVersion: reconciler/v1
kind: Machine
metadata:
  name: r02-node03
  labels: {rack: r02, role: storage}
spec:
  provider: lab-sim
  pipeline: bare-metal
  profiles: [storage]
  rack: r02
  bmc: {address: "10.2.0.13", mac: "52:54:00:02:00:03"}
  dependsOn: [r02-node01]
"""

NEW_MACHINE = """---
apiVersion: reconciler/v1
kind: Machine
metadata:
  name: r01-node05
  labels: {rack: r01, role: k8s-worker}
spec:
  provider: lab-sim
  pipeline: bare-metal
  profiles: [k8s-worker]
  rack: r01
  bmc: {address: "10.1.0.15", mac: "52:54:00:01:00:05"}
"""


class Fleet:
    """The served repository, a person's clone of it, and the controller's settings."""

    def __init__(self, tmp: Path, url: str, bare: Path, sink_port: int, policy: dict) -> None:
        self.tmp = tmp
        self.bare = bare
        self.work = tmp / "work"
        self.settings = Settings(
            repo=url, state_dir=tmp / "state", plan_branches="request/*", branch="main"
        )
        git("clone", "-q", str(bare), str(self.work), cwd=tmp)
        shutil.copytree(ROOT / "sample-repo", self.work, dirs_exist_ok=True)
        for path in self.work.rglob("*.yaml"):  # webhooks and CMDB go to this test's receiver
            path.write_text(path.read_text().replace("127.0.0.1:8099", f"127.0.0.1:{sink_port}"))
        self.set_policy(policy)

    def set_policy(self, policy: dict) -> None:
        (self.work / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))

    def commit(self, message: str, *extra: str) -> str:
        git("add", "-A", cwd=self.work)
        git(*extra, "commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, ref: str = "main") -> None:
        git("push", "-q", "origin", f"HEAD:{ref}", cwd=self.work)

    def edit(self, path: str, old: str, new: str) -> None:
        target = self.work / path
        text = target.read_text()
        assert old in text, f"{old!r} not in {path}"
        target.write_text(text.replace(old, new, 1))

    def apply(self, code: int = 0) -> None:
        """One cycle; `code` is the exit code `apply` must give (2: resources wait)."""
        thresholds = gc.get_threshold()
        assert run_apply(self.settings, quiet=True) == code
        # The cycle's collector settings are given back to an in-process caller.
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds

    def status_file(self, path: str) -> str:
        return git("--git-dir", str(self.bare), "show", f"reconciler/status:{path}")

    def status_paths(self, under: str) -> list[str]:
        out = git(
            "--git-dir", str(self.bare), "ls-tree", "-r", "--name-only", "reconciler/status", under
        )
        return out.split()

    def status(self, key: str) -> dict:
        kind, name = key.split("/")
        return yaml.safe_load(self.status_file(f"status/{kind}/{name}.yaml"))

    def cli(self, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(
            app,
            ["--repo", self.settings.repo, "--state-dir", str(self.settings.state_dir), *args],
        )
        assert result.exit_code == code, result.output
        return result.output


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    for name, value in DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)
    try:
        with git_daemon(tmp_path / "srv") as server, demo_sink(free_port()) as port:
            yield Fleet(tmp_path, server.url, server.bare, port, POLICY)
    finally:
        structlog.reset_defaults()  # run_apply in-process configures logging for a CLI


def test_branch_plans_gates_and_audit(fleet: Fleet) -> None:
    # Change 1: the fleet is declared; creating protected machines needs approval too.
    fleet.commit("Declare the sample fleet")
    fleet.push()
    fleet.apply(code=2)
    node01 = fleet.status("Machine/r01-node01")
    assert node01["phase"] == "Stalled"
    ready = next(c for c in node01["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "BlockedByPolicy"
    assert f"needs approval from {ADA}" in ready["message"]
    # Its dependents wait for it (dependsOn), the rest of the fleet proceeds.
    assert fleet.status("Machine/r01-node02")["phase"] == "Stalled"
    assert "dependency Machine/r01-node01 is not Ready: its create is blocked" in json.dumps(
        fleet.status("Machine/r01-node02")["conditions"]
    )
    assert fleet.status("Instance/bastion")["phase"] == "Ready"
    assert fleet.status("Machine/r02-node01")["phase"] == "Stalled"  # storage: Grace's

    # An approval from the listed reviewers (an empty commit with trailers) lets them run.
    fleet.commit(f"Approve the initial fleet\n\nApproved-by: {ADA}\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply()
    assert fleet.status("Machine/r01-node01")["phase"] == "Ready"
    assert fleet.status("Machine/r02-node03")["phase"] == "Ready"
    assert fleet.status("Machine/r01-node02")["phase"] == "Ready"

    # A branch adding a machine gets its plan on the status branch.
    git("checkout", "-q", "-b", "request/add-node05", cwd=fleet.work)
    (fleet.work / "machines" / "rack-r01.yaml").write_text(
        (fleet.work / "machines" / "rack-r01.yaml").read_text() + NEW_MACHINE
    )
    branch_head = fleet.commit("Add r01-node05")
    fleet.push("request/add-node05")
    fleet.apply()
    plan_md = fleet.status_file("plans/request/add-node05.md")
    assert f"head={branch_head}" in plan_md.splitlines()[0]
    assert "plan-hash=" in plan_md.splitlines()[0]
    assert "+ Machine/r01-node05  create: discover" in plan_md
    assert "Machine/r01-node01" not in plan_md.split("####", 1)[1]  # only what the branch adds
    assert "1 to create" in plan_md

    # The branch moves: the plan follows; the branch is deleted: the plan goes away.
    fleet.edit("machines/rack-r01.yaml", 'address: "10.1.0.15"', 'address: "10.1.0.25"')
    moved = fleet.commit("Fix r01-node05's BMC address")
    fleet.push("request/add-node05")
    fleet.apply()
    assert f"head={moved}" in fleet.status_file("plans/request/add-node05.md")
    git("checkout", "-q", "main", cwd=fleet.work)
    git("push", "-q", "origin", "--delete", "request/add-node05", cwd=fleet.work)
    fleet.apply()
    assert fleet.status_paths("plans") == []

    # Change 2: re-imaging the protected r01-node01 (os -> rhel-9) without approval: blocked.
    fleet.edit(
        "machines/rack-r01.yaml",
        "    rootPassword: env:R01_ROOT_PASSWORD\n",
        "    rootPassword: env:R01_ROOT_PASSWORD\n    os: rhel-9\n",
    )
    fleet.commit("Re-image r01-node01 with RHEL 9")
    fleet.push()
    fleet.apply(code=2)
    node01 = fleet.status("Machine/r01-node01")
    assert node01["phase"] == "Stalled"
    assert node01["observed"]["params"]["os"] == "ubuntu-24.04"
    assert f"needs approval from {ADA}" in json.dumps(node01["conditions"])

    # An approval from someone not listed for rack r01 changes nothing.
    fleet.commit(f"Approve it\n\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply(code=2)
    assert fleet.status("Machine/r01-node01")["phase"] == "Stalled"

    # Change 3: Ada approves; the re-image runs.
    fleet.commit(f"Approve the re-image\n\nApproved-by: {ADA}")
    fleet.push()
    fleet.apply()
    node01 = fleet.status("Machine/r01-node01")
    assert node01["phase"] == "Ready"
    assert node01["observed"]["params"]["os"] == "rhel-9"

    # Destroying a protected (storage) machine through a merged branch, prune on:
    # blocked without Grace's approval, done with it (the merge commit carries it).
    git("checkout", "-q", "-b", "request/retire-r02-node03", cwd=fleet.work)
    fleet.edit("machines/rack-r02.yaml", R02_NODE03, "")
    fleet.commit("Retire r02-node03")
    fleet.push("request/retire-r02-node03")
    fleet.apply()
    retire_plan = fleet.status_file("plans/request/retire-r02-node03.md")
    assert "- Machine/r02-node03  decommission" in retire_plan
    assert f"BLOCKED: needs approval from {GRACE}" in retire_plan
    ci = fleet.cli(
        "plan", "--base", "main", "--head", "request/retire-r02-node03", "--output", "markdown",
        code=2,
    )  # fmt: skip
    assert f"> - `Machine/r02-node03`: needs approval from {GRACE}" in ci
    assert "- Machine/r02-node03  decommission  [DESTRUCTIVE]" in ci
    git("checkout", "-q", "main", cwd=fleet.work)
    git("merge", "-q", "--no-ff", "-m", "Merge request/retire-r02-node03",
        "request/retire-r02-node03", cwd=fleet.work)  # fmt: skip
    fleet.push()
    fleet.apply(code=2)
    pending = fleet.cli("plan", code=2)  # the old approval by Grace, before the change, is void
    assert "- Machine/r02-node03  decommission" in pending
    assert f"BLOCKED: needs approval from {GRACE}" in pending
    fleet.commit(f"Approve retiring r02-node03\n\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply()
    assert "r02-node03" not in fleet.cli("plan", code=0)
    records = [
        json.loads(line)
        for path in fleet.status_paths("audit")
        for line in fleet.status_file(path).splitlines()
    ]
    retired = [r for r in records if r["resource"] == "Machine/r02-node03"]
    assert {r["operation"] for r in retired} >= {"decommission"}
    assert all(r["approvers"] == [GRACE] for r in retired if r["operation"] == "decommission")

    # The audit command tells r01-node01's story across the three changes.
    story = json.loads(fleet.cli("audit", "Machine/r01-node01", "--output", "json"))
    entries = story["entries"]
    actions = [e for e in entries if e["kind"] == "action"]
    assert [a["operation"] for a in actions] == ["create", "update"]
    assert actions[0]["subject"] == "Approve the initial fleet"
    assert actions[0]["approvers"] == [ADA]
    assert actions[0]["author"] == "A Human <human@example.com>"
    assert actions[1]["subject"] == "Approve the re-image"
    assert actions[1]["approvers"] == [ADA]
    assert actions[1]["stages"][0] == "install-os"
    assert all(a["result"] == "succeeded" for a in actions)
    blocked = [e for e in entries if e["kind"] == "status" and e.get("reason") == "BlockedByPolicy"]
    assert [e["subject"] for e in blocked] == [
        "Declare the sample fleet",
        "Re-image r01-node01 with RHEL 9",
    ]
    assert all(ADA in e["message"] for e in blocked)
    assert [(e["kind"], e.get("operation") or e.get("phase")) for e in entries] == [
        ("status", "Stalled"),
        ("action", "create"),
        ("status", "Ready"),
        ("status", "Stalled"),
        ("action", "update"),
        ("status", "Ready"),
    ]
    text = fleet.cli("audit", "Machine/r01-node01")
    assert f"approved by: {ADA}" in text and "install-os" in text
    assert fleet.cli("audit", "Machine/r01-node01", "--since", "2999-01-01").startswith(
        "No history"
    )

    # Every status commit names the declared revision it reconciled.
    log = git("--git-dir", str(fleet.bare), "log", "--format=%B%x00", "reconciler/status")
    messages = [m for m in log.split("\x00") if m.strip()]
    assert all("Reconciled-Revision: " in m for m in messages)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_signatures_required(fleet: Fleet) -> None:
    keys = fleet.tmp / "keys"
    keys.mkdir()
    for who in ("grace", "mallory"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(keys / who)],
            check=True,
        )
    grace_public = " ".join((keys / "grace.pub").read_text().split()[:2])
    (fleet.work / "keys").mkdir()
    (fleet.work / "keys" / "allowed_signers").write_text(f"grace@example.com {grace_public}\n")
    (fleet.work / ".reconcilerignore").write_text(
        (fleet.work / ".reconcilerignore").read_text() + "\nkeys/\n"
    )
    policy = json.loads(json.dumps(POLICY))
    policy["spec"]["approvals"].update(
        requireSignature=True, trustedSigners=["repo:keys/allowed_signers"]
    )
    policy["spec"]["protected"] = [{"matchLabels": {"role": "storage"}}]
    fleet.set_policy(policy)
    fleet.commit(f"Declare the sample fleet\n\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply(code=2)
    # Unsigned: the approval does not count when signatures are required.
    node = fleet.status("Machine/r02-node01")
    assert node["phase"] == "Stalled"
    assert "refused: it is not signed" in json.dumps(node["conditions"])

    def signed(key: str, message: str) -> None:
        fleet.commit(
            message,
            "-c",
            "gpg.format=ssh",
            "-c",
            f"user.signingkey={keys / key}.pub",
            "-c",
            "commit.gpgsign=true",
        )
        fleet.push()

    # Signed by an untrusted key, with Grace's trailer: refused.
    signed("mallory", f"Approve storage\n\nApproved-by: {GRACE}")
    fleet.apply(code=2)
    node = fleet.status("Machine/r02-node01")
    assert node["phase"] == "Stalled"
    assert "signed by an untrusted key" in json.dumps(node["conditions"])

    # Signed by Grace's trusted key: her signature is her approval.
    signed("grace", "Approve storage, signed")
    fleet.apply()
    assert fleet.status("Machine/r02-node01")["phase"] == "Ready"
    story = json.loads(fleet.cli("audit", "Machine/r02-node01", "--output", "json"))
    created = [e for e in story["entries"] if e["kind"] == "action"]
    assert created and created[0]["approvers"] == [GRACE]


R02_NODE02 = """---
# yaml-language-server: $schema=../../schemas/machine.json
apiVersion: reconciler/v1
kind: Machine
metadata:
  name: r02-node02
  labels: {rack: r02, role: storage}
spec:
  provider: lab-sim
  pipeline: bare-metal
  profiles: [storage]
  rack: r02
  bmc: {address: "10.2.0.12", mac: "52:54:00:02:00:02"}
  dependsOn: [r02-node01]
"""


def test_pinned_plan_holds_what_reviewers_did_not_see(fleet: Fleet) -> None:
    policy = json.loads(json.dumps(POLICY))
    policy["spec"]["protected"] = []
    policy["spec"]["approvals"] = {"pinPlan": True}
    fleet.set_policy(policy)
    fleet.commit("Declare the sample fleet")
    fleet.push()
    fleet.apply()

    # Reviewers see a plan retiring r02-node03 ...
    git("checkout", "-q", "-b", "request/retire", cwd=fleet.work)
    fleet.edit("machines/rack-r02.yaml", R02_NODE03, "")
    fleet.commit("Retire r02-node03")
    fleet.push("request/retire")
    fleet.apply()
    header = fleet.status_file("plans/request/retire.md").splitlines()[1]
    assert header == '<!-- reconciler-destructive [["Machine/r02-node03","decommission",[]]] -->'
    # ... the merge also retires r02-node02, which no reviewer saw.
    git("checkout", "-q", "main", cwd=fleet.work)
    git("merge", "-q", "--no-ff", "-m", "Merge request/retire", "request/retire", cwd=fleet.work)
    fleet.edit("machines/rack-r02.yaml", R02_NODE02, "")
    fleet.commit("Retire r02-node02 too")
    git("push", "-q", "origin", "--delete", "request/retire", cwd=fleet.work)
    fleet.push()
    fleet.apply(code=2)  # r02-node02's decommission waits
    plan_text = fleet.cli("plan", code=2)
    assert "- Machine/r02-node02  decommission  [DESTRUCTIVE]" in plan_text
    assert "BLOCKED: held: no reviewed plan of a merged branch shows this decommission" in (
        plan_text
    )
    assert "r02-node03" not in plan_text  # the reviewed one ran
    records = [
        json.loads(line)
        for path in fleet.status_paths("audit")
        for line in fleet.status_file(path).splitlines()
    ]
    assert {r["resource"] for r in records if r["operation"] == "decommission"} == {
        "Machine/r02-node03"
    }
