"""Fixtures for the Git source tests: real servers on 127.0.0.1 and "a human" with git."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.source import DeclaredSource, GitAccess, Mirror
from tests.servers.git import (
    DaemonControl,
    Server,
    ServerUnavailable,
    git,
    git_daemon,
    restartable_git_daemon,
)


def provider(name: str, type_: str = "simulator") -> str:
    return (
        "apiVersion: reconciler/v1\n"
        "kind: Provider\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{type: {type_}}}\n"
    )


BROKEN = "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: broken}\nspec: {}\n"
"""A document the loader rejects (spec.type is required)."""


class Human:
    """Someone with a clone of the served repository who commits and pushes with git."""

    def __init__(self, remote: Path | str, work: Path, branch: str = "main") -> None:
        self.work = work
        self.branch = branch
        git("clone", "-q", str(remote), str(work), cwd=work.parent)
        git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=work)

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for path, text in files.items():
            target = self.work / path
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, *, force: bool = False, branch: str | None = None) -> None:
        branch = branch or self.branch
        git(
            "push", "-q", *(["--force"] if force else []), "origin", f"HEAD:{branch}", cwd=self.work
        )

    def pull(self, branch: str | None = None) -> None:
        branch = branch or self.branch
        git("fetch", "-q", "origin", cwd=self.work)
        git("checkout", "-q", "-f", "-B", branch, f"origin/{branch}", cwd=self.work)
        git("clean", "-q", "-f", "-d", cwd=self.work)

    def reset(self, rev: str) -> None:
        git("reset", "-q", "--hard", rev, cwd=self.work)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Server]:
    with git_daemon(tmp_path / "srv") as server:
        yield server


@pytest.fixture
def restartable_daemon(tmp_path: Path) -> Iterator[DaemonControl]:
    with restartable_git_daemon(tmp_path / "srv") as control:
        yield control


@pytest.fixture
def human_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[int] = []

    def make(server: Server, branch: str = "main") -> Human:
        made.append(1)
        return Human(server.bare, tmp_path / f"human{len(made)}", branch)

    return make


def seeded(human: Human, count: int = 3) -> str:
    """Commit `count` valid provider files and push; the commit's SHA."""
    sha = human.commit(
        {f"providers/p{i}.yaml": provider(f"p{i}") for i in range(count)}, "initial inventory"
    )
    human.push()
    return sha


def source_for(url: str, state: Path, **kwargs: object) -> DeclaredSource:
    return DeclaredSource(Mirror.in_state_dir(state, GitAccess(url)), **kwargs)  # type: ignore[arg-type]


def require(server_cm):  # type: ignore[no-untyped-def]
    """Enter a server's context manager, or skip the test with the reason it is unavailable."""
    try:
        return server_cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
