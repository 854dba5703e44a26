"""Shared parts of the end-to-end tests: a declared repository, the real CLI, the records.

A `Fleet` is a bare Git repository made from YAML files (one commit on `main`,
see `tests.repos`) and a state directory; `reconciler` runs as a real
subprocess against both, as a user or CI would run it. What the tests assert on
is read from the records the system keeps, never from process memory: the
simulator's own action log, the journal's rows, the status branch.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from tests.conftest import ROOT
from tests.repos import FLEET, commit_tree

CLI_TIMEOUT = 120.0


@dataclass
class Fleet:
    """A declared repository (bare, one commit) and the controller's state directory."""

    bare: Path
    state: Path
    env: dict[str, str]

    @classmethod
    def create(
        cls, tmp: Path, files: dict[str, str], *, env: dict[str, str] | None = None
    ) -> Fleet:
        bare = tmp / "infra.git"
        commit_tree(bare, files, "Declare the fleet", who=FLEET)
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        full_env.pop("RECONCILER_CONFIG", None)
        return cls(bare=bare, state=tmp / "state", env=full_env)

    def argv(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "reconciler",
            "--repo",
            str(self.bare),
            "--state-dir",
            str(self.state),
            *args,
        ]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env, timeout=CLI_TIMEOUT
        )

    def run_as(
        self, repo: str, *args: str, cwd: Path | None = None, state: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The CLI with the repository spelled as given (and another state directory)."""
        argv = [sys.executable, "-m", "reconciler", "--repo", repo]
        argv += ["--state-dir", str(state or self.state), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=CLI_TIMEOUT, cwd=cwd
        )

    def run_module(self, module: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m MODULE ARGS` with this fleet's environment (e.g. the simulator's CLI)."""
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=CLI_TIMEOUT,
        )

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(self.argv(*args), stdout=out, stderr=out, env=self.env)

    # --- the records ----------------------------------------------------------------

    def action_log(self) -> list[dict[str, Any]]:
        """The simulator's action log (read-only, safe while a controller runs)."""
        return rows(self.state / "simulator.db", "SELECT * FROM action_log ORDER BY seq")

    def started_actions(self) -> int:
        found = rows(
            self.state / "simulator.db",
            "SELECT count(*) AS n FROM action_log WHERE event = 'started'",
        )
        return int(found[0]["n"]) if found else 0

    def journal_plans(self) -> list[dict[str, Any]]:
        return rows(self.state / "journal.sqlite", "SELECT * FROM plans ORDER BY created_at")

    def journal_tasks(self) -> list[dict[str, Any]]:
        return rows(self.state / "journal.sqlite", "SELECT * FROM tasks ORDER BY rowid")

    def status_commits(self, branch: str = "reconciler/status") -> list[str]:
        repo = pygit2.Repository(str(self.bare))
        try:
            tip = repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit)
        except KeyError:
            return []
        return [str(c.id) for c in repo.walk(tip.id)]


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of a SQLite file opened read-only; none when it does not exist yet."""
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.OperationalError:
        return []
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql).fetchall()]
    except sqlite3.OperationalError:  # the table is not created yet
        return []
    finally:
        conn.close()


def git_texts(bare: Path) -> list[tuple[str, str]]:
    """Every commit message and every blob reachable from any ref, as (where, text)."""
    repo = pygit2.Repository(str(bare))
    texts: list[tuple[str, str]] = []
    seen: set[str] = set()

    def tree(t: pygit2.Tree, prefix: str) -> None:
        for entry in t:
            obj = repo[entry.id]
            if str(obj.id) in seen:
                continue
            seen.add(str(obj.id))
            if isinstance(obj, pygit2.Tree):
                tree(obj, f"{prefix}{entry.name}/")
            elif isinstance(obj, pygit2.Blob):
                texts.append((f"{prefix}{entry.name}", obj.data.decode("utf-8", "replace")))

    for ref in repo.references:
        target = repo.references[ref].peel(pygit2.Commit)
        for commit in repo.walk(target.id):
            if str(commit.id) in seen:
                continue
            seen.add(str(commit.id))
            texts.append((f"{ref} commit {str(commit.id)[:12]}", commit.message))
            tree(commit.tree, f"{ref}:{str(commit.id)[:12]}:")
    return texts
