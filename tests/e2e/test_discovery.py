"""The discovery inbox on the simulator: what a provider sees that nothing declares.

Machines racked and cabled but never declared are put in the simulator's records with
no owner (what `seed(owner="")` models); one more carries another repository's owner,
and one of ours is declared. Through the real CLI: `apply` commits
`reports/discovered.md|json` to the status branch listing only the two undeclared,
unowned machines, and acts on none of them (the simulator's action log); `reconciler
discover --output yaml` prints documents that, once committed, validate and leave the
inbox empty; a running controller serves the report at `GET /api/v1/discovered`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest
import yaml

from reconciler.providers.base import ResourceRef
from reconciler.providers.simulator import SimulatorProvider
from tests.e2e.support import Fleet

pytestmark = pytest.mark.slow

TOKEN = "discovery-test-token-0123456789"

FILES = {
    "providers.yaml": (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
        "spec: {type: simulator}\n"
    ),
    "stages.yaml": (
        "apiVersion: reconciler/v1\nkind: Stage\nmetadata: {name: power}\n"
        "spec: {work: [{name: power-on, type: provider, action: power-on}]}\n"
    ),
    "pipelines.yaml": (
        "apiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: bm}\n"
        "spec: {steps: [{stage: power}]}\n"
    ),
    "machines.yaml": (
        "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: known}\n"
        "spec: {provider: sim, pipeline: bm, rack: r1}\n"
    ),
}


def racked(state: Path) -> None:
    """The world before the controller: machines on the simulator's records."""
    sim = SimulatorProvider.open(state, name="sim")
    try:

        def machine(name: str, mac: str) -> tuple[ResourceRef, dict[str, Any]]:
            ref = ResourceRef("Machine", name, f"Machine/{name}")
            fields = {
                "power": "off",
                "discovered": True,
                "bmc": {"address": "10.9.0.1", "mac": mac},
                "rack": "r9",
                "inventory": {"vendor": "Dell", "serial": f"SN-{name}", "memoryGiB": 256},
            }
            return ref, fields

        sim.seed(
            [machine("Rack9 Node1", "52:54:00:09:00:01"), machine("known", "52:54:00:09:00:09")],
            owner="",
        )
        sim.seed([machine("r9-node2", "52:54:00:09:00:02")], owner="")
        sim.seed([machine("theirs", "52:54:00:09:00:03")], owner="file:///elsewhere.git#main")
    finally:
        sim._db.close()


def status_file(fleet: Fleet, path: str) -> bytes:
    repo = pygit2.Repository(str(fleet.bare))
    tree = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit).tree
    return repo[tree[path].id].data


def commit(fleet: Fleet, files: dict[str, str], message: str) -> None:
    repo = pygit2.Repository(str(fleet.bare))
    head = repo.revparse_single("refs/heads/main").peel(pygit2.Commit)
    builder = repo.TreeBuilder(head.tree)
    for path, text in files.items():
        builder.insert(path, repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB)
    who = pygit2.Signature("A Person", "person@example.com")
    repo.create_commit("refs/heads/main", who, who, message, builder.write(), [head.id])


def test_undeclared_machines_are_listed_never_acted_on_and_enrolled_by_a_commit(
    tmp_path: Path,
) -> None:
    fleet = Fleet.create(tmp_path, FILES)
    fleet.state.mkdir()
    racked(fleet.state)

    done = fleet.run("apply")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(status_file(fleet, "reports/discovered.json"))
    listed = {(d["provider"], d["kind"], d["name"]) for d in report["discovered"]}
    assert listed == {("sim", "Machine", "Rack9 Node1"), ("sim", "Machine", "r9-node2")}
    assert report["errors"] == {}
    first = next(d for d in report["discovered"] if d["name"] == "r9-node2")
    assert first["identity"] == {"address": "10.9.0.1", "mac": "52:54:00:09:00:02", "rack": "r9"}
    assert first["facts"]["inventory"]["serial"] == "SN-r9-node2"
    markdown = status_file(fleet, "reports/discovered.md").decode()
    assert "2 undeclared" in markdown and "`r9-node2`" in markdown and "theirs" not in markdown
    touched = {e["key"] for e in fleet.action_log() if e["event"] == "started"}
    assert touched == {"Machine/known"}  # never acted on

    shown = fleet.run("discover", "--output", "yaml")
    assert shown.returncode == 0, shown.stderr
    documents = list(yaml.safe_load_all(shown.stdout))
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("Machine", "rack9-node1"),
        ("Machine", "r9-node2"),
    ]
    assert documents[1]["spec"] == {
        "provider": "sim",
        "pipeline": "bm",
        "bmc": {"address": "10.9.0.1", "mac": "52:54:00:09:00:02"},
        "rack": "r9",
    }
    assert "#     serial: SN-r9-node2" in shown.stdout  # observed facts, as comments

    # Enrollment is a commit of that output: it validates, and the inbox empties.
    commit(fleet, {"discovered.yaml": shown.stdout}, "Enroll rack 9")
    checked = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(fleet.bare), "--ref", "main"],
        capture_output=True,
        text=True,
        env=fleet.env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "valid: 6 documents in 5 files, 3 resources" in checked.stderr
    again = fleet.run("discover", "--output", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["discovered"] == []

    # Applied: the enrolled machines are the racked ones (their records, now ours).
    enrolled = fleet.run("apply")
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    assert json.loads(status_file(fleet, "reports/discovered.json"))["discovered"] == []
    status = yaml.safe_load(status_file(fleet, "status/Machine/rack9-node1.yaml"))
    assert status["observed"]["inventory"]["serial"] == "SN-Rack9 Node1"


def test_discover_names_an_unknown_provider_and_prints_text(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, FILES)
    fleet.state.mkdir()
    racked(fleet.state)
    wrong = fleet.run("discover", "--provider", "nope")
    assert wrong.returncode == 1
    assert "--provider nope: not declared; known: sim" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    text = fleet.run("discover", "--provider", "sim", "--output", "text")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        "sim\tMachine\tRack9 Node1\taddress=10.9.0.1, mac=52:54:00:09:00:01, rack=r9",
        "sim\tMachine\tr9-node2\taddress=10.9.0.1, mac=52:54:00:09:00:02, rack=r9",
    ]


def test_a_running_controller_serves_the_inbox(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, FILES)
    fleet.state.mkdir()
    racked(fleet.state)
    fleet.env["RECONCILER_API_TOKEN"] = "env:TEST_TOKEN"
    fleet.env["TEST_TOKEN"] = TOKEN
    port = _free_port()
    proc = fleet.start(
        "run", "--listen", f"127.0.0.1:{port}", "--interval", "1h", log=tmp_path / "log"
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/discovered"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(url, headers=auth, timeout=5)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 200:
                break
            assert time.monotonic() < deadline, answer.text if answer else "no answer"
            time.sleep(0.2)
        names = sorted(d["name"] for d in answer.json()["discovered"])
        assert names == ["Rack9 Node1", "r9-node2"]
        assert httpx.get(url, timeout=5).status_code == 401  # read access needs the token
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
