"""Audit across crashes: a resumed plan keeps its times and its author, and is reported once.

Real `reconciler apply` processes killed with SIGKILL (as in test_crash_resume):

- killed during the execution, then restarted after Ada pushed a change: the
  restart resumes the interrupted plan (results of finished tasks from the journal)
  and runs a new plan for Ada's change, in one cycle. Every record of the resumed
  plan carries the times its journal rows hold and the author of the commit that
  declared it; Ada's change is credited to Ada; the two executions reported by the
  one status commit (one second) are two audit files, each named by its execution.
- killed right after its status commit reached the remote and before the journal
  marked the plan finished: a `reference-transaction` hook of the served
  repository (git daemon) kills the pushing process once the status branch has
  moved. The restart resumes the plan from the journal and must not report it again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pygit2
import pytest

from tests.e2e.support import Fleet, git_texts
from tests.e2e.test_crash_resume import TASKS_PER_MACHINE, apply_until_done, crash_repo, kill_when
from tests.servers.git import git, git_daemon

pytestmark = pytest.mark.slow

DEMO = "Fleet Owner <fleet@example.com>"
"""Who `Fleet.create` commits as (`tests.repos.FLEET`)."""
ADA = ("Ada Lovelace", "ada@example.com")


def audit_records(bare: Path) -> list[dict]:
    return [
        json.loads(line)
        for where, text in git_texts(bare)
        if ":audit/" in where
        for line in text.splitlines()
        if line.strip()
    ]


def as_person(person: tuple[str, str], *args: str, cwd: Path) -> None:
    env = {
        "GIT_AUTHOR_NAME": person[0],
        "GIT_AUTHOR_EMAIL": person[1],
        "GIT_COMMITTER_NAME": person[0],
        "GIT_COMMITTER_EMAIL": person[1],
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def audit_paths(repo: pygit2.Repository, commit: pygit2.Commit) -> list[str]:
    listing = git("--git-dir", repo.path, "ls-tree", "-r", "--name-only", str(commit.id), "audit")
    return listing.split()


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_resumed_plan_keeps_the_journaled_times_and_its_author(tmp_path: Path) -> None:
    machines = 10
    fleet = Fleet.create(tmp_path, crash_repo(machines))
    log = tmp_path / "apply.log"
    assert kill_when(fleet, machines + 5, 0.4, log) == -9  # some tasks finished, some not
    first = {p["plan_hash"] for p in fleet.journal_plans()}
    assert len(first) == 1
    finished_before = {t["idempotency_key"] for t in fleet.journal_tasks() if t["finished_at"]}
    assert finished_before, "the kill came before any task finished"

    # Ada changes node00's OS meanwhile.
    work = tmp_path / "ada"
    git("clone", "-q", str(fleet.bare), str(work), cwd=tmp_path)
    machines_file = work / "machines.yaml"
    text = machines_file.read_text()
    machines_file.write_text(text.replace("params: {os: ubuntu}", "params: {os: rhel}", 1))
    as_person(ADA, "commit", "-q", "-am", "node00 runs RHEL", cwd=work)
    as_person(ADA, "push", "-q", "origin", "HEAD:main", cwd=work)
    ada = git("rev-parse", "HEAD", cwd=work)

    output = apply_until_done(fleet, log)
    assert "resumed an unfinished plan" in output

    tasks = fleet.journal_tasks()
    journaled = {
        (t["plan_hash"], t["resource"], t["stage"], t["point"].split("#")[0], t["task"]): t
        for t in tasks
    }
    records = audit_records(fleet.bare)
    executions = Counter(r["execution"] for r in records)
    assert set(executions) == first | {r["execution"] for r in records if r["revision"] == ada}
    assert len(executions) == 2
    resumed = [r for r in records if r["execution"] in first]
    assert len(resumed) == machines * TASKS_PER_MACHINE
    for record in resumed:
        point, _, task = record["task"].partition("/")
        row = journaled[(record["execution"], record["resource"], record["stage"], point, task)]
        assert moment(record["started"]) == datetime.fromisoformat(row["started_at"]), record
        assert moment(record["finished"]) == datetime.fromisoformat(row["finished_at"]), record
        assert record["author"] == DEMO  # the revision the plan was made at: its declaring commit
    # Tasks finished before the kill were taken from the journal: still their own times.
    taken = [t for t in tasks if t["idempotency_key"] in finished_before]
    assert all(t["runs"] == 1 for t in taken)

    new = [r for r in records if r["execution"] not in first]
    assert new and {r["resource"] for r in new} == {"Machine/node00"}
    assert {(r["author"], r["change"]) for r in new} == {(f"{ADA[0]} <{ADA[1]}>", ada)}

    # One status commit reported both executions, within the same second: two files.
    repo = pygit2.Repository(str(fleet.bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    reporting = next(
        c for c in repo.walk(tip.id) if "Executions: " in c.message and "," in c.message
    )
    before = set(audit_paths(repo, reporting.parents[0])) if reporting.parents else set()
    added = sorted(set(audit_paths(repo, reporting)) - before)
    assert len(added) == 2
    assert {path.rsplit("/", 1)[1].split("-")[0] for path in added} == {
        added[0].rsplit("/", 1)[1].split("-")[0]
    }  # the same second
    assert {path.rsplit("/", 1)[1].split("-")[1] for path in added} == {e[:12] for e in executions}


KILL_AFTER_STATUS_PUSH = """#!/bin/sh
# Kill the pushing controller once the status branch has moved on the remote.
[ "$1" = committed ] || exit 0
while read old new ref; do
    if [ "$ref" = refs/heads/reconciler/status ] && [ -f "{pidfile}" ]; then
        kill -9 "$(cat "{pidfile}")"
        rm -f "{pidfile}"
    fi
done
exit 0
"""


def test_a_crash_between_the_status_push_and_the_journal_is_reported_once(
    tmp_path: Path,
) -> None:
    machines = 4
    fleet = Fleet.create(tmp_path, crash_repo(machines))
    pidfile = tmp_path / "controller.pid"
    with git_daemon(tmp_path / "srv") as server:
        git("push", "-q", str(server.bare), "main", cwd=fleet.bare)
        hook = server.bare / "hooks" / "reference-transaction"
        hook.write_text(KILL_AFTER_STATUS_PUSH.replace("{pidfile}", str(pidfile)))
        hook.chmod(0o755)
        argv = [sys.executable, "-m", "reconciler", "--repo", server.url]
        argv += ["--state-dir", str(fleet.state), "apply"]
        log = tmp_path / "apply.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, env=fleet.env)
        pidfile.write_text(str(proc.pid))
        assert proc.wait(timeout=120) == -9, log.read_text()[-3000:]
        assert not pidfile.exists()  # the hook did it, after the status branch moved
        reported = audit_records(server.bare)
        assert len(reported) == machines * TASKS_PER_MACHINE
        # Every task ended; the status commit landed but the journal never heard of it.
        assert [p["state"] for p in fleet.journal_plans()] == ["executed"]

        again = subprocess.run(argv, capture_output=True, text=True, env=fleet.env, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "reported a plan that ended before from the journal" in again.stdout
        records = audit_records(server.bare)
        status_commits = git("--git-dir", str(server.bare), "rev-list", "reconciler/status")
    assert [p["state"] for p in fleet.journal_plans()] == ["reported"]
    keys = Counter((r["execution"], r["resource"], r["stage"], r["task"]) for r in records)
    assert [k for k, n in keys.items() if n > 1] == []
    assert len(records) == machines * TASKS_PER_MACHINE
    assert len(status_commits.split()) == 1  # nothing new to say: no second commit
