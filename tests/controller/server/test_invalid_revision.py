"""A revision YAML resolves but cannot build (`!!int twenty`) in a running controller:
a diagnostic at its position, the last good revision kept, /readyz truthful.

The real app in-process (scheduler worker and uvicorn on 127.0.0.1), a bare
repository pushed to as a person would; asserted on /readyz and on the status
branch's `status/controller.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pygit2
import pytest
import yaml

from .conftest import TOKEN, declare, push, repo_files, running, settings_for

BROKEN = (
    "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: bad}\nspec:\n"
    "  provider: sim\n  pipeline: bm\n  params: {os: ubuntu, replicas: !!int twenty}\n"
)


def controller_yaml(bare: Path) -> dict:
    repo = pygit2.Repository(str(bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    return yaml.safe_load(repo[tip.tree["status"]["controller.yaml"].id].data)


def test_an_unbuildable_first_revision_is_not_ready_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {**repo_files(1), "bad.yaml": BROKEN}
    bare = declare(tmp_path, files)
    with running(settings_for(bare, tmp_path / "state"), monkeypatch) as api:
        api.wait_for(lambda: api.scheduler.cycles_run >= 1)
        ready = httpx.get(f"{api.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["revision"] is None
    status = controller_yaml(bare)
    assert status["revision"] is None
    assert status["invalidRevision"]["errors"] == [
        "bad.yaml:7:34: spec.params.replicas: the value tagged !!int is not an integer; "
        "fix the value or remove the tag"
    ]


def test_an_unbuildable_push_keeps_the_last_good_revision_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = declare(tmp_path, repo_files(1))
    with running(settings_for(bare, tmp_path / "state"), monkeypatch) as api:
        api.idle()
        good = api.scheduler.revision
        bad = push(bare, {**repo_files(1), "bad.yaml": BROKEN}, "A typo")
        sync = api.client.post("/api/v1/sync", headers={"Authorization": f"Bearer {TOKEN}"})
        done = api.operation(sync.json()["id"])
        assert done["phase"] == "failed"
        ready = httpx.get(f"{api.url}/readyz")
        assert ready.status_code == 200 and ready.json()["revision"] == good
    status = controller_yaml(bare)
    assert status["revision"] == good
    assert status["invalidRevision"]["revision"] == bad
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready_condition["reason"] == "ValidationFailed"
    assert f"revision {good[:12]} stays in force" in ready_condition["message"]
