"""Who changed what: the declared documents each commit changed, walked for the audit.

The Git edge of `reconciler.report.provenance` (which weighs what this module finds).
Reads the mirror only; signatures are checked by `reconciler.source.commits`.

- `DocumentChanges.changed(commit)`: the (kind, name) of every declared document
  whose content the commit changed — compared as the loader reads them (the
  model, through the source's parse cache: the head's files are parsed already;
  a file with errors as plain data), so a comment, a reordering of keys or a
  document moved to another file is not a change. A merge commit
  changed a document only when it differs from *every* parent (Git's TREESAME
  rule): a clean merge changed nothing, the merged branch's commits did. Kept
  per commit id (commits never change), so a long-running controller reads each
  commit once.
- `DocumentChanges.origins(head, wanted)`: per resource, the newest commit in the
  history of `head` that changed one of its documents (`wanted`), the merge
  commit that brought it into the first-parent line, and the evidence (trailers,
  signature) of the commits that speak for it: the change itself, that merge, and
  later commits that change no document (approvals given afterwards).
- `provenance_for(...)`: the above, weighed for the audit records.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pygit2
import structlog
from pygit2.enums import SortMode

from reconciler.load.desired import Desired
from reconciler.load.load import IGNORE_FILE, is_declared_path, read_ignore_patterns
from reconciler.load.yamlpos import parse_documents
from reconciler.model.kinds import Approvals
from reconciler.report.provenance import (
    DocumentKey,
    Origin,
    Provenance,
    documents_of,
    provenance_by_key,
)
from reconciler.source.commits import SignatureVerifier, allowed_signers, evidence
from reconciler.source.tree import ParseCache, commit_of, read_blob

log = structlog.get_logger("reconciler.source.history")

_NONE = frozenset[DocumentKey]()
_ABSENT = pygit2.Oid(hex="0" * 40)
"""The blob id of the missing side of an added or deleted file in a diff."""


def _identity(signature: pygit2.Signature) -> str:
    return f"{signature.name} <{signature.email}>"


@dataclass(frozen=True)
class _Doc:
    """One document of a file: its model (None when the file has errors), and the blob."""

    model: Any
    oid: pygit2.Oid


class DocumentChanges:
    """The documents each commit changed, kept by commit id (see the module docstring)."""

    def __init__(
        self,
        repo: pygit2.Repository | None = None,
        *,
        cache: ParseCache | None = None,
        keep: int = 20_000,
    ) -> None:
        self._repo = repo
        self._files = cache or ParseCache()
        self.keep = keep
        self._changed: dict[pygit2.Oid, frozenset[DocumentKey]] = {}
        self._documents: dict[tuple[str, pygit2.Oid], dict[DocumentKey, _Doc]] = {}
        self._plain: dict[pygit2.Oid, dict[DocumentKey, Any]] = {}
        """Plain data of files with errors, by blob (compared as data)."""
        self.commits_read = 0
        """Commits whose changes were computed (not taken from the kept ones): for tests."""

    @property
    def repo(self) -> pygit2.Repository:
        assert self._repo is not None, "DocumentChanges.use(repo) first"
        return self._repo

    def use(self, repo: pygit2.Repository, cache: ParseCache | None = None) -> DocumentChanges:
        """Read `repo` from now on, files parsed through `cache` (the source's) when given
        (what is kept by commit and blob id stays true)."""
        self._repo = repo
        if cache is not None:
            self._files = cache
        return self

    # --- one commit ------------------------------------------------------------------

    def changed(self, commit: pygit2.Commit) -> frozenset[DocumentKey]:
        found = self._changed.get(commit.id)
        if found is None:
            self.commits_read += 1
            found = self._compute(commit)
            if len(self._changed) >= self.keep:
                self._changed.pop(next(iter(self._changed)))
            self._changed[commit.id] = found
        return found

    def _compute(self, commit: pygit2.Commit) -> frozenset[DocumentKey]:
        ignore = self._ignore(commit.tree)
        if not commit.parents:
            return frozenset(self._tree_documents(commit.tree, ignore))
        changed: frozenset[DocumentKey] | None = None
        for parent in commit.parents:
            against = self._against(parent.tree, commit.tree, ignore)
            changed = against if changed is None else changed & against
            if not changed:
                return _NONE
        return changed or _NONE

    def _ignore(self, tree: pygit2.Tree) -> tuple[str, ...]:
        try:
            return read_ignore_patterns(read_blob(self.repo, tree[IGNORE_FILE].id))
        except KeyError:
            return ()

    def _against(
        self, old: pygit2.Tree, new: pygit2.Tree, ignore: tuple[str, ...]
    ) -> frozenset[DocumentKey]:
        """Documents whose data differs between two trees (only changed files are read)."""
        before: dict[DocumentKey, _Doc] = {}
        after: dict[DocumentKey, _Doc] = {}
        for delta in old.diff_to_tree(new).deltas:
            for file, out in ((delta.old_file, before), (delta.new_file, after)):
                if file.id == _ABSENT or not is_declared_path(file.path, ignore):
                    continue
                out.update(self._blob_documents(file.path, file.id))
        return frozenset(
            key for key in before.keys() | after.keys() if not self._same(before, after, key)
        )

    def _same(
        self,
        before: Mapping[DocumentKey, _Doc],
        after: Mapping[DocumentKey, _Doc],
        key: DocumentKey,
    ) -> bool:
        old, new = before.get(key), after.get(key)
        if old is None or new is None:
            return old is new
        if old.model is not None and new.model is not None:
            return bool(old.model == new.model)
        # A side the loader found errors in: the data of both (the model leaves them out).
        return self._data(old).get(key) == self._data(new).get(key)

    def _data(self, doc: _Doc) -> dict[DocumentKey, Any]:
        found = self._plain.get(doc.oid)
        if found is None:
            try:
                found = _data_documents(read_blob(self.repo, doc.oid))
            except Exception:  # as unreadable as the file it came from
                found = {}
            if len(self._plain) >= 256:
                self._plain.clear()
            self._plain[doc.oid] = found
        return found

    def _tree_documents(
        self, tree: pygit2.Tree, ignore: tuple[str, ...], prefix: str = ""
    ) -> dict[DocumentKey, Any]:
        found: dict[DocumentKey, Any] = {}
        for entry in tree:
            path = f"{prefix}{entry.name}"
            if entry.type_str == "tree":
                subtree = self.repo[entry.id]
                assert isinstance(subtree, pygit2.Tree)
                found.update(self._tree_documents(subtree, ignore, f"{path}/"))
            elif entry.type_str == "blob" and is_declared_path(path, ignore):
                found.update(self._blob_documents(path, entry.id))
        return found

    def _blob_documents(self, path: str, oid: pygit2.Oid) -> dict[DocumentKey, _Doc]:
        """A file's documents by (kind, name) — each with the loader's model unless the
        file has errors; a file that cannot be read has none."""
        key = (path, oid)
        if key in self._documents:
            return self._documents[key]
        documents: dict[DocumentKey, _Doc] = {}
        try:
            parsed = self._files.get(path, oid, lambda: read_blob(self.repo, oid))
            clean = not parsed.diagnostics  # with errors, the model leaves out what is wrong
            for doc in parsed.documents:
                found = _Doc(doc.document if clean else None, oid)
                documents.setdefault((doc.kind, doc.name), found)
        except Exception:  # history may hold anything: a file that cannot be read has none
            documents = {}
        if len(self._documents) >= 4096:  # only within a walk is a file read twice
            self._documents.clear()
        self._documents[key] = documents
        return documents

    # --- a resource's change ------------------------------------------------------------

    def origins(
        self,
        head: str,
        wanted: Mapping[str, frozenset[DocumentKey]],
        verifier: SignatureVerifier | None = None,
        *,
        limit: int = 1000,
    ) -> dict[str, Origin]:
        """Per key of `wanted`, who changed its documents last (see the module docstring);
        an empty `Origin` when no commit within `limit` of `head` did."""
        repo = self.repo
        walked: list[pygit2.Commit] = []
        found: dict[str, pygit2.Commit] = {}
        left = dict(wanted)
        for commit in repo.walk(pygit2.Oid(hex=head), SortMode.TOPOLOGICAL | SortMode.TIME):
            if not left or len(walked) >= limit:
                break
            walked.append(commit)
            changed = self.changed(commit)
            if not changed:
                continue
            for key in [k for k, docs in left.items() if docs & changed]:
                found[key] = commit
                del left[key]
        first_parents = _first_parents(repo, head, limit)
        by_change: dict[pygit2.Oid, Origin] = {}
        for change in found.values():
            if change.id not in by_change:
                by_change[change.id] = self._origin(change, walked, first_parents, verifier)
        return {key: by_change[found[key].id] if key in found else Origin() for key in wanted}

    def _origin(
        self,
        change: pygit2.Commit,
        walked: Sequence[pygit2.Commit],
        first_parents: Sequence[pygit2.Commit],
        verifier: SignatureVerifier | None,
    ) -> Origin:
        repo = self.repo
        merge: pygit2.Commit | None = None
        for commit in first_parents:  # newest first: the oldest one holding the change
            if commit.id == change.id:
                merge = None
                break
            if not repo.descendant_of(commit.id, change.id):
                break
            merge = commit
        speaking = []
        for commit in walked:
            if commit.id == change.id:
                speaking.append(commit)
                break
            merged_it = merge is not None and commit.id == merge.id
            approves = (  # a later commit that changes no document: an approval afterwards
                len(commit.parents) == 1
                and not self.changed(commit)
                and repo.descendant_of(commit.id, change.id)
            )
            if merged_it or approves:
                speaking.append(commit)
        return Origin(
            commit=str(change.id),
            author=_identity(change.author),
            committer=_identity(merge.author if merge is not None else change.committer),
            merge=str(merge.id) if merge is not None else None,
            evidence=tuple(evidence(c, verifier) for c in speaking),
        )


def _data_documents(data: bytes) -> dict[DocumentKey, Any]:
    """The documents of a file the loader finds errors in, as plain data (hardened
    parsing: size, depth and alias limits hold)."""
    documents: dict[DocumentKey, Any] = {}
    for doc in parse_documents(data):
        found = doc.data
        if not isinstance(found, dict) or not isinstance(found.get("metadata"), dict):
            continue
        kind, name = found.get("kind"), found["metadata"].get("name")
        if isinstance(kind, str) and isinstance(name, str):
            documents.setdefault((kind, name), found)
    return documents


def _first_parents(repo: pygit2.Repository, head: str, limit: int) -> list[pygit2.Commit]:
    out: list[pygit2.Commit] = []
    commit: pygit2.Commit | None = commit_of(repo, head)
    while commit is not None and len(out) < limit:
        out.append(commit)
        commit = commit.parents[0] if commit.parents else None
    return out


def provenance_for(
    repo: pygit2.Repository,
    changes: DocumentChanges,
    keys: Collection[str],
    *,
    cache: ParseCache | None = None,
    revision: str | None,
    desired: Desired | None,
    rules: Desired | None,
    counted: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Provenance]:
    """Who asked for, merged and approved each of `keys` at `revision` (the audit's
    "asked by"): the history walked from `revision`, each resource's documents as
    `desired` resolves them (a resource no longer declared: its own document; files
    parsed through `cache`, the source's), the
    approvals judged by the reviewers and trusted keys of `rules` (the rules in force).

    The audit must not cost the cycle its status commit: a history that cannot be
    read gives no provenance, and a warning.
    """
    if revision is None or not keys:
        return {}
    changes.use(repo, cache)
    resources = desired.resources if desired is not None else {}
    wanted: dict[str, frozenset[DocumentKey]] = {}
    for key in keys:
        resource = resources.get(key)
        kind, _, name = key.partition("/")
        wanted[key] = (
            documents_of(desired, resource) if resource is not None else frozenset({(kind, name)})
        )
    judge = rules or desired
    approvals = judge.policy.approvals if judge is not None else None
    try:
        verifier = None
        if judge is not None and approvals is not None and approvals.trusted_signers:
            text, _missing = allowed_signers(
                approvals.trusted_signers, changes.repo, judge.revision
            )
            verifier = SignatureVerifier.for_signers(text) if text.strip() else None
        origins = changes.origins(revision, wanted, verifier)
    except Exception as exc:
        log.warning("audit: the history could not be read", error=str(exc))
        return {}
    return provenance_by_key(origins, desired, rules=approvals or Approvals(), counted=counted)


__all__ = ["DocumentChanges", "provenance_for"]
