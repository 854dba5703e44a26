"""The portal's Git edge: the tracked branch's documents, request commits, what Git says now.

Beside `reconciler.source`, over the same bare mirror (`<state-dir>/mirror.git`)
but with repository objects of its own: the API answers from its own threads while
the controller's worker fetches, and libgit2 is safe with one repository object per
thread. Nothing here fetches — the controller does, every cycle; the portal reads
what the mirror holds and pushes its own commits:

- `load`: the tracked branch's head as `reconciler validate --ref` loads it (parse
  cache by blob, the providers' observed fields), optionally with extra files — the
  request's document is checked with the whole repository around it;
- `push_request`: the document committed on the tracked head (author: the requester;
  committer: the controller's identity), held under `refs/reconciler/requests/<id>`
  (out of the mirror's fetch refspecs, so a fetch never prunes it) and pushed to
  `refs/heads/request/<id>`, never forced;
- `facts`: the branch's head, whether the tracked branch holds the request, the
  branch's plan file and the resource's status on the status branch
  (`reconciler.controller.portal.phases.GitFacts`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import pygit2
import yaml
from pygit2.enums import FileMode

from reconciler.controller.branch_plans import plan_path, read_plan_header
from reconciler.controller.portal.phases import GitFacts, PlanSeen, RequestRecord
from reconciler.errors import PermanentError
from reconciler.load import load
from reconciler.load.load import LoadResult
from reconciler.model.status import ResourceStatus
from reconciler.providers import observed_fields
from reconciler.report.report import STATUS_DIR
from reconciler.settings import Settings
from reconciler.source.mirror import GitAccess, Mirror
from reconciler.source.tree import ParseCache, TreeLister, declared_files, load_revision, read_file

REQUEST_REFS = "refs/reconciler/requests"
BRANCH_PREFIX = "request/"
_LOADS_KEPT = 4


class RequestGit:
    """The mirror as the portal reads and writes it (use under one lock)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.access = GitAccess.from_settings(settings)
        self.mirror = Mirror.in_state_dir(Path(settings.state_dir), self.access)
        self._lister: TreeLister | None = None
        self._cache = ParseCache()
        self._loads: dict[str, LoadResult] = {}
        self._assemble = functools.partial(load.assemble, observed_fields=observed_fields)

    @property
    def exists(self) -> bool:
        return self.mirror.exists

    @property
    def repo(self) -> pygit2.Repository:
        return self.mirror.repo

    def _ref(self, name: str) -> str | None:
        try:
            return str(self.repo.references[name].peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.GitError):
            return None

    def tracked_head(self) -> str | None:
        """The tracked branch's head in the mirror (as of the controller's last fetch)."""
        if not self.exists:
            return None
        return self._ref(f"refs/heads/{self.settings.branch}")

    def load(self, sha: str, extra: Mapping[str, bytes] | None = None) -> LoadResult:
        """The documents at `sha` (plus `extra` files), checked as `reconciler validate`."""
        if not extra and sha in self._loads:
            return self._loads[sha]
        if self._lister is None:
            self._lister = TreeLister(self.repo)
        listing = self._lister.files(sha)
        for path, data in (extra or {}).items():
            listing[path] = self.repo.create_blob(data)
        files = declared_files(listing, self.repo)
        result = load_revision(
            self.repo, sha, lister=self._lister, cache=self._cache, assemble=self._assemble,
            files=files,
        ).result  # fmt: skip
        if not extra:
            self._loads[sha] = result
            while len(self._loads) > _LOADS_KEPT:
                self._loads.pop(next(iter(self._loads)))
        return result

    def is_declared(self, sha: str, path: str) -> bool:
        """Whether `path` would hold documents (not excluded by `.reconcilerignore`)."""
        ignore = read_file(self.repo, sha, load.IGNORE_FILE)
        return load.is_declared_path(path, load.read_ignore_patterns(ignore))

    def exists_at(self, sha: str, path: str) -> bool:
        return read_file(self.repo, sha, path) is not None

    def push_request(
        self,
        request_id: str,
        base: str,
        path: str,
        data: bytes,
        *,
        author: tuple[str, str],
        message: str,
    ) -> str:
        """Commit `data` at `path` on `base` and push it to `request/<id>`: the commit."""
        repo = self.repo
        parent = repo[base].peel(pygit2.Commit)
        index = pygit2.Index()
        index.read_tree(parent.tree)
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), FileMode.BLOB))
        tree = index.write_tree(repo)
        committer = pygit2.Signature(self.settings.git_author_name, self.settings.git_author_email)
        commit = repo.create_commit(
            None, pygit2.Signature(*author), committer, message, tree, [parent.id]
        )
        local = f"{REQUEST_REFS}/{request_id}"
        repo.references.create(local, commit, force=True)
        outcome = self.mirror.push(local, f"refs/heads/{BRANCH_PREFIX}{request_id}")
        if not outcome.accepted:
            raise PermanentError(f"the push of {BRANCH_PREFIX}{request_id} was refused: "
                                 f"{outcome.message}")  # fmt: skip
        return str(commit)

    # --- what Git says about a request now -----------------------------------------------

    def _contains(self, tip: str, commit: str | None) -> bool:
        if commit is None:
            return False
        try:
            return tip == commit or self.repo.descendant_of(tip, commit)
        except (KeyError, ValueError, pygit2.GitError):
            return False

    def _file_at(self, sha: str, path: str) -> bytes | None:
        try:
            return read_file(self.repo, sha, path)
        except (KeyError, ValueError, pygit2.GitError):
            return None

    def _status_file(self, path: str) -> bytes | None:
        tip = self._ref(f"refs/heads/{self.settings.status_branch}")
        return read_file(self.repo, tip, path) if tip else None

    def plan_file(self, branch: str) -> str | None:
        data = self._status_file(plan_path(branch))
        return data.decode("utf-8", "replace") if data is not None else None

    def facts(self, record: RequestRecord) -> GitFacts:
        branch_head = self._ref(f"refs/heads/{record.branch}")
        tracked = self.tracked_head()
        merged_at = record.merged
        if merged_at is None and tracked is not None:
            written = self._file_at(record.head or record.commit, record.path)
            if any(self._contains(tracked, c) for c in (record.commit, record.head, branch_head)):
                merged_at = tracked
            elif written is not None and self._file_at(tracked, record.path) == written:
                merged_at = tracked  # squashed or rebased: the file as the branch has it
        plan = None
        text = self.plan_file(record.branch)
        if text is not None and branch_head is not None:
            header = read_plan_header(text)
            if header.get("head") == branch_head:
                plan = PlanSeen(
                    branch_head, header.get("plan-hash", "none"), plan_path(record.branch)
                )
        return GitFacts(
            branch_head=branch_head,
            merged_at=merged_at,
            plan=plan,
            reconciled=merged_at is not None and self._reconciled(merged_at),
            status=self._resource_status(record.key),
            applied=merged_at is not None and self._applied(record.key, merged_at),
        )

    def _reconciled(self, merged: str) -> bool:
        data = self._status_file(f"{STATUS_DIR}/controller.yaml")
        try:
            revision = (yaml.safe_load(data) or {}).get("revision") if data else None
        except yaml.YAMLError:
            return False
        return isinstance(revision, str) and self._contains(revision, merged)

    def _resource_status(self, key: str) -> ResourceStatus | None:
        kind, _, name = key.partition("/")
        data = self._status_file(f"{STATUS_DIR}/{kind}/{name}.yaml")
        if data is None:
            return None
        try:
            return ResourceStatus.from_yaml(data.decode("utf-8", "replace"))
        except Exception:  # a status file edited by hand: no news from it
            return None

    def _applied(self, key: str, merged: str) -> bool:
        status = self._resource_status(key)
        revision = status.last_applied.revision if status and status.last_applied else None
        return self._contains(revision, merged) if revision else False


__all__ = ["BRANCH_PREFIX", "REQUEST_REFS", "RequestGit"]
