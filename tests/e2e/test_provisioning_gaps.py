"""Provisioning semantics left untested by the first pass, through the real CLI.

`reconciler apply` runs as a subprocess against a bare repository and the simulator;
what is asserted is read from the other side (the simulator's records and action log,
the status branch, the state directory): re-creating a machine provisioned before is
destructive and gated like any destructive action; a stage whose converged field still
differs fails naming it; `RECONCILER_OWNER`; an owner URL without its credentials;
materialized trees kept by retention; `ansible-playbook` found on PATH only; adoption
declared on a Profile.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.providers.simulator import SimulatorProvider
from tests import repos
from tests.e2e.support import Fleet, rows
from tests.e2e.test_provisioning import PROVIDER, started, statuses

STAGES = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: discover}
spec:
  converges: [bmc]
  work:
    - {name: set-pxe, type: provider, action: set-boot, args: {device: pxe}}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  converges: [params.os]
  work:
    - {name: install, type: provider, action: install-os}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: power}
spec:
  converges: [power]
  work:
    - {name: set-power, type: provider, action: set-power}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bm}
spec:
  steps: [{stage: discover}, {stage: install-os}, {stage: power}]
"""

PIPELINE_ACTIONS = ("set-boot", "install-os", "set-power")


def machine(name: str, *, extra: str = "") -> str:
    return (
        f"---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: {name}}}\n"
        f"spec:\n  provider: sim\n  pipeline: bm\n  power: on\n"
        f"  bmc: {{address: 10.0.0.1}}\n  params: {{os: ubuntu}}\n{extra}"
    )


