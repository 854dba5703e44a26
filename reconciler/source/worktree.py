"""Read-only trees of declared revisions on disk, for tasks that read repository files.

Part of the source edge, beside the mirror. Ansible playbooks, `file:` secret
references relative to the repository and a command's `cwd` need the revision's
files as files; the controller never has a checkout, so each execution gets a
materialization of its plan's revision from Git objects: `<state>/trees/<sha>/`,
files 0444 and folders 0555, written once (to a temporary folder, then renamed)
and shared by every execution of that revision. Symlinks are written as links
only when they stay inside the tree; submodules are left out.

`prune_trees` keeps the few used last (each use touches the tree's folder) and every
revision an unfinished plan still needs (see README, Settings: `RECONCILER_TREES_KEPT`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Collection
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

TREES_DIR = "trees"


def tree_path(state_dir: Path, sha: str) -> Path:
    return Path(state_dir) / TREES_DIR / sha


def materialize(repo: pygit2.Repository, sha: str, state_dir: Path) -> Path:
    """The revision's files under `<state>/trees/<sha>` (made once), read-only."""
    target = tree_path(state_dir, sha)
    if target.is_dir():
        # Its modification time says when it was used last: retention keeps those.
        with contextlib.suppress(OSError):
            os.utime(target)
        return target
    commit = repo[sha].peel(pygit2.Commit)
    staging = target.with_name(f".{sha}.{os.getpid()}")
    if staging.exists():
        _remove(staging)
    staging.mkdir(parents=True)
    _write_tree(repo, commit.tree, staging, staging)
    _freeze(staging)
    try:
        staging.rename(target)
    except OSError:  # another process made it first: theirs is the same content
        _remove(staging)
    return target


def _write_tree(repo: pygit2.Repository, tree: pygit2.Tree, folder: Path, root: Path) -> None:
    for entry in tree:
        path = folder / (entry.name or "")
        obj = repo[entry.id]
        if entry.filemode == FileMode.TREE and isinstance(obj, pygit2.Tree):
            path.mkdir()
            _write_tree(repo, obj, path, root)
        elif not isinstance(obj, pygit2.Blob):
            continue  # a submodule: not part of the revision's files
        elif entry.filemode in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE):
            path.write_bytes(obj.data)
            if entry.filemode == FileMode.BLOB_EXECUTABLE:
                path.chmod(0o555)
        elif entry.filemode == FileMode.LINK:
            link = obj.data.decode("utf-8", "replace")
            resolved = (folder / link).resolve()
            if resolved.is_relative_to(root.resolve()):
                path.symlink_to(link)


def _freeze(root: Path) -> None:
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(0o555 if mode & stat.S_IXUSR else 0o444)
        for name in dirs:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(0o555)
    root.chmod(0o555)


def _remove(root: Path) -> None:
    # Deleting a file needs its folder writable: give the folders back their write bit.
    for folder, dirs, _files in os.walk(root):
        for name in dirs:
            with contextlib.suppress(OSError):
                (Path(folder) / name).chmod(0o755)
    with contextlib.suppress(OSError):
        root.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


def prune_trees(state_dir: Path, *, keep: int, needed: Collection[str] = ()) -> list[str]:
    """Remove materialized trees but the `keep` used last and the `needed` revisions;
    the revisions removed."""
    root = Path(state_dir) / TREES_DIR
    if not root.is_dir():
        return []
    trees = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = []
    for path in trees[keep:]:
        if path.name in needed:
            continue
        _remove(path)
        removed.append(path.name)
    return removed
