"""Status write-back: one commit per cycle to the status branch, pushed, race-safe.

Last step of the flow (report). `report.py` renders a cycle's files; `StatusWriter`
turns them into one commit and pushes it. Its rules:

- The commit's tree is the status branch's current tree with the controller's
  folders replaced by the cycle's files: under `status/`, `reports/` and
  `plans/` (or the folders the caller names) the given mapping is the whole
  content, so a file not in it is removed (the status of a deleted resource
  goes away); `audit/` is append-only,
  so existing audit files are never removed or rewritten (giving an existing
  audit path different bytes is an error). Files outside these folders are left
  as they are (a README a person keeps on the status branch; the declared
  documents when status lives on the tracked branch).
- When the tree is byte-identical to the branch's tree, there is no commit.
- The status branch is created as an orphan branch when it does not exist. When
  `status_branch` equals the tracked branch, the same folders live on the
  tracked branch.
- The message is the caller's, followed by trailers (`Reconciled-Revision: <sha>`).
- Push races: the commit is built on the tip the mirror last fetched. If the
  push is refused and a fetch shows the remote moved, the commit is rebuilt on
  the new tip (our files applied on top of theirs) and pushed again, up to
  `max_attempts`; never forced, so nobody's commit is lost. A refusal with no
  remote movement (a pre-receive hook, a protected branch) is a PermanentError
  carrying the server's message; when the fetch that would tell fails (the
  network), it is a TemporaryError: not knowing is not a refusal.

`is_own_commit` tells the controller's commits apart (its identity, touching only
its folders), so they are never taken for a change of declared state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import pygit2
from pygit2.enums import FileMode

from reconciler.errors import PermanentError, TemporaryError
from reconciler.source.mirror import Mirror
from reconciler.source.tree import changed_paths

if TYPE_CHECKING:
    from reconciler.settings import Settings

REPLACED_DIRS = ("status", "reports", "plans")
"""Folders whose whole content each cycle's mapping gives."""
APPEND_ONLY_DIRS = ("audit",)
"""Folders whose files are only ever added."""
MANAGED_DIRS = REPLACED_DIRS + APPEND_ONLY_DIRS
OUTGOING_REF = "refs/reconciler/outgoing"


def top_dir(path: str) -> str:
    return path.split("/", 1)[0]


def check_path(path: str) -> str:
    """A clean relative path under one of the controller's folders, or ValueError."""
    pure = PurePosixPath(path)
    if (
        not path
        or path.startswith("/")
        or path.endswith("/")
        or any(part in ("", ".", "..", ".git") for part in path.split("/"))
        or len(pure.parts) < 2
        or pure.parts[0] not in MANAGED_DIRS
    ):
        raise ValueError(
            f"status file {path!r}: a relative path under one of {', '.join(MANAGED_DIRS)}/"
        )
    return path


def format_message(message: str, trailers: Mapping[str, str]) -> str:
    """The commit message: the caller's text, a blank line, `Key: value` trailers."""
    text = message.rstrip("\n")
    if trailers:
        text += "\n\n" + "\n".join(f"{k}: {v}" for k, v in trailers.items())
    return text + "\n"


def parse_trailers(message: str) -> dict[str, str]:
    """Trailers of a commit message (its last paragraph of `Key: value` lines)."""
    paragraphs = message.strip().split("\n\n")
    if len(paragraphs) < 2:
        return {}
    out: dict[str, str] = {}
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(": ")
        if not sep or not key or " " in key:
            return {}
        out[key] = value
    return out


