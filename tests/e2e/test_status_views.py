"""What the controller shows and keeps, through the real CLI and a real `reconciler run`.

- An idle `reconciler run` whose status goes to the tracked branch makes no commits
  (its own status commits are never a declared revision that would feed it).
- `reconciler status` starts with the controller's conditions: stale and why, for an
  invalid head and for a remote that cannot be reached (the status branch as last
  fetched is shown below it).
- A status file holding a field from a newer version is read tolerantly: the resource
  keeps its last-applied state, nothing is re-run, the field is not reported as
  unreadable.

Asserted on the Git history of the bare repository, the CLI's output and the
simulator's action log.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
import pygit2

from tests.conftest import BASE_FILES
from tests.controller.server.conftest import free_port, push, repo_files
from tests.e2e.support import Fleet
from tests.servers.git import git, git_daemon


def cycles_run(url: str) -> float:
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    found = re.findall(r"^reconciler_cycles_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    return sum(float(v) for v in found)


def test_an_idle_run_with_status_on_the_tracked_branch_makes_no_commits(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES), env={"RECONCILER_INTERVAL_JITTER": "0s"})
    repo = pygit2.Repository(str(fleet.bare))
    declared = str(repo.revparse_single("refs/heads/main").id)
    port = free_port()
    args = ("--status-branch", "main", "--interval", "1s", "--listen", f"127.0.0.1:{port}")
    proc = fleet.start(*args, "run", log=tmp_path / "run.log")
    try:
        deadline = time.monotonic() + 90
        while cycles_run(f"http://127.0.0.1:{port}") < 5:  # the first cycle and four idle
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "five cycles did not run"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    tip = repo.revparse_single("refs/heads/main").peel(pygit2.Commit)
    history = [str(c.id) for c in repo.walk(tip.id)]
    assert len(history) == 2, history  # the declared commit and one status commit
    assert str(tip.parents[0].id) == declared
    assert f"Reconciled-Revision: {declared}" in tip.message


def header(text: str) -> str:
    """The controller's table: everything before the resources' table."""
    return text.split("RESOURCE", 1)[0]


def test_status_says_an_invalid_head_is_stale_and_why(tmp_path: Path) -> None:
    files = repo_files(2)
    fleet = Fleet.create(tmp_path, files)
    assert fleet.run("apply").returncode == 0
    broken = {**files, "machines.yaml": files["machines.yaml"] + "---\nkind: [unclosed\n"}
    head = push(fleet.bare, broken, "Break the machines")
    failed = fleet.run("apply")
    assert failed.returncode == 1, failed.stdout + failed.stderr

    shown = fleet.run("status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    top = header(shown.stdout)
    assert re.search(r"Stale\s+True\s+ValidationFailed", top), shown.stdout
    assert f"head {head[:12]} is invalid: machines.yaml:" in " ".join(top.split()), shown.stdout
    assert "Machine/m00" in shown.stdout  # the last good state is still shown


def test_status_says_an_unreachable_remote_is_stale_and_why(tmp_path: Path) -> None:
    with git_daemon(tmp_path / "srv") as server:
        work = tmp_path / "work"
        git("clone", "-q", str(server.bare), str(work), cwd=tmp_path)
        for name, text in repo_files(2).items():
            (work / name).write_text(text)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "Declare the fleet", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        fleet = Fleet.create(tmp_path / "unused", {"x.yaml": ""})
        done = fleet.run_as(server.url, "apply", state=tmp_path / "state")
        assert done.returncode == 0, done.stdout + done.stderr
        url = server.url
    # The daemon is stopped: nothing listens on its port any more.
    shown = fleet.run_as(url, "status", state=tmp_path / "state")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    top = " ".join(header(shown.stdout).split())
    assert re.search(r"Stale True RemoteUnavailable", top), shown.stdout
    assert "the remote could not be fetched" in top and "as last fetched" in top, shown.stdout
    assert "Machine/m00" in shown.stdout


def test_a_status_file_from_a_newer_version_is_read_tolerantly(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, repo_files(2))
    assert fleet.run("apply").returncode == 0
    work = tmp_path / "status-work"
    git("clone", "-q", "-b", "reconciler/status", str(fleet.bare), str(work), cwd=tmp_path)
    path = work / "status" / "Machine" / "m00.yaml"
    text = path.read_text()
    path.write_text(text + "shinyNewField: {added: in v9}\n")
    git("commit", "-q", "-am", "A newer controller wrote this", cwd=work)
    git("push", "-q", "origin", "HEAD:reconciler/status", cwd=work)
    started = len(fleet.action_log())

    one = fleet.run("status", "Machine/m00")
    assert one.returncode == 0, one.stdout + one.stderr
    assert "phase: Ready" in one.stdout
    table = fleet.run("status")
    assert table.returncode == 0 and "cannot be read" not in table.stdout, table.stdout

    # Its last-applied state is still known: nothing is planned, nothing runs again.
    plan = fleet.run("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [e for e in fleet.action_log()[started:] if e["event"] == "started"] == []
