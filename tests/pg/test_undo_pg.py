"""Undo labels with the journal in PostgreSQL: the resolutions each resource was applied
with are kept in the database as in the SQLite journal, so a `git revert` is planned as an
undo there too (the same scenario as tests/e2e/test_undo.py, through the real CLI)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.test_undo import files, git, profile
from tests.pg.support import PgFleet
from tests.repos import commit_change
from tests.servers.postgres import Cluster


def test_a_revert_is_an_undo_with_the_journal_in_postgresql(tmp_path: Path, pg: Cluster) -> None:
    fleet = PgFleet.create_pg(tmp_path, files(), pg)
    assert fleet.run("apply").returncode == 0
    commit_change(fleet.bare, {"profiles.yaml": profile("rhel")}, "Move to RHEL")
    change = git("rev-parse", "main", cwd=fleet.bare)
    assert fleet.run("apply", "--yes").returncode == 0

    clone = tmp_path / "clone"
    git("clone", "-q", str(fleet.bare), str(clone), cwd=tmp_path)
    git("revert", "--no-edit", "HEAD", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)

    shown: subprocess.CompletedProcess[str] = fleet.run("plan", "--output", "json")
    assert shown.returncode == 2, shown.stdout + shown.stderr
    undo = {u["key"]: u for u in json.loads(shown.stdout)["undo"]}
    assert set(undo) == {"Machine/m1", "Machine/m2"}
    assert undo["Machine/m1"]["commit"] == change
    history = fleet.sql("SELECT resource, revision FROM resolutions ORDER BY resource, seq")
    assert [r["resource"] for r in history] == ["Machine/m1"] * 2 + ["Machine/m2"] * 2
    assert history[1]["revision"] == change
    assert not (fleet.state / "journal.sqlite").exists()