def is_own_commit(repo: pygit2.Repository, commit: pygit2.Commit, author_email: str) -> bool:
    """A commit by the controller's identity that touches only the controller's folders."""
    if commit.author.email != author_email or len(commit.parents) > 1:
        return False
    if not commit.parents:
        paths = {f"{entry.name}/" for entry in commit.tree}
    else:
        paths = set(changed_paths(repo, commit.parents[0].id, commit.id))
    return bool(paths) and all(top_dir(p) in MANAGED_DIRS for p in paths)


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one write: the pushed commit, or None when nothing changed."""

    commit: str | None
    branch: str
    attempts: int = 0
    """Pushes tried (0 when nothing needed pushing); more than 1 means a race was handled."""

    @property
    def changed(self) -> bool:
        return self.commit is not None


class StatusWriter:
    """Commits a cycle's status files to the status branch and pushes them."""

    def __init__(
        self,
        mirror: Mirror,
        *,
        branch: str = "reconciler/status",
        author_name: str = "reconciler",
        author_email: str = "reconciler@localhost",
        max_attempts: int = 5,
    ) -> None:
        self.mirror = mirror
        self.branch = branch
        self.author_name = author_name
        self.author_email = author_email
        self.max_attempts = max_attempts

    @classmethod
    def from_settings(cls, mirror: Mirror, settings: Settings) -> StatusWriter:
        return cls(
            mirror,
            branch=settings.status_branch,
            author_name=settings.git_author_name,
            author_email=settings.git_author_email,
        )

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def write(
        self,
        files: Mapping[str, bytes],
        *,
        message: str,
        trailers: Mapping[str, str] | None = None,
        replaced: Sequence[str] = REPLACED_DIRS,
    ) -> WriteResult:
        """One commit holding `files` (the cycle's status), pushed; None if nothing changed.

        `replaced` names the folders whose whole content `files` gives (`status`
        or `status/` alike; `report.CycleReport.managed_prefixes` fits); files
        there that are not in `files` are removed. `audit/` never is.
        """
        for path in files:
            check_path(path)
        owned = tuple(p.strip("/") for p in replaced if p.strip("/") not in APPEND_ONLY_DIRS)
        text = format_message(message, trailers or {})
        repo = self.mirror.repo
        for attempt in range(1, self.max_attempts + 1):
            tip = self._tip()
            tree = self._build_tree(tip, files, owned)
            if (tip is not None and tree == tip.tree_id) or (tip is None and not files):
                return WriteResult(None, self.branch, attempt - 1)
            signature = pygit2.Signature(self.author_name, self.author_email)
            parents = [tip.id] if tip is not None else []
            commit = repo.create_commit(None, signature, signature, text, tree, parents)
            repo.references.create(OUTGOING_REF, commit, force=True)
            try:
                outcome = self.mirror.push(OUTGOING_REF, self.ref)
            except TemporaryError as pushing:
                try:
                    moved = self._remote_moved(tip)
                except TemporaryError:
                    raise pushing from None  # still down: the push's own error says it
                if not moved:
                    raise
                continue
            if outcome.accepted:
                repo.references.create(self.ref, commit, force=True)
                return WriteResult(str(commit), self.branch, attempt)
            try:
                moved = self._remote_moved(tip)
            except TemporaryError as exc:
                # A refusal is only a refusal once the branch is known not to have moved.
                raise TemporaryError(
                    f"push of status commit to {self.branch} was not accepted "
                    f"({outcome.message}), and whether the branch moved could not be "
                    f"checked: {exc}"
                ) from None
            if not moved:
                raise PermanentError(
                    f"push of status commit to {self.branch} refused by "
                    f"{self.mirror.access.display_url}: {outcome.message}"
                )
        raise TemporaryError(
            f"status branch {self.branch} kept moving: gave up after {self.max_attempts} pushes"
        )

    def _tip(self) -> pygit2.Commit | None:
        ref = self.mirror.repo.references.get(self.ref)
        return ref.peel(pygit2.Commit) if ref is not None else None

    def _remote_moved(self, tip: pygit2.Commit | None) -> bool:
        """Fetch; did the status branch move away from the tip we built on? A fetch that
        fails raises its error (a network error is a `TemporaryError`): not knowing is
        not "it did not move"."""
        self.mirror.fetch()
        now = self._tip()
        return (now.id if now else None) != (tip.id if tip else None)

    def _build_tree(
        self, tip: pygit2.Commit | None, files: Mapping[str, bytes], replaced: tuple[str, ...]
    ) -> pygit2.Oid:
        repo = self.mirror.repo
        index = pygit2.Index()
        if tip is not None:
            index.read_tree(tip.tree)
        existing = {entry.path: entry.id for entry in index}
        for path in existing:
            if top_dir(path) in replaced and path not in files:
                index.remove(path)
        # Hashed, not written: only blobs the tip does not hold yet are stored (a cycle's
        # unchanged status files cost no object-database write).
        held = set(existing.values())
        for path, data in files.items():
            blob = pygit2.hash(data)
            if top_dir(path) in APPEND_ONLY_DIRS and existing.get(path, blob) != blob:
                raise PermanentError(f"{path} exists with other content: audit/ is append-only")
            if blob not in held:
                repo.create_blob(data)
            index.add(pygit2.IndexEntry(path, blob, FileMode.BLOB))
        return index.write_tree(repo)
