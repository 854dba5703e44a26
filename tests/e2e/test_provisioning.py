"""Provisioning that tells the truth, through the real CLI against the simulator.

Each test runs `reconciler apply` as a subprocess on a bare repository and asserts
on the other side: the simulator's own records (its action log, its resources), the
journal's rows and the status branch. What is tested is what a user meets first:
machines that exist before anyone provisioned them, adoption, declared power that
drifts, one owner however the repository is spelled, a state directory that belongs
to one repository, a provider that forgot everything, and task types that need the
repository's files (ansible, relative file: secrets) and a stage's own params.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.providers.base import ResourceRef
from reconciler.providers.simulator import SimulatorProvider
from tests.e2e.support import Fleet, rows
from tests.repos import commit_change

PROVIDER = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec: {type: simulator}
"""

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
"""

PIPELINE = """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bm}
spec:
  steps: [{stage: discover}, {stage: install-os}, {stage: power}]
"""


def machine(name: str, *, os_name: str = "ubuntu", extra: str = "") -> str:
    return (
        f"---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: {name}}}\n"
        f"spec:\n  provider: sim\n  pipeline: bm\n  power: on\n"
        f"  bmc: {{address: 10.0.0.1}}\n  params: {{os: {os_name}}}\n{extra}"
    )


def files(*machines: str, policy: str = "") -> dict[str, str]:
    out = {
        "providers.yaml": PROVIDER,
        "stages.yaml": STAGES,
        "pipelines.yaml": PIPELINE,
        "machines.yaml": "".join(machines),
    }
    if policy:
        out["policy.yaml"] = policy
    return out


def owner_of(fleet: Fleet) -> str:
    return json.loads((fleet.state / "owner.json").read_text())["owner"]


def statuses(fleet: Fleet) -> dict[str, dict[str, Any]]:
    repo = pygit2.Repository(str(fleet.bare))
    tree = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit).tree
    out = {}
    for kind in tree["status"]:
        if kind.name == "controller.yaml":
            continue
        for entry in repo[kind.id]:
            data = yaml.safe_load(repo[entry.id].data)
            out[f"{data['kind']}/{data['name']}"] = data
    return out


def started(fleet: Fleet) -> list[tuple[str, str]]:
    return [(e["key"], e["action"]) for e in fleet.action_log() if e["event"] == "started"]


def change(fleet: Fleet, path: str, text: str, message: str) -> None:
    """A person's commit on main changing one file (straight into the bare repo)."""
    commit_change(fleet.bare, {path: text}, message)


def seed(fleet: Fleet, owner: str, machines: dict[str, dict[str, Any]]) -> None:
    """Machines the provider reports before anyone provisioned them (as a BMC does)."""
    sim = SimulatorProvider.open(fleet.state, name="sim", repository=owner)
    try:
        sim.seed([(ResourceRef("Machine", n, f"Machine/{n}"), f) for n, f in machines.items()])
    finally:
        sim._db.close()


def bind(fleet: Fleet) -> str:
    """Run `reconciler status` once so the state directory records its owner."""
    fleet.run("status")
    return owner_of(fleet)


def test_machines_the_provider_already_reports_are_provisioned(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, files(machine("m1"), machine("m2")))
    owner = bind(fleet)
    fields = {"power": "off", "bmc": {"address": "10.0.0.1"}, "params": {"os": "ubuntu"}}
    seed(fleet, owner, {"m1": fields, "m2": fields})
    done = fleet.run("apply")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "never provisioned by reconciler" in done.stdout
    # The whole pipeline ran on each: what was already observed changed nothing.
    assert sorted(started(fleet)) == sorted(
        (f"Machine/{n}", a) for n in ("m1", "m2") for a in ("set-boot", "install-os", "set-power")
    )
    sim = SimulatorProvider.open(fleet.state, name="sim", repository=owner)
    observed = asyncio_observe(sim, ["Machine/m1", "Machine/m2"])
    assert {k: v["power"] for k, v in observed.items()} == {"Machine/m1": "on", "Machine/m2": "on"}
    status = statuses(fleet)
    assert {k: s["phase"] for k, s in status.items()} == {
        "Machine/m1": "Ready",
        "Machine/m2": "Ready",
    }
    assert status["Machine/m1"]["lastApplied"]["stagesDone"] == ["discover", "install-os", "power"]
    assert status["Machine/m1"]["lastApplied"]["resolution"]
    records = rows(fleet.state / "journal.sqlite", "SELECT resource, record_json FROM applied")
    assert {r["resource"] for r in records} == {"Machine/m1", "Machine/m2"}
    # Provisioned now: the next apply is in sync and starts nothing.
    before = len(started(fleet))
    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(started(fleet)) == before
    assert "status unchanged" in again.stdout


