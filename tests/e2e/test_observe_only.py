"""Observe-only resources are observed, diffed and reported, never acted on.

Through the real CLI (`reconciler plan`, `reconciler apply`) and a running controller
(`reconciler run`, a sync through its API), against the simulator with machines in
place before anyone provisioned them. Each of the three ways to ask for it is used:
a resource's `management: observe`, a profile's, and the Policy's `observeOnly`
selectors — with `selfHeal` and `prune` on. What is asserted is read from the other
side: the simulator's action log and resources, and the files committed to the status
branch. A managed machine beside them shows the same cycles do act.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest

from tests.e2e.support import Fleet, rows
from tests.e2e.test_provisioning import (
    PIPELINE,
    PROVIDER,
    STAGES,
    bind,
    commit_change,
    machine,
    seed,
    statuses,
)
from tests.e2e.test_rollouts import TOKEN as ROLLOUT_TOKEN
from tests.e2e.test_rollouts import _free_port, _phase, _ready, _wait

pytestmark = pytest.mark.slow

TOKEN = ROLLOUT_TOKEN  # what _phase sends
WATCHED = ("Machine/own", "Machine/profiled", "Machine/selected", "Machine/gone")

POLICY = """\
apiVersion: reconciler/v1
kind: Policy
metadata: {name: default}
spec:
  prune: true
  selfHeal: true
  observeOnly:
    - matchLabels: {team: legacy}
"""

PROFILES = """\
apiVersion: reconciler/v1
kind: Profile
metadata: {name: brownfield}
spec: {management: observe}
"""


def declared(*, with_gone: bool = True) -> str:
    docs = [
        machine("own", extra="  management: observe\n"),  # observed as declared
        machine("profiled", extra="  profiles: [brownfield]\n"),  # its OS differs
        machine("selected").replace(  # powered off
            "metadata: {name: selected}", "metadata: {name: selected, labels: {team: legacy}}"
        ),
        machine("managed"),
    ]
    if with_gone:
        docs.append(machine("gone", extra="  management: observe\n"))
    return "".join(docs)


def repo_files() -> dict[str, str]:
    return {
        "providers.yaml": PROVIDER,
        "stages.yaml": STAGES,
        "pipelines.yaml": PIPELINE,
        "profiles.yaml": PROFILES,
        "policy.yaml": POLICY,
        "machines.yaml": declared(),
    }


def fields(os_name: str = "ubuntu", power: str = "on") -> dict[str, Any]:
    return {"power": power, "bmc": {"address": "10.0.0.1"}, "params": {"os": os_name}}


def brownfield(tmp_path: Path) -> Fleet:
    """The declared repository, and machines the simulator reports before any apply."""
    fleet = Fleet.create(tmp_path, repo_files())
    owner = bind(fleet)
    seed(
        fleet,
        owner,
        {
            "own": fields(),
            "profiled": fields(os_name="centos"),
            "selected": fields(power="off"),
            "gone": fields(),
        },
    )
    return fleet


def touched(fleet: Fleet) -> set[str]:
    """Keys any action was started (or repeated) on, by the simulator's own log."""
    return {e["key"] for e in fleet.action_log() if e["event"] in ("started", "repeated")}


def status_file(fleet: Fleet, path: str) -> Any:
    repo = pygit2.Repository(str(fleet.bare))
    tree = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit).tree
    return json.loads(repo[tree[path].id].data)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status["conditions"] if c["type"] == kind), None)


def assert_reported_not_acted_on(fleet: Fleet) -> None:
    assert touched(fleet) == {"Machine/managed"}  # the managed one ran; nothing else did
    status = statuses(fleet)
    assert status["Machine/managed"]["phase"] == "Ready"
    assert status["Machine/own"]["phase"] == "Ready"
    ready = condition(status["Machine/own"], "Ready")
    assert ready is not None and ready["reason"] == "Observed"
    assert "never acted on" in ready["message"]
    for key, path in (("Machine/profiled", "params.os"), ("Machine/selected", "power")):
        assert status[key]["phase"] == "Drifted", (key, status[key])
        drifted = condition(status[key], "Drifted")
        assert drifted is not None and drifted["reason"] == "DriftDetected"
        assert path in drifted["message"]
        assert condition(status[key], "Reconciling") is None
    assert "Profile/brownfield" in condition(status["Machine/profiled"], "Drifted")["message"]
    assert "observeOnly" in condition(status["Machine/selected"], "Drifted")["message"]
    assert all("lastApplied" not in status[k] or not status[k]["lastApplied"] for k in WATCHED[:3])
    drift = status_file(fleet, "reports/drift.json")
    listed = {e["resource"]: e for e in drift["drifted"]}
    assert {"Machine/profiled", "Machine/selected"} <= set(listed)
    assert listed["Machine/profiled"]["corrected"] is False


