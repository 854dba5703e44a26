"""Rule changes are themselves gated, through the real CLI: the reviewers list and the
trusted signers (the list in the Policy and the signers file it names).

The sample repository is served by `git daemon` on 127.0.0.1; a person's clone
commits (some of them SSH-signed with `ssh-keygen` keys) and pushes; every cycle is a
`reconciler apply` subprocess. Asserted on the status branch and the simulator's
action log: a commit that changes who may approve, together with a gated change it
would then approve itself, stays blocked however many cycles run at that head, and
passes once an approver under the rules in force approves.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from reconciler.cli.demo import DEMO_SECRETS, demo_sink
from tests.conftest import ROOT
from tests.e2e import test_pull_requests as pr
from tests.servers.git import free_port, git_daemon

pytestmark = pytest.mark.slow

ADA, GRACE = pr.ADA, pr.GRACE
MALLORY = "Mallory Evil <mallory@example.com>"
STORAGE = "Machine/r02-node01"


class CliFleet(pr.Fleet):
    """The pull-request tests' fleet, each cycle and command a `reconciler` subprocess."""

    def _argv(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "reconciler",
            "--repo",
            self.settings.repo,
            "--state-dir",
            str(self.settings.state_dir),
            *args,
        ]

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RECONCILER_PLAN_BRANCHES": "request/*"}
        env.pop("RECONCILER_CONFIG", None)
        return subprocess.run(
            self._argv(*args), capture_output=True, text=True, env=env, timeout=180
        )

    def apply(self, code: int = 0) -> None:
        done = self._run("apply")
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr

    def cli(self, *args: str, code: int = 0) -> str:
        done = self._run(*args)
        assert done.returncode == code, done.stdout + done.stderr
        return done.stdout

    def started(self, key: str) -> list[str]:
        db = sqlite3.connect(f"file:{self.settings.state_dir / 'simulator.db'}?mode=ro", uri=True)
        try:
            found = db.execute(
                "SELECT action FROM action_log WHERE event = 'started' AND key = ? ORDER BY seq",
                (key,),
            ).fetchall()
        finally:
            db.close()
        return [r[0] for r in found]

    def stalled(self, key: str) -> str:
        node = self.status(key)
        assert node["phase"] == "Stalled", node
        return json.dumps(node["conditions"])


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliFleet]:
    for name, value in DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)  # the subprocesses inherit them
    try:
        with git_daemon(tmp_path / "srv") as server, demo_sink(free_port()) as port:
            yield CliFleet(tmp_path, server.url, server.bare, port, RULES)
    finally:
        structlog.reset_defaults()


RULES = json.loads(json.dumps(pr.POLICY))
RULES["spec"]["approvals"]["reviewers"].append({"paths": ["policy.yaml"], "names": [GRACE]})


def declare_approved(fleet: CliFleet) -> None:
    fleet.commit("Declare the sample fleet")
    fleet.push()
    fleet.apply(code=2)
    fleet.commit(f"Approve the initial fleet\n\nApproved-by: {ADA}\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply()
    assert fleet.status(STORAGE)["phase"] == "Ready"


def change_storage_application(fleet: CliFleet, to: str) -> None:
    text = (fleet.work / "profiles" / "profiles.yaml").read_text()
    current = "ceph-osd" if "application: ceph-osd" in text else "none"
    fleet.edit("profiles/profiles.yaml", f"application: {current}", f"application: {to}")


def test_a_new_reviewer_cannot_approve_the_commit_that_names_them(fleet: CliFleet) -> None:
    declare_approved(fleet)
    # Mallory makes herself storage's reviewer and, in the same commit, approves a
    # change to storage. Under the head's rules that would be enough.
    rules = json.loads(json.dumps(RULES))
    rules["spec"]["approvals"]["reviewers"][1]["names"] = [MALLORY]
    fleet.set_policy(rules)
    change_storage_application(fleet, "none")
    fleet.commit(f"Storage is mine now\n\nApproved-by: {MALLORY}")
    fleet.push()
    before = fleet.started(STORAGE)
    for _ in range(3):  # the same head: the rules in force are still the old ones
        fleet.apply(code=2)
        assert f"needs approval from {GRACE}" in fleet.stalled(STORAGE)
    assert fleet.started(STORAGE) == before
    assert "the approval rules changed in Git (approvals.reviewers)" in fleet.cli("plan", code=2)

    # Grace (the policy's reviewer under the rules in force) approves the new list:
    # from then on Mallory's approval of the storage change counts.
    fleet.commit(f"Approve the new storage reviewer\n\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply()
    assert fleet.status(STORAGE)["phase"] == "Ready"
    assert fleet.started(STORAGE)[len(before) :] == ["install-app"]
    assert "the approval rules changed" not in fleet.cli("plan")


def keys(fleet: CliFleet, *who: str) -> Path:
    folder = fleet.tmp / "keys"
    folder.mkdir(exist_ok=True)
    for name in who:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / name)],
            check=True,
        )
    return folder


def public(folder: Path, name: str) -> str:
    return " ".join((folder / f"{name}.pub").read_text().split()[:2])


def signing(folder: Path, name: str) -> tuple[str, ...]:
    return (
        "-c",
        "gpg.format=ssh",
        "-c",
        f"user.signingkey={folder / name}.pub",
        "-c",
        "commit.gpgsign=true",
    )


def signed_rules(fleet: CliFleet, signers: str) -> dict:
    (fleet.work / "keys").mkdir(exist_ok=True)
    (fleet.work / "keys" / "allowed_signers").write_text(signers)
    ignore = fleet.work / ".reconcilerignore"
    if "keys/" not in ignore.read_text():
        ignore.write_text(ignore.read_text() + "\nkeys/\n")
    rules = json.loads(json.dumps(RULES))
    rules["spec"]["approvals"].update(
        requireSignature=True, trustedSigners=["repo:keys/allowed_signers"]
    )
    rules["spec"]["protected"] = [{"matchLabels": {"role": "storage"}}]
    return rules


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_a_signed_commit_that_trusts_its_own_key_stays_blocked(fleet: CliFleet) -> None:
    folder = keys(fleet, "ada", "grace", "mallory")
    signers = (
        f"ada@example.com {public(folder, 'ada')}\ngrace@example.com {public(folder, 'grace')}\n"
    )
    fleet.set_policy(signed_rules(fleet, signers))
    fleet.commit("Declare the sample fleet", *signing(folder, "grace"))  # her approval
    fleet.push()
    fleet.apply()
    assert fleet.status(STORAGE)["phase"] == "Ready"

    # Mallory's key is written into the signers file under Grace's name (the Policy's
    # list is unchanged: only the file it names), and the commit doing it, signed with
    # Mallory's key, changes storage. Under the head's signers it would verify as Grace.
    forged = signers + f"grace@example.com {public(folder, 'mallory')}\n"
    (fleet.work / "keys" / "allowed_signers").write_text(forged)
    change_storage_application(fleet, "none")
    fleet.commit(
        f"Trust another key for Grace\n\nApproved-by: {GRACE}", *signing(folder, "mallory")
    )
    fleet.push()
    before = fleet.started(STORAGE)
    for _ in range(2):
        fleet.apply(code=2)
        assert "signed by an untrusted key" in fleet.stalled(STORAGE)
    assert fleet.started(STORAGE) == before
    assert "approvals.trustedSigners (the signers files)" in fleet.cli("plan", code=2)

    # The Policy's list changes too (a second file, Mallory's): still the old signers.
    (fleet.work / "keys" / "more_signers").write_text(
        f"grace@example.com {public(folder, 'mallory')}\n"
    )
    rules = signed_rules(fleet, forged)
    rules["spec"]["approvals"]["trustedSigners"].append("repo:keys/more_signers")
    fleet.set_policy(rules)
    fleet.commit(f"Trust more signers\n\nApproved-by: {GRACE}", *signing(folder, "mallory"))
    fleet.push()
    fleet.apply(code=2)
    fleet.apply(code=2)
    assert "signed by an untrusted key" in fleet.stalled(STORAGE)
    assert fleet.started(STORAGE) == before
    assert "the approval rules changed in Git (approvals.trustedSigners)" in fleet.cli(
        "plan", code=2
    )

    # Grace signs with her own key (trusted under the rules in force), in a commit that
    # is itself a rule change and a gated change: her signature approves both at once.
    # (Back to the reviewed signers, and Ada as a second storage reviewer.)
    (fleet.work / "keys" / "more_signers").unlink()
    (fleet.work / "keys" / "allowed_signers").write_text(signers)
    rules = signed_rules(fleet, signers)
    rules["spec"]["approvals"]["reviewers"][1]["names"] = [GRACE, ADA]
    fleet.set_policy(rules)
    fleet.commit("Reviewed signers; Ada reviews storage too", *signing(folder, "grace"))
    fleet.push()
    fleet.apply()
    assert fleet.status(STORAGE)["phase"] == "Ready"
    assert fleet.started(STORAGE)[len(before) :] == ["install-app"]
    assert "the approval rules changed" not in fleet.cli("plan")
