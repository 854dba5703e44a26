"""Rollouts: a profile change reaches 3 racks x 4 machines canary first, one per rack.

Through the real CLI against the simulator. Order and concurrency of the disruptive
stage are read from the simulator's action log (each install-os operation's start
and end); failures reaching `pauseOnFailure` pause the rollout, which a commit
changing `rollout.resume` resumes, and so does the API of a running controller.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest

from tests.e2e.support import Fleet, rows
from tests.repos import commit_change

pytestmark = pytest.mark.slow

RACKS, PER_RACK = 3, 4
TOKEN = "rollout-test-token-0123456789"


def policy(resume: str = "one", pause: int = 2) -> str:
    return f"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {{name: default}}
spec:
  maxDestructiveActions: 20
  rollout:
    domain: rack
    maxUnavailable: 1
    canary: 1
    pauseOnFailure: {pause}
    resume: {resume}
"""


def repo(flags: Path, os_name: str = "ubuntu") -> dict[str, str]:
    machines = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: r{r}-m{m}}}\n"
        f"spec: {{provider: sim, pipeline: bm, profiles: [fleet], rack: r{r}}}\n"
        for r in range(RACKS)
        for m in range(PER_RACK)
    )
    stages = f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: install-os}}
spec:
  converges: [params.os]
  destructive: true
  work:
    - {{name: install, type: provider, action: install-os}}
    - name: check
      type: command
      argv: [{sys.executable}, -c, "import os, sys; sys.exit(os.path.exists(sys.argv[1]))",
             "{flags}/${{resource.name}}"]
      retry: {{attempts: 1}}
"""
    return {
        "providers.yaml": (
            "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
            "spec: {type: simulator, settings: {latency: {install-os: 0.3s}}, "
            "limits: {concurrency: 50}}\n"
        ),
        "stages.yaml": stages,
        "pipelines.yaml": (
            "apiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: bm}\n"
            "spec: {steps: [{stage: install-os}]}\n"
        ),
        "profiles.yaml": (
            "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: fleet}\n"
            f"spec: {{params: {{os: {os_name}}}}}\n"
        ),
        "machines.yaml": machines,
        "policy.yaml": policy(),
    }


def commit(fleet: Fleet, files: dict[str, str], message: str) -> None:
    commit_change(fleet.bare, files, message)


def installs(fleet: Fleet, since: int) -> dict[str, tuple[float, float]]:
    """Each machine's install-os operation after `since`: (started, ended) times."""
    spans: dict[str, list[float]] = {}
    for e in fleet.action_log():
        if e["seq"] <= since or e["action"] != "install-os":
            continue
        if e["event"] == "started":
            spans[e["key"]] = [e["at"], float("inf")]
        elif e["event"] in ("succeeded", "failed") and e["key"] in spans:
            spans[e["key"]][1] = e["at"]
    return {k: (a, b) for k, (a, b) in spans.items()}


def started_installs(fleet: Fleet, since: int) -> int:
    return sum(
        1
        for e in fleet.action_log()
        if e["seq"] > since and e["action"] == "install-os" and e["event"] == "started"
    )


def last_seq(fleet: Fleet) -> int:
    log = fleet.action_log()
    return log[-1]["seq"] if log else 0


def rack_of(key: str) -> str:
    return key.split("/")[1].split("-")[0]


def test_a_profile_change_rolls_out_canary_first_one_per_rack(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    fleet = Fleet.create(tmp_path, repo(flags))
    assert fleet.run("apply").returncode == 0  # creates: not held back by the rollout
    since = last_seq(fleet)
    commit(fleet, {"profiles.yaml": repo(flags, "rhel")["profiles.yaml"]}, "Move to RHEL")

    shown = fleet.run("plan")
    assert "rollout policy: 12 resource(s) in 3 domain(s), at most 1 unavailable per rack" in (
        shown.stdout
    )
    assert "canary first: Machine/r0-m0" in shown.stdout
    done = fleet.run("apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr

    spans = installs(fleet, since)
    assert len(spans) == RACKS * PER_RACK
    canary_end = spans["Machine/r0-m0"][1]
    assert all(start >= canary_end for key, (start, _) in spans.items() if key != "Machine/r0-m0")
    for rack in ("r0", "r1", "r2"):  # within a rack, one install at a time
        ordered = sorted(span for key, span in spans.items() if rack_of(key) == rack)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered)), ordered
    # ... while racks proceeded side by side (the rollout is not one at a time overall).
    starts = sorted(s for key, (s, _) in spans.items() if key != "Machine/r0-m0")
    firsts = [min(s for k, (s, _) in spans.items() if rack_of(k) == r and k != "Machine/r0-m0")
              for r in ("r0", "r1", "r2")]  # fmt: skip
    assert max(firsts) < max(starts)