def policy(body: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n{body}"


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def commit_change(fleet: Fleet, path: str, text: str, message: str) -> str:
    """A person's commit on main changing one top-level file, straight into the bare repo."""
    return repos.commit_change(fleet.bare, {path: text}, message)


def owner_of(state: Path) -> str:
    return str(json.loads((state / "owner.json").read_text())["owner"])


def delete_behind_the_back(fleet: Fleet, *keys: str) -> None:
    """Someone deletes machines on the provider (a BMC reset to factory, a console)."""
    sim = SimulatorProvider.open(fleet.state, name="sim", repository=owner_of(fleet.state))
    try:
        for key in keys:
            sim.remove(key)
    finally:
        sim._db.close()


def simulated(fleet: Fleet) -> set[str]:
    return {r["key"] for r in rows(fleet.state / "simulator.db", "SELECT key FROM resources")}


# --- §4: re-creating what was provisioned before is destructive ---------------------------


def test_recreating_a_provisioned_machine_asks_first_and_counts_against_the_budget(
    tmp_path: Path,
) -> None:
    heal = policy("  selfHeal: true\n  maxDestructiveActions: 1\n")
    fleet = Fleet.create(
        tmp_path,
        {
            "providers.yaml": PROVIDER,
            "stages.yaml": STAGES,
            "machines.yaml": machine("m1") + machine("m2") + machine("m3"),
            "policy.yaml": heal,
        },
    )
    first = fleet.run("apply")  # creating what never existed is not destructive
    assert first.returncode == 0, first.stdout + first.stderr
    count = len(started(fleet))

    delete_behind_the_back(fleet, "Machine/m1")
    refused = fleet.run("apply")  # not on a terminal, no --yes: nobody said yes
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "apply refused: the plan holds 1 destructive action" in refused.stderr
    assert "re-created (destructive: it was provisioned before)" in refused.stdout
    assert started(fleet)[count:] == []
    assert "Machine/m1" not in simulated(fleet)

    confirmed = fleet.run("apply", "--yes")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert started(fleet)[count:] == [("Machine/m1", a) for a in PIPELINE_ACTIONS]
    assert statuses(fleet)["Machine/m1"]["phase"] == "Ready"
    count = len(started(fleet))

    # Two re-creations with a budget of one: both are held, even with --yes.
    delete_behind_the_back(fleet, "Machine/m1", "Machine/m2")
    over = fleet.run("apply", "--yes")
    assert over.returncode == 2, over.stdout + over.stderr
    assert started(fleet)[count:] == []
    status = statuses(fleet)
    for key in ("Machine/m1", "Machine/m2"):
        assert status[key]["phase"] == "Stalled", status[key]
        stalled = condition(status[key], "Stalled")
        assert stalled["reason"] == "BlockedByPolicy"
        assert "plan has 2 destructive actions, policy allows 1" in stalled["message"]
    assert simulated(fleet) == {"Machine/m3"}

    commit_change(fleet, "policy.yaml", policy("  selfHeal: true\n"), "Allow the default budget")
    within = fleet.run("apply", "--yes")
    assert within.returncode == 0, within.stdout + within.stderr
    assert sorted(started(fleet)[count:]) == sorted(
        (k, a) for k in ("Machine/m1", "Machine/m2") for a in PIPELINE_ACTIONS
    )


def test_recreating_a_protected_or_unapproved_machine_is_held(tmp_path: Path) -> None:
    gated = policy(
        "  selfHeal: true\n  protected: [{name: Machine/m1}]\n"
        "  approvals:\n    required: true\n"
        "    reviewers: [{paths: ['**'], names: ['Ada Lovelace <ada@example.com>']}]\n"
    )
    fleet = Fleet.create(
        tmp_path,
        {
            "providers.yaml": PROVIDER,
            "stages.yaml": STAGES,
            "machines.yaml": machine("m1") + machine("m2") + machine("m3"),
            "policy.yaml": gated,
        },
    )
    # Creating the protected m1 is gated too: approve the fleet's first commit's successor.
    commit_change(
        fleet, "notes.txt", "fleet\n", "Approve the fleet\n\nApproved-by: Ada <ada@example.com>"
    )
    first = fleet.run("apply", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    assert simulated(fleet) == {"Machine/m1", "Machine/m2", "Machine/m3"}
    count = len(started(fleet))

    delete_behind_the_back(fleet, "Machine/m1", "Machine/m2")
    held = fleet.run("apply", "--yes")
    assert held.returncode == 2, held.stdout + held.stderr
    assert started(fleet)[count:] == []
    status = statuses(fleet)
    m1 = condition(status["Machine/m1"], "Stalled")["message"]
    m2 = condition(status["Machine/m2"], "Stalled")["message"]
    assert "needs approval" in m1 and "needs approval" in m2, (m1, m2)
    assert simulated(fleet) == {"Machine/m3"}

    # An approval after the deletion releases m2; m1 is protected, approved, and released.
    commit_change(
        fleet,
        "notes.txt",
        "re-create\n",
        "Re-create m1 and m2\n\nApproved-by: Ada <ada@example.com>",
    )
    approved = fleet.run("apply", "--yes")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert sorted(started(fleet)[count:]) == sorted(
        (k, a) for k in ("Machine/m1", "Machine/m2") for a in PIPELINE_ACTIONS
    )


def test_recreating_a_protected_machine_without_approvals_is_refused(tmp_path: Path) -> None:
    fleet = Fleet.create(
        tmp_path,
        {
            "providers.yaml": PROVIDER,
            "stages.yaml": STAGES,
            "machines.yaml": machine("m1") + machine("m2"),
            "policy.yaml": policy("  selfHeal: true\n  protected: [{name: Machine/m1}]\n"),
        },
    )
    assert fleet.run("apply").returncode == 0
    count = len(started(fleet))
    delete_behind_the_back(fleet, "Machine/m1")
    held = fleet.run("apply", "--yes")
    assert held.returncode == 2, held.stdout + held.stderr
    assert started(fleet)[count:] == []
    stalled = condition(statuses(fleet)["Machine/m1"], "Stalled")
    assert "protected by policy; not approved" in stalled["message"]
    assert simulated(fleet) == {"Machine/m2"}


# --- §2: a converged field that still differs fails the stage ------------------------------


def test_a_stage_that_leaves_its_field_differing_fails_naming_it(tmp_path: Path) -> None:
    stages = STAGES.replace(
        "{name: set-power, type: provider, action: set-power}",
        "{name: set-power, type: provider, action: set-power, args: {state: 'off'}}",
    )
    fleet = Fleet.create(
        tmp_path,
        {"providers.yaml": PROVIDER, "stages.yaml": stages, "machines.yaml": machine("m1")},
    )
    result = fleet.run("apply")
    assert result.returncode == 1, result.stdout + result.stderr
    fields = rows(fleet.state / "simulator.db", "SELECT fields FROM resources")
    assert json.loads(fields[0]["fields"])["power"] == "off"  # the stage ran, and missed
    status = statuses(fleet)["Machine/m1"]
    assert status["phase"] == "Failed"
    ready = condition(status, "Ready")
    assert ready["reason"] == "TaskFailed"
    assert 'power: declared "on", observed "off"' in ready["message"]
    assert (status["failure"]["stage"], status["failure"]["task"]) == ("power", "converged")
    assert (
        status["failure"]["error"]
        == 'still differs after the stage: power: declared "on", observed "off"'
    )
    assert status["lastApplied"]["stagesDone"] == ["discover", "install-os"]


# --- §3: one owner identity -----------------------------------------------------------------


def test_reconciler_owner_is_what_ownership_records(tmp_path: Path) -> None:
    fleet = Fleet.create(
        tmp_path,
        {"providers.yaml": PROVIDER, "stages.yaml": STAGES, "machines.yaml": machine("m1")},
        env={"RECONCILER_OWNER": "team-infra/fleet"},
    )
    done = fleet.run("apply")
    assert done.returncode == 0, done.stdout + done.stderr
    assert owner_of(fleet.state) == "team-infra/fleet"
    owners = rows(fleet.state / "simulator.db", "SELECT DISTINCT repository FROM resources")
    assert owners == [{"repository": "team-infra/fleet"}]
    repo = pygit2.Repository(str(fleet.bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    controller = yaml.safe_load(repo[tip.tree["status"]["controller.yaml"].id].data)
    assert controller["owner"] == "team-infra/fleet"

    # Another owner on the same state directory is refused before anything runs.
    fleet.env["RECONCILER_OWNER"] = "someone-else"
    refused = fleet.run("apply")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "owner team-infra/fleet" in refused.stderr
    assert "owner someone-else" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_owner_url_never_carries_its_credentials(tmp_path: Path) -> None:
    from tests.servers.git import ServerUnavailable, git, git_http

    password = "canary-Git-Pass-41c7e"
    fleet = Fleet.create(
        tmp_path,
        {"providers.yaml": PROVIDER, "stages.yaml": STAGES, "machines.yaml": machine("m1")},
    )
    try:
        with git_http(tmp_path / "srv", username="ci", password=password) as server:
            git("push", "-q", str(server.bare), "main", cwd=fleet.bare)
            url = server.url.replace("http://", f"http://ci:{password}@")
            done = fleet.run_as(url, "apply")
            assert done.returncode == 0, done.stdout + done.stderr
            status_tip = git("rev-parse", "reconciler/status", cwd=server.bare)
            assert status_tip  # the status was pushed over HTTP, so the owner was in use
    except ServerUnavailable as exc:
        pytest.skip(f"git over HTTP is not available here: {exc}")
    owner = owner_of(fleet.state)
    assert owner == f"{server.url}#main"  # no user, no password
    owners = rows(fleet.state / "simulator.db", "SELECT DISTINCT repository FROM resources")
    assert owners == [{"repository": owner}]
    for path in fleet.state.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    shown = git("show", "reconciler/status:status/controller.yaml", cwd=server.bare)
    assert yaml.safe_load(shown)["owner"] == owner


# --- §5: materialized trees and ansible on PATH ------------------------------------------


def command_repo(seen: Path) -> dict[str, str]:
    stage = (
        "apiVersion: reconciler/v1\nkind: Stage\nmetadata: {name: configure}\n"
        "spec:\n  converges: [params.version]\n  work:\n"
        "    - {name: enrol, type: provider, action: configure,\n"
        "       args: {version: '${params.version}'}}\n"
        "    - name: where\n      type: command\n"
        f"      argv: [sh, -c, 'pwd >> {seen}']\n"
        "---\napiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: bm}\n"
        "spec:\n  steps: [{stage: configure}]\n"
    )
    return {"providers.yaml": PROVIDER, "stages.yaml": stage, "machines.yaml": version_doc(0)}


def version_doc(n: int) -> str:
    return (
        "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m1}\n"
        f"spec:\n  provider: sim\n  pipeline: bm\n  params: {{version: '{n}'}}\n"
    )


def test_materialized_trees_keep_the_newest_and_the_one_in_use(tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    fleet = Fleet.create(tmp_path, command_repo(seen), env={"RECONCILER_TREES_KEPT": "2"})
    trees = fleet.state / "trees"
    applied = []
    for n in range(4):
        if n:
            commit_change(fleet, "machines.yaml", version_doc(n), f"Version {n}")
        result = fleet.run("apply")
        assert result.returncode == 0, result.stdout + result.stderr
        head = pygit2.Repository(str(fleet.bare)).revparse_single("refs/heads/main")
        applied.append(str(head.id))
        cwd = Path(seen.read_text().splitlines()[-1])
        assert cwd == trees / applied[-1]  # the task ran in its own revision's tree
        assert cwd.is_dir()  # and it is still there after the cycle pruned
    assert len(set(applied)) == 4
    assert sorted(p.name for p in trees.iterdir()) == sorted(applied[-2:])

    # With one kept, the tree of the revision in force stays, the other goes.
    fleet.env["RECONCILER_TREES_KEPT"] = "1"
    commit_change(fleet, "machines.yaml", version_doc(9), "Version 9")
    result = fleet.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    head = str(pygit2.Repository(str(fleet.bare)).revparse_single("refs/heads/main").id)
    assert [p.name for p in trees.iterdir()] == [head]
    assert Path(seen.read_text().splitlines()[-1]) == trees / head


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write the marker
      ansible.builtin.copy:
        dest: "{{ marker }}"
        content: "played for {{ reconciler_resource }}\\n"
"""


def test_ansible_playbook_found_only_on_path_runs(tmp_path: Path) -> None:
    """The CLI runs from a Python whose folder holds no `ansible-playbook` (a symlink to
    the venv's interpreter in a folder of its own, the venv's packages on PYTHONPATH), and
    PATH holds a folder whose `ansible-playbook` is the only one it can find."""
    venv_tool = Path(sysconfig.get_path("scripts")) / "ansible-playbook"
    if not venv_tool.exists():
        pytest.skip("ansible-core is not installed (pip install ansible-core)")
    python_dir = tmp_path / "python"
    python_dir.mkdir()
    (python_dir / "python").symlink_to(os.path.realpath(sysconfig.get_path("scripts") + "/python"))
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "ansible-playbook").symlink_to(venv_tool)
    marker = tmp_path / "marker.txt"
    stage = f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: configure}}
spec:
  work:
    - name: play
      type: ansible
      playbook: playbooks/marker.yaml
      extraVars: {{marker: "{marker}"}}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {{name: bm}}
spec:
  steps: [{{stage: configure}}]
"""
    fleet = Fleet.create(
        tmp_path,
        {
            "providers.yaml": PROVIDER,
            "stages.yaml": stage,
            "machines.yaml": version_doc(1),
            "playbooks/marker.yaml": PLAYBOOK,
            ".reconcilerignore": "playbooks/\n",
        },
    )
    packages = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    fleet.env["PYTHONPATH"] = os.pathsep.join([fleet.env["PYTHONPATH"], *sorted(packages)])
    fleet.env["PATH"] = os.pathsep.join([str(tools), "/usr/bin", "/bin"])
    fleet.env["ANSIBLE_HOME"] = str(tmp_path / "ansible-home")
    fleet.env["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    argv = fleet.argv("apply")
    argv[0] = str(python_dir / "python")
    result = subprocess.run(argv, capture_output=True, text=True, env=fleet.env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.read_text() == "played for Machine/m1\n"


# --- §1: adoption declared on a Profile ------------------------------------------------------


def test_adopt_on_a_profile_takes_over_its_machines(tmp_path: Path) -> None:
    profiles = (
        "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: existing}\n"
        "spec: {adopt: true}\n"
    )
    fleet = Fleet.create(
        tmp_path,
        {
            "providers.yaml": PROVIDER,
            "stages.yaml": STAGES,
            "profiles.yaml": profiles,
            "machines.yaml": (
                machine("m1", extra="  profiles: [existing]\n")
                + machine("m2", extra="  profiles: [existing]\n  adopt: false\n")
                + machine("m3", extra="  profiles: [existing]\n")
            ),
        },
    )
    fleet.run("status")  # binds the state directory: its owner is what the seed records
    sim = SimulatorProvider.open(fleet.state, name="sim", repository=owner_of(fleet.state))
    from reconciler.providers.base import ResourceRef

    matching = {"power": "on", "bmc": {"address": "10.0.0.1"}, "params": {"os": "ubuntu"}}
    differing = {**matching, "params": {"os": "rhel"}}
    try:
        sim.seed(
            [
                (ResourceRef("Machine", "m1", "Machine/m1"), matching),
                (ResourceRef("Machine", "m2", "Machine/m2"), matching),
                (ResourceRef("Machine", "m3", "Machine/m3"), differing),
            ]
        )
    finally:
        sim._db.close()
    result = fleet.run("apply")
    assert result.returncode == 2, result.stdout + result.stderr  # m3 waits
    # m1: adopted through its profile, nothing run. m2: the resource says no, provisioned.
    assert sorted(started(fleet)) == sorted(("Machine/m2", a) for a in PIPELINE_ACTIONS)
    status = statuses(fleet)
    assert status["Machine/m1"]["phase"] == "Ready"
    assert status["Machine/m1"]["lastApplied"]["adopted"] is True
    assert status["Machine/m2"]["phase"] == "Ready"
    assert not status["Machine/m2"]["lastApplied"].get("adopted")
    waiting = condition(status["Machine/m3"], "Stalled")
    assert waiting["reason"] == "AdoptionWaiting"
    assert 'declared "ubuntu", observed "rhel"' in waiting["message"]
    db = sqlite3.connect(fleet.state / "simulator.db")
    try:
        (m3,) = db.execute("SELECT fields FROM resources WHERE key = 'Machine/m3'").fetchone()
    finally:
        db.close()
    assert json.loads(m3)["params"]["os"] == "rhel"  # nothing was installed on it


@pytest.fixture(autouse=True)
def _no_demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_REPO", raising=False)
    monkeypatch.delenv("RECONCILER_OWNER", raising=False)
    monkeypatch.delenv("RECONCILER_TREES_KEPT", raising=False)


def slow_repo(seen: Path, version: int) -> dict[str, str]:
    stage = (
        "apiVersion: reconciler/v1\nkind: Stage\nmetadata: {name: configure}\n"
        "spec:\n  converges: [params.version]\n  work:\n"
        "    - {name: enrol, type: provider, action: configure,\n"
        "       args: {version: '${params.version}'}}\n"
        "    - name: where\n      type: command\n"
        f"      argv: [sh, -c, 'pwd >> {seen}; sleep 2']\n"
        "    - {name: after, type: command, argv: ['true']}\n"
        "---\napiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: bm}\n"
        "spec:\n  steps: [{stage: configure}]\n"
    )
    return {"providers.yaml": PROVIDER, "stages.yaml": stage, "machines.yaml": version_doc(version)}


def test_the_tree_of_an_unfinished_plan_stays_and_the_tree_used_last_is_kept(
    tmp_path: Path,
) -> None:
    """One tree kept. A plan stopped mid-stage (SIGTERM) at revision B keeps B's tree
    although another tree (A's) was used more recently; once B's plan has resumed and
    finished, B's tree is the one used last and the one kept."""
    import signal
    import time

    seen = tmp_path / "seen.txt"
    fleet = Fleet.create(tmp_path, slow_repo(seen, 0), env={"RECONCILER_TREES_KEPT": "1"})
    trees = fleet.state / "trees"
    first = fleet.run("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    (tree_a,) = trees.iterdir()
    commit_change(fleet, "machines.yaml", version_doc(1), "Version 1")
    head_b = str(pygit2.Repository(str(fleet.bare)).revparse_single("refs/heads/main").id)
    lines = len(seen.read_text().splitlines())

    stopped = fleet.start("apply", "--yes", log=tmp_path / "stopped.log")
    deadline = time.monotonic() + 60
    while len(seen.read_text().splitlines()) == lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(seen.read_text().splitlines()[-1]) == trees / head_b
    # B's tree as if made long ago: A's is the one used last (as after a revert to A).
    past = time.time() - 3600
    os.utime(trees / head_b, (past, past))
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=60) == 143, (tmp_path / "stopped.log").read_text()
    plans = [p for p in fleet.journal_plans() if p["revision"] == head_b]
    assert [p["state"] for p in plans] == ["running"], plans  # B's plan is unfinished
    assert sorted(p.name for p in trees.iterdir()) == sorted([tree_a.name, head_b])

    resumed = fleet.run("apply")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [p.name for p in trees.iterdir()] == [head_b]