def asyncio_observe(sim: SimulatorProvider, keys: list[str]) -> dict[str, dict[str, Any]]:
    import asyncio

    refs = [ResourceRef(k.split("/")[0], k.split("/")[1], k) for k in keys]
    found = asyncio.run(sim.observe(refs))
    return {k: dict(o.fields) for k, o in found.items()}


def test_adopt_takes_over_what_matches_and_waits_naming_what_differs(tmp_path: Path) -> None:
    adopted = machine("m1", extra="  adopt: true\n")
    differs = machine("m2", extra="  adopt: true\n")
    fleet = Fleet.create(tmp_path, files(adopted, differs))
    owner = bind(fleet)
    seed(
        fleet,
        owner,
        {
            "m1": {"power": "on", "bmc": {"address": "10.0.0.1"}, "params": {"os": "ubuntu"}},
            "m2": {"power": "on", "bmc": {"address": "10.0.0.1"}, "params": {"os": "rhel"}},
        },
    )
    result = fleet.run("apply")
    assert started(fleet) == []  # adoption runs nothing
    status = statuses(fleet)
    assert status["Machine/m1"]["phase"] == "Ready"
    assert status["Machine/m1"]["lastApplied"]["adopted"] is True
    ready = next(c for c in status["Machine/m1"]["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith("adopted at revision")
    assert status["Machine/m2"]["phase"] == "Stalled"
    stalled = next(c for c in status["Machine/m2"]["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "AdoptionWaiting"
    assert "params.os changed in Git" in stalled["message"]
    assert 'declared "ubuntu", observed "rhel"' in stalled["message"]
    assert result.returncode == 2  # nothing failed, but one machine waits


def test_power_drift_is_reported_and_corrected_only_by_the_power_stage(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, files(machine("m1")))
    assert fleet.run("apply").returncode == 0
    drift = fleet.run_module(
        "reconciler.providers.simulator", "drift", "--state-dir", str(fleet.state),
        "Machine/m1", "power", '"off"',
    )  # fmt: skip
    assert drift.returncode == 0, drift.stderr
    reported = fleet.run("apply")
    assert reported.returncode == 0, reported.stdout + reported.stderr
    status = statuses(fleet)["Machine/m1"]
    assert status["phase"] == "Drifted"
    assert status["observed"]["power"] == "off"
    count = len(started(fleet))
    heal = "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: p}\nspec: {selfHeal: true}\n"
    change(fleet, "policy.yaml", heal, "Heal drift")
    healed = fleet.run("apply")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert started(fleet)[count:] == [("Machine/m1", "set-power")]  # not a re-install
    assert statuses(fleet)["Machine/m1"]["observed"]["power"] == "on"


def test_the_same_repository_spelled_three_ways_is_one_owner(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, files(machine("m1")))
    assert fleet.run("apply").returncode == 0
    owner = owner_of(fleet)
    count = len(started(fleet))
    relative = os.path.relpath(fleet.bare, tmp_path)
    for spelling in (relative, f"file://{fleet.bare}", str(fleet.bare) + "/"):
        again = fleet.run_as(spelling, "apply", cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "status unchanged" in again.stdout
    assert len(started(fleet)) == count
    assert owner_of(fleet) == owner == f"file://{os.path.realpath(fleet.bare)}#main"
    sim_owners = rows(fleet.state / "simulator.db", "SELECT DISTINCT repository FROM resources")
    assert sim_owners == [{"repository": owner}]


def test_a_state_directory_refuses_another_repository_and_a_path_that_is_not_there(
    tmp_path: Path,
) -> None:
    first = Fleet.create(tmp_path / "a", files(machine("m1")))
    assert first.run("apply").returncode == 0
    other = Fleet.create(tmp_path / "b", files(machine("m2")))
    refused = other.run_as(str(other.bare), "apply", state=first.state)
    assert refused.returncode == 1
    assert f"belongs to {first.bare}" in refused.stderr
    assert f"refusing to use it for {other.bare}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert [k for k, _ in started(first)].count("Machine/m2") == 0
    missing = first.run_as(str(tmp_path / "nowhere.git"), "apply", state=tmp_path / "s2")
    assert missing.returncode == 1
    assert "no such file or directory" in missing.stderr
    assert "unsupported URL protocol" not in missing.stderr


def test_a_provider_that_forgot_everything_is_unknown_not_reprovisioned(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, files(machine("m1"), machine("m2")))
    assert fleet.run("apply").returncode == 0
    count = len(started(fleet))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{fleet.state / 'simulator.db'}{suffix}").unlink(missing_ok=True)
    lost = fleet.run("apply")
    assert lost.returncode == 1, lost.stdout + lost.stderr
    assert started(fleet)[count:] == []  # nothing installed again
    phases = {k: s["phase"] for k, s in statuses(fleet).items()}
    assert phases == {"Machine/m1": "Unknown", "Machine/m2": "Unknown"}
    ready = next(c for c in statuses(fleet)["Machine/m1"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "ObservationFailed")
    assert "reported none of the 2 resources it reported existing before" in ready["message"]


def test_a_provider_that_cannot_be_reached_is_unknown_with_its_own_message(
    tmp_path: Path,
) -> None:
    rest = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec:
  type: http
  endpoint: http://127.0.0.1:9
  settings:
    observe: {url: "/items/{name}"}
"""
    fleet = Fleet.create(tmp_path, {**files(machine("m1")), "providers.yaml": rest})
    result = fleet.run("apply")
    assert result.returncode == 1
    ready = next(c for c in statuses(fleet)["Machine/m1"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "ObservationFailed")
    assert "127.0.0.1:9" in ready["message"]
    assert "UNKNOWN Machine/m1" in result.stdout
    assert "Traceback" not in result.stderr


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write the marker
      ansible.builtin.copy:
        dest: "{{ marker }}"
        content: "{{ greeting }} from {{ reconciler_resource }}\\n"
"""


def test_ansible_command_and_stage_params_run_from_apply(tmp_path: Path) -> None:
    """An ansible stage writes a file on localhost from the revision's own playbook; a
    command reads a relative file: secret; a stage's params reach its tasks, after the
    resource's own and before the global profile's (the README's order)."""
    marker = tmp_path / "marker.txt"
    seen = tmp_path / "seen.txt"
    stages = f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: configure}}
spec:
  params: {{greeting: from-stage, colour: stage-colour}}
  work:
    - name: play
      type: ansible
      playbook: playbooks/marker.yaml
      extraVars: {{marker: "{marker}", greeting: "${{params.greeting}}"}}
    - name: echo
      type: command
      argv: [sh, -c, 'printf "%s %s %s" "$COLOUR" "$TOKEN" "$PWD" > {seen}']
      env: {{COLOUR: "${{params.colour}}"}}
      secretEnv: {{TOKEN: file:secrets/token.txt}}
"""
    repo = {
        "providers.yaml": PROVIDER,
        "stages.yaml": stages,
        "pipelines.yaml": (
            "apiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: bm}\n"
            "spec:\n  steps: [{stage: configure}]\n"
        ),
        "profiles.yaml": (
            "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: global}\n"
            "spec:\n  params: {greeting: from-global, colour: global-colour}\n"
        ),
        "machines.yaml": (
            "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m1}\n"
            "spec:\n  provider: sim\n  pipeline: bm\n  params: {colour: own-colour}\n"
        ),
        "playbooks/marker.yaml": PLAYBOOK,
        "secrets/token.txt": "t0ken-in-the-repo\n",
        ".reconcilerignore": "playbooks/\n",
    }
    fleet = Fleet.create(tmp_path, repo)
    result = fleet.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.read_text() == "from-stage from Machine/m1\n"
    colour, token, cwd = seen.read_text().split(" ")
    assert colour == "own-colour"  # the resource's own param beats the stage's
    assert token == "t0ken-in-the-repo"
    assert Path(cwd).parent == fleet.state / "trees"
    assert not os.access(Path(cwd) / "playbooks" / "marker.yaml", os.W_OK) or os.getuid() == 0


@pytest.fixture(autouse=True)
def _no_demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_REPO", raising=False)