def observe_audit(fleet: Fleet) -> list[tuple[str, str]]:
    """(resource, result) of every `observe` audit record on the status branch, oldest first."""
    repo = pygit2.Repository(str(fleet.bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    found: dict[str, str] = {}

    def walk(tree: pygit2.Tree, prefix: str) -> None:
        for entry in tree:
            obj = repo[entry.id]
            if isinstance(obj, pygit2.Tree):
                walk(obj, f"{prefix}{entry.name}/")
            else:
                found[f"{prefix}{entry.name}"] = obj.data.decode()

    walk(tip.tree["audit"], "audit/")
    records = [json.loads(line) for _, text in sorted(found.items()) for line in text.splitlines()]
    return [(r["resource"], r["result"]) for r in records if r["operation"] == "observe"]


def test_plan_lists_observed_only_resources_with_what_differs(tmp_path: Path) -> None:
    fleet = brownfield(tmp_path)
    shown = fleet.run("plan")
    assert shown.returncode == 2, shown.stdout + shown.stderr
    text = shown.stdout
    assert "Observed only (never acted on" in text
    assert "= Machine/own  in-sync  (management: observe)" in text
    assert "! Machine/profiled  differs  (management: observe (from Profile/brownfield))" in text
    assert 'params.os: observed "centos", declared "ubuntu"' in text
    assert "! Machine/selected  differs  (the Policy's observeOnly selects it)" in text
    assert "Machine/managed  create" in text
    for key in WATCHED:
        assert f"{key}  create" not in text and f"{key}  update" not in text

    as_json = json.loads(fleet.run("plan", "--output", "json").stdout)
    watched = {o["key"]: o for o in as_json["observedOnly"]}
    assert set(watched) == set(WATCHED)
    assert watched["Machine/profiled"]["state"] == "differs"
    assert watched["Machine/profiled"]["would"] == "create"  # never provisioned here
    assert watched["Machine/own"]["state"] == "in-sync"
    planned = {a["key"] for w in as_json["waves"] for a in w["actions"]}
    assert planned == {"Machine/managed"}
    assert as_json["summary"]["observedOnly"] == 4

    markdown = fleet.run("plan", "--output", "markdown").stdout
    assert "#### Observed only (never acted on" in markdown
    assert "! Machine/selected  differs" in markdown
    assert touched(fleet) == set()  # planning acts on nothing


def test_apply_never_acts_on_them_even_with_self_heal_and_prune(tmp_path: Path) -> None:
    fleet = brownfield(tmp_path)
    done = fleet.run("apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr  # reported drift is no failure
    assert_reported_not_acted_on(fleet)

    # Removed from Git: prune is on, but the last revision declaring it observed it only.
    commit_change(fleet.bare, {"machines.yaml": declared(with_gone=False)}, "Forget gone")
    shown = fleet.run("plan")
    assert "! Machine/gone  orphaned" in shown.stdout
    assert "Machine/gone  decommission" not in shown.stdout
    again = fleet.run("apply", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert touched(fleet) == {"Machine/managed"}
    # Observations are audited when they change: each once, at the first apply.
    assert sorted(observe_audit(fleet)) == [
        ("Machine/gone", "in-sync"),
        ("Machine/own", "in-sync"),
        ("Machine/profiled", "differs"),
        ("Machine/selected", "differs"),
    ]
    left = {r["key"] for r in rows(fleet.state / "simulator.db", "SELECT key FROM resources")}
    assert "Machine/gone" in left
    drift = status_file(fleet, "reports/drift.json")
    listed = {e["resource"]: e for e in drift["drifted"]}
    assert "kept: management: observe" in listed["Machine/gone"]["reason"]


def test_a_running_controller_never_acts_on_them(tmp_path: Path) -> None:
    fleet = brownfield(tmp_path)
    port = _free_port()
    fleet.env["RECONCILER_API_TOKEN"] = "env:TEST_TOKEN"
    fleet.env["TEST_TOKEN"] = TOKEN
    proc = fleet.start(
        "run", "--listen", f"127.0.0.1:{port}", "--interval", "1h", log=tmp_path / "run.log"
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _ready(url))
        _wait(lambda: bool(fleet.status_commits()), timeout=90)  # the first cycle reported
        answer = httpx.post(f"{url}/api/v1/sync", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 202, answer.text
        op = answer.json()["id"]
        _wait(lambda: _phase(url, op) in ("succeeded", "failed"), timeout=90)
        assert _phase(url, op) == "succeeded"
        seen = httpx.get(
            f"{url}/api/v1/resources/Machine/profiled",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        assert seen["phase"] == "Drifted"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert_reported_not_acted_on(fleet)
