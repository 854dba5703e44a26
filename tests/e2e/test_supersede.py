"""A plan is superseded only for a permanent reason, through the real CLI.

A `reconciler apply` is stopped (SIGTERM) while a plan of slow work runs against
the local job service of `test_graceful_stop` (it counts jobs per
`Idempotency-Key`). Then:

- transient: the declared repository's git daemon is down when the next `apply`
  starts. The stopped plan is not superseded: it keeps its keys and, once the
  remote is back, finishes with every job started once.
- permanent: the branch is force-pushed to a history without the plan's revision
  (and the mirror's objects of it are gone, as after `git gc`). The plan is
  superseded, saying why, and the new head is planned.

Asserted on the journal's plan rows, the job service's counts and the CLI output.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.support import Fleet
from tests.e2e.test_graceful_stop import (  # noqa: F401
    MACHINES,
    Jobs,
    check_exactly_once,
    jobs,
    keys_in_journal,
    repo,
    wait_until,
)
from tests.servers.git import git, restartable_git_daemon

pytestmark = pytest.mark.slow


def stopped_apply(fleet: Fleet, url: str, state: Path, service: Jobs, log: Path) -> None:
    argv = ["--repo", url, "--state-dir", str(state), "apply", "--grace", "30s"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", *argv], stdout=out, stderr=out, env=fleet.env
        )
    try:
        wait_until(lambda: len(service.started) >= 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    (plan,) = fleet.journal_plans()
    assert plan["state"] == "running", plan


def served(tmp_path: Path, daemon_bare: Path, files: dict[str, str]) -> Path:
    work = tmp_path / "work"
    git("clone", "-q", str(daemon_bare), str(work), cwd=tmp_path)
    for name, text in files.items():
        (work / name).write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "Declare the fleet", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return work


def test_a_remote_that_is_down_never_supersedes_a_stopped_plan(
    tmp_path: Path,
    jobs: Jobs,  # noqa: F811
) -> None:
    effects = tmp_path / "effects.txt"
    effects.touch()
    files = repo(jobs.url, effects)
    with restartable_git_daemon(tmp_path / "srv") as daemon:
        served(tmp_path, daemon.server.bare, files)
        fleet = Fleet.create(tmp_path / "unused", {"x.yaml": ""})
        fleet.state = tmp_path / "state"
        url = daemon.server.url
        stopped_apply(fleet, url, fleet.state, jobs, tmp_path / "apply.log")
        keys_before = keys_in_journal(fleet)

        daemon.stop()
        down = fleet.run_as(url, "apply")
        assert "Traceback" not in down.stderr, down.stderr
        # Resumed from the mirror, every task ended; not reported yet (the push failed).
        assert [p["state"] for p in fleet.journal_plans()] == ["executed"]
        assert "superseded" not in down.stdout + down.stderr

        daemon.start()
        again = fleet.run_as(url, "apply")
        assert again.returncode == 0, again.stdout + again.stderr
        check_exactly_once(fleet, jobs, effects, keys_before)


def test_a_force_push_removing_the_plans_revision_supersedes_it(
    tmp_path: Path,
    jobs: Jobs,  # noqa: F811
) -> None:
    effects = tmp_path / "effects.txt"
    effects.touch()
    files = repo(jobs.url, effects)
    with restartable_git_daemon(tmp_path / "srv") as daemon:
        work = served(tmp_path, daemon.server.bare, files)
        fleet = Fleet.create(tmp_path / "unused", {"x.yaml": ""})
        fleet.state = tmp_path / "state"
        url = daemon.server.url
        stopped_apply(fleet, url, fleet.state, jobs, tmp_path / "apply.log")
        (stopped,) = fleet.journal_plans()

        # A new root commit replaces the history: the plan's revision is gone from the
        # remote, and from the mirror once its unreachable objects are collected.
        git("checkout", "-q", "--orphan", "rewritten", cwd=work)
        (work / "machines.yaml").write_text(files["machines.yaml"].split("---\n")[1])
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "Start over with one machine", cwd=work)
        git("push", "-q", "-f", "origin", "HEAD:main", cwd=work)
        git("--git-dir", str(daemon.server.bare), "reflog", "expire", "--expire=now", "--all")
        git("--git-dir", str(daemon.server.bare), "gc", "-q", "--prune=now")
        mirror = next(p for p in fleet.state.rglob("*") if p.name == "HEAD" and p.is_file())
        fetched = fleet.run_as(url, "plan")
        assert "Traceback" not in fetched.stderr
        git("--git-dir", str(mirror.parent), "reflog", "expire", "--expire=now", "--all")
        git("--git-dir", str(mirror.parent), "gc", "-q", "--prune=now")

        after = fleet.run_as(url, "apply")
        assert "Traceback" not in after.stderr, after.stderr
        states = {p["plan_hash"]: p["state"] for p in fleet.journal_plans()}
        assert states[stopped["plan_hash"]] == "superseded", states
        assert after.returncode == 0, after.stdout + after.stderr
        (old,) = [p for p in fleet.journal_plans() if p["plan_hash"] == stopped["plan_hash"]]
        assert "force-pushed away" in json.dumps(old), old
        # The new head (one machine) is planned and applied; nothing of the old plan's
        # unstarted machines ran.
        assert len(jobs.started) == len(set(jobs.started))
        assert max(jobs.started.values()) == 1
