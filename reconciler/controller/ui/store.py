"""What the web UI reads from disk: the status branch in the mirror, and task logs.

The UI's I/O edge, called from the server's threads while the controller's worker
writes. The status branch is read through a repository object of each thread's own
(libgit2 objects are not shared across threads) and never a checkout; each answer
is cached by the branch tip it was read at, so a page costs a lookup until the next
status commit. Histories come from `reconciler.report.audit` (`read_history`, `history`:
what `reconciler audit KIND/NAME` prints), drift from `reconciler.source.readback`.

Task logs are served only from `<state-dir>/logs/` and only from the folders of the
resource asked about (`…/logs/<plan>/<Kind>/<name>/…`): a path that leaves them —
`..`, an absolute path, a symbolic link pointing out — is not found. What is served
is redacted again (a secret learnt after the log was written is scrubbed too).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import pygit2

from reconciler.controller.branch_plans import PLANS_DIR, read_plan_header
from reconciler.execute.tasklog import task_log_path
from reconciler.report.audit import Entry, history, read_history
from reconciler.report.report import DriftEntry
from reconciler.secrets import REDACTOR
from reconciler.source.readback import read_drift, read_files, status_tree

LOG_LIMIT = 1024 * 1024
"""Bytes of a task log served at most (logs are bounded at 256 KiB when written)."""
CACHED = 256

T = TypeVar("T")


@dataclass(frozen=True)
class BranchPlan:
    """One watched branch's `plans/<branch>.md` on the status branch."""

    path: str
    header: dict[str, str]
    text: str


@dataclass(frozen=True)
class LogFile:
    """A task log of a resource: `rel` is its path under `<state-dir>/logs/`."""

    rel: str
    plan: str
    stage: str
    name: str
    size: int
    modified: datetime


class StatusBranch:
    """Cached reads of the status branch in the mirror (`<state-dir>/mirror.git`)."""

    def __init__(self, mirror: Path, branch: str) -> None:
        self.mirror = mirror
        self.branch = branch
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()

    def _repo(self) -> pygit2.Repository | None:
        repo = getattr(self._local, "repo", None)
        if repo is None:
            if not (self.mirror / "HEAD").exists():
                return None
            repo = pygit2.Repository(str(self.mirror))
            self._local.repo = repo
        return repo

    def tip(self) -> str | None:
        """The status branch's commit, or None before the first status commit."""
        repo = self._repo()
        if repo is None:
            return None
        try:
            return str(repo.revparse_single(f"refs/heads/{self.branch}").peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.GitError):
            return None

    def _cached(self, key: tuple[Hashable, ...], read: Callable[[pygit2.Repository], T]) -> T:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        repo = self._repo()
        assert repo is not None
        value = read(repo)
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        return value

    def timeline(self, resource: str) -> list[Entry]:
        """The resource's history, oldest first: who asked, what ran, what happened."""
        tip = self.tip()
        if tip is None:
            return []

        def read(repo: pygit2.Repository) -> list[Entry]:
            gathered = read_history(repo, self.branch, resource)
            return history(gathered) if gathered is not None else []

        return self._cached(("timeline", tip, resource), read)

    def drift(self) -> dict[str, DriftEntry]:
        """The last drift report's entries by resource key."""
        tip = self.tip()
        if tip is None:
            return {}
        return self._cached(
            ("drift", tip), lambda repo: {e.key: e for e in read_drift(repo, self.branch)}
        )

    def report(self, path: str) -> bytes | None:
        """One file of the status branch's tip (`reports/discovered.json`), or None."""
        tip = self.tip()
        if tip is None:
            return None
        return self._cached(
            ("file", tip, path), lambda repo: read_files(repo, self.branch, (path,)).get(path)
        )

    def branch_plans(self) -> list[BranchPlan]:
        """The watched branches' plans, by path."""
        tip = self.tip()
        if tip is None:
            return []
        return self._cached(("plans", tip), self._read_plans)

    def _read_plans(self, repo: pygit2.Repository) -> list[BranchPlan]:
        tree = status_tree(repo, self.branch)
        if tree is None or PLANS_DIR not in tree:
            return []
        found: list[BranchPlan] = []
        pending: list[tuple[str, pygit2.Object]] = [(PLANS_DIR, repo[tree[PLANS_DIR].id])]
        while pending:
            prefix, folder = pending.pop()
            if not isinstance(folder, pygit2.Tree):
                continue
            for entry in folder:
                path = f"{prefix}/{entry.name}"
                item = repo[entry.id]
                if isinstance(item, pygit2.Tree):
                    pending.append((path, item))
                elif isinstance(item, pygit2.Blob) and path.endswith(".md"):
                    text = item.data.decode("utf-8", "replace")
                    found.append(BranchPlan(path, read_plan_header(text), REDACTOR.text(text)))
        return sorted(found, key=lambda p: p.path)


# --- task logs --------------------------------------------------------------------------


def _resource_parts(resource: str) -> tuple[str, ...]:
    """The folders of a resource under a plan's log folder, as the task logs name them."""
    probe = task_log_path(Path("/"), "plan", resource, "stage", "task")
    return probe.parts[3:-2]  # ("/", "logs", "plan", *resource, "stage", "task.log")


class TaskLogs:
    """The task logs under `<state-dir>/logs/`, per resource."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "logs"

    def of(self, resource: str) -> list[LogFile]:
        """Every log of the resource, the newest first."""
        if not self.root.is_dir():
            return []
        parts = _resource_parts(resource)
        found = []
        for plan in self.root.iterdir():
            folder = plan.joinpath(*parts)
            if not folder.is_dir():
                continue
            for path in folder.rglob("*.log"):
                if path.is_symlink() or not path.is_file():
                    continue
                stat = path.stat()
                found.append(
                    LogFile(
                        rel=path.relative_to(self.root).as_posix(),
                        plan=plan.name,
                        stage=path.parent.name,
                        name=path.name,
                        size=stat.st_size,
                        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                    )
                )
        return sorted(found, key=lambda f: (f.modified, f.rel), reverse=True)

    def rel_of(self, log: str | None) -> str | None:
        """A status's `failure.log` path as served (relative to the logs folder), or None
        when it is not inside it."""
        if not log:
            return None
        try:
            return Path(log).resolve().relative_to(self.root.resolve()).as_posix()
        except (ValueError, OSError):
            return None

    def read(self, resource: str, rel: str) -> str | None:
        """The redacted text of one of the resource's logs; None when `rel` is not one."""
        wanted = PurePosixPath(rel)
        if wanted.is_absolute() or any(p in ("", ".", "..") for p in wanted.parts):
            return None
        parts = _resource_parts(resource)
        if len(wanted.parts) < len(parts) + 2 or wanted.parts[1 : 1 + len(parts)] != parts:
            return None
        root = self.root.resolve()
        try:
            path = self.root.joinpath(*wanted.parts).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(root) or not path.is_file() or path.suffix != ".log":
            return None
        if path.relative_to(root).parts[1 : 1 + len(parts)] != parts:  # a link to elsewhere
            return None
        with path.open("rb") as handle:
            data = handle.read(LOG_LIMIT + 1)
        text = data[:LOG_LIMIT].decode("utf-8", "replace")
        if len(data) > LOG_LIMIT:
            text += f"\n… cut at {LOG_LIMIT} bytes …\n"
        return REDACTOR.text(text)


__all__ = ["BranchPlan", "LogFile", "StatusBranch", "TaskLogs"]
