"""Status on the tracked branch does not feed itself (`--status-branch main`).

Through the real CLI on a bare repository: the controller's own status commits
land on the branch it tracks, yet they are never a declared revision —
`Reconciled-Revision` and `status/controller.yaml` name the last commit that changed
declared files, and an idle controller makes no commits at all.
"""

from __future__ import annotations

from pathlib import Path

import pygit2
import yaml

from tests.conftest import BASE_FILES
from tests.e2e.support import Fleet


def trailer(message: str, key: str) -> str | None:
    for line in message.splitlines():
        if line.startswith(f"{key}: "):
            return line.split(": ", 1)[1].strip()
    return None


def test_status_commits_on_the_tracked_branch_are_not_declared_revisions(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    repo = pygit2.Repository(str(fleet.bare))
    declared = str(repo.revparse_single("refs/heads/main").id)

    first = fleet.run("--status-branch", "main", "apply")
    assert first.returncode == 0, first.stdout + first.stderr
    tip = repo.revparse_single("refs/heads/main").peel(pygit2.Commit)
    assert str(tip.parents[0].id) == declared  # the status commit sits on top of it
    assert trailer(tip.message, "Reconciled-Revision") == declared

    for _ in range(3):  # idle cycles: nothing declared changed, so nothing is written
        again = fleet.run("--status-branch", "main", "apply")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "status unchanged" in again.stdout
    assert str(repo.revparse_single("refs/heads/main").id) == str(tip.id)
    controller = yaml.safe_load(repo[tip.tree["status"]["controller.yaml"].id].data)
    assert controller["revision"] == declared