def test_failures_pause_a_rollout_until_a_commit_or_the_api_resumes_it(
    tmp_path: Path,
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    files = repo(flags)
    fleet = Fleet.create(tmp_path, files)
    assert fleet.run("apply").returncode == 0
    for name in ("r1-m0", "r2-m0"):  # their install-os fails: two failures pause it
        (flags / name).touch()
    commit(fleet, {"profiles.yaml": repo(flags, "rhel")["profiles.yaml"]}, "Move to RHEL")
    since = last_seq(fleet)
    paused = fleet.run("apply", "--yes")
    assert paused.returncode == 1, paused.stdout + paused.stderr  # two failed
    assert "rollout policy is paused: 2 resource(s) failed (pauseOnFailure)" in paused.stdout
    ran = installs(fleet, since)
    assert len(ran) < RACKS * PER_RACK  # not everything was tried
    facts = rows(fleet.state / "journal.sqlite", "SELECT name, value FROM meta")
    pause = next(json.loads(f["value"]) for f in facts if f["name"] == "rollout:policy")
    assert pause == {"reason": "2 resource(s) failed (pauseOnFailure)", "resume": "one"}

    # `reconciler status` shows the rollout's progress, paused and why (from the status
    # branch's reports/rollouts.json).
    shown = fleet.run("status")
    assert shown.returncode == 0, shown.stderr
    row = next(
        line.split() for line in shown.stdout.splitlines() if line.strip().startswith("policy ")
    )
    done, running, waiting, failed = (int(n) for n in row[1:5])
    assert (running, failed) == (0, 2) and done >= 1 and done + waiting == 10, row
    assert " ".join(row[5:]).startswith("yes: 2 resource(s) failed (pauseOnFailure) (resume:")
    assert "failed Machine/r1-m0 (rack=r1): stage install-os" in shown.stdout
    assert "failed Machine/r2-m0 (rack=r2): stage install-os" in shown.stdout
    progress = json.loads(_status_branch_file(fleet, "reports/rollouts.json"))["rollouts"]
    states = {r["resource"]: r["state"] for r in progress[0]["resources"]}
    assert {k for k, v in states.items() if v == "failed"} == {"Machine/r1-m0", "Machine/r2-m0"}
    assert states["Machine/r0-m0"] == "done"  # the canary
    assert len(states) == RACKS * PER_RACK

    for flag in flags.iterdir():  # the cause is fixed, but the rollout stays paused
        flag.unlink()
    before = started_installs(fleet, since)
    held = fleet.run("apply", "--yes")
    assert held.returncode == 2, held.stdout + held.stderr  # nothing failed: it waits
    assert "BLOCKED: rollout policy is paused" in held.stdout
    assert started_installs(fleet, since) == before  # not even the failed two again

    # Resumed by a commit changing rollout.resume: the rest runs, the two failed again.
    commit(fleet, {"policy.yaml": policy(resume="two")}, "Resume the RHEL rollout")
    resumed = fleet.run("apply", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    row = next(line.split() for line in fleet.run("status").stdout.splitlines()
               if line.strip().startswith("policy "))  # fmt: skip
    assert row[2:6] == ["0", "0", "0", "no"], row  # none running, waiting, failed; not paused
    assert len(installs(fleet, since)) == RACKS * PER_RACK
    assert started_installs(fleet, since) == RACKS * PER_RACK + 2
    audit = [
        json.loads(line)
        for where, text in _audit_texts(fleet)
        for line in text.splitlines()
        if line.strip()
    ]
    resumes = [a for a in audit if a["operation"] == "resume-rollout"]
    assert [(a["resource"], a["author"]) for a in resumes] == [
        ("Rollout/policy", "A Person <person@example.com>")
    ]


def _status_branch_file(fleet: Fleet, path: str) -> bytes:
    repo = pygit2.Repository(str(fleet.bare))
    tree = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit).tree
    return repo[tree[path].id].data


def _audit_texts(fleet: Fleet) -> list[tuple[str, str]]:
    from tests.e2e.support import git_texts

    return [(w, t) for w, t in git_texts(fleet.bare) if ":audit/" in w]


def test_the_api_resumes_a_paused_rollout(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    fleet = Fleet.create(tmp_path, repo(flags))
    assert fleet.run("apply").returncode == 0
    (flags / "r0-m0").touch()  # the canary fails: the rollout pauses at once
    commit(fleet, {"profiles.yaml": repo(flags, "rhel")["profiles.yaml"]}, "Move to RHEL")
    assert fleet.run("apply", "--yes").returncode == 1
    (flags / "r0-m0").unlink()

    port = _free_port()
    log = tmp_path / "run.log"
    fleet.env["RECONCILER_API_TOKEN"] = "env:TEST_TOKEN"
    fleet.env["TEST_TOKEN"] = TOKEN
    proc = fleet.start("run", "--listen", f"127.0.0.1:{port}", "--interval", "1h", log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _ready(url))
        since = last_seq(fleet)
        answer = httpx.post(
            f"{url}/api/v1/rollouts/policy/resume", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert answer.status_code == 202, answer.text
        op = answer.json()["id"]
        _wait(lambda: _phase(url, op) in ("succeeded", "failed"), timeout=90)
        assert _phase(url, op) == "succeeded"
        assert len(installs(fleet, since)) == RACKS * PER_RACK  # the canary again, then the rest
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    facts = rows(fleet.state / "journal.sqlite", "SELECT name FROM meta")
    assert "rollout:policy" not in {f["name"] for f in facts}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _phase(url: str, op: str) -> Any:
    answer = httpx.get(
        f"{url}/api/v1/operations/{op}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    return answer.json()["phase"]


def _wait(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)
