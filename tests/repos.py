"""Declared repositories for tests: bare Git repositories built and changed without a checkout.

Written once for every test that needs a repository (the end-to-end fleets, the
server's, the source's, the plans of branches): files are `{path: text}`, nested
paths allowed, and each helper returns the new commit's id. Built with pygit2
straight into the bare repository, as a person's push would leave it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pygit2

ADA = pygit2.Signature("Ada", "ada@example.com")
PERSON = pygit2.Signature("A Person", "person@example.com")
FLEET = pygit2.Signature("Fleet Owner", "fleet@example.com")
"""Who declares an end-to-end fleet (`tests.e2e.support.Fleet.create`)."""
BLOB = pygit2.enums.FileMode.BLOB


def _tree(repo: pygit2.Repository, files: Mapping[str, str | bytes]) -> pygit2.Oid:
    index = pygit2.Index()
    for path, content in sorted(files.items()):
        data = content.encode() if isinstance(content, str) else content
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), BLOB))
    return index.write_tree(repo)


def _open(bare: Path) -> pygit2.Repository:
    if (bare / "HEAD").exists():
        return pygit2.Repository(str(bare))
    return pygit2.init_repository(str(bare), bare=True, initial_head="main")


def folder_files(folder: Path) -> dict[str, bytes]:
    """The files of a folder as `{path: bytes}`, dot-files left out but `.reconcilerignore`."""
    out: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        hidden = any(p.startswith(".") and p != ".reconcilerignore" for p in relative.parts)
        if path.is_file() and not hidden:
            out[relative.as_posix()] = path.read_bytes()
    return out


def commit_tree(
    bare: Path,
    files: Mapping[str, str | bytes],
    message: str = "Declare the fleet",
    *,
    branch: str = "main",
    who: pygit2.Signature = ADA,
) -> str:
    """A commit on `branch` whose tree is exactly `files`; its parent is the branch's tip
    (else main's, for a new branch); the first commit of a new repository otherwise."""
    repo = _open(bare)
    ref = f"refs/heads/{branch}"
    parent = repo.references.get(ref) or repo.references.get("refs/heads/main")
    parents = [parent.target] if parent is not None else []
    return str(repo.create_commit(ref, who, who, message, _tree(repo, files), parents))


def commit_change(
    bare: Path,
    files: Mapping[str, str | bytes],
    message: str = "Change",
    *,
    branch: str = "main",
    who: pygit2.Signature = PERSON,
) -> str:
    """A commit on `branch` changing (or adding) `files` on top of its tip's tree."""
    repo = pygit2.Repository(str(bare))
    head = repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(head.tree)
    for path, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), BLOB))
    tree = index.write_tree(repo)
    return str(repo.create_commit(f"refs/heads/{branch}", who, who, message, tree, [head.id]))
