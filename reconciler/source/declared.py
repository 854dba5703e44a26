"""The declared state in force: fetch, resolve, load incrementally, keep the last good revision.

The source step of each cycle, ahead of diff and plan. `DeclaredSource.poll()`
fetches the mirror, resolves the tracked branch (or pin) and returns a
`SourceResult`: the revision in force and its `LoadResult`, plus what happened
on the way. The rules:

- A revision that fails validation is not taken: the last good revision stays
  in force, `stale` says why (`ValidationFailed`) and `diagnostics` say where.
- A remote that is down (`RemoteUnavailable`) or refuses us (`RemoteRefused`:
  authentication, host key) leaves the last good revision in force;
  `retry_after` suggests when to poll again (exponential backoff with jitter for
  a temporary failure, the backoff cap for a permanent one: no crash loop).
- A head that is not a descendant of the last reconciled revision (or, before
  the first reconcile, the last good one) was force-pushed: `force_pushed` is
  set. Policy "follow" (default) takes the new head as the declared state;
  "refuse" keeps the last good revision (`ForcePushRefused`) until an operator
  switches the policy or resets the state directory.
- A new head whose declared files (path and blob id) equal those in force, such
  as the controller's own status commits on the tracked branch, leaves the revision
  in force as it is (the last commit that changed declared files): no reload, no
  new revision, so an idle controller writing status there makes no new commits.

The last good and last reconciled SHAs are kept as refs in the mirror
(`refs/reconciler/last-good`, `refs/reconciler/last-reconciled`): they survive a
restart, and they keep those commits' objects in the mirror after a force-push.
After a restart the last good revision is loaded from the mirror, so it is in
force even while the remote is down.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2

from reconciler.errors import Diagnostic, PermanentError, ReconcilerError, TemporaryError
from reconciler.load import load
from reconciler.load.load import LoadResult
from reconciler.load.resolved_checks import ObservedFields
from reconciler.providers import observed_fields as provider_observed_fields
from reconciler.source.backoff import Backoff
from reconciler.source.identity import bind_state_dir, check_local_repository, owner_identity
from reconciler.source.mirror import GitAccess, Mirror, Revision
from reconciler.source.tree import (
    AssembleFn,
    LoadedRevision,
    ParseCache,
    ParseFn,
    TreeLister,
    declared_files,
    load_revision,
    read_file,
)
from reconciler.source.writeback import is_own_commit

if TYPE_CHECKING:
    from reconciler.settings import Settings

LAST_GOOD_REF = "refs/reconciler/last-good"
LAST_RECONCILED_REF = "refs/reconciler/last-reconciled"

# Reasons in `Stale.reason`, CamelCase like condition reasons.
REMOTE_UNAVAILABLE = "RemoteUnavailable"
REMOTE_REFUSED = "RemoteRefused"
REVISION_NOT_FOUND = "RevisionNotFound"
VALIDATION_FAILED = "ValidationFailed"
FORCE_PUSH_REFUSED = "ForcePushRefused"


@dataclass(frozen=True)
class Stale:
    """Why the revision in force is not the remote's head: a condition reason and message."""

    reason: str
    message: str


@dataclass(frozen=True)
class SourceResult:
    """One poll of the declared repository."""

    revision: Revision | None
    """The revision in force (the last good one); None until one has loaded."""
    load: LoadResult | None
    """Its load result (always ok), None when nothing is in force."""
    head: Revision | None
    """The remote's head as last fetched (may be the rejected one), None if unresolved."""
    declared_changed: bool = False
    """The declared state in force differs from the previous poll's."""
    changed_paths: frozenset[str] = frozenset()
    """Declared files added, removed or modified by this change of revision."""
    force_pushed: bool = False
    stale: Stale | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    """Why the head was rejected, when `stale.reason` is ValidationFailed."""
    retry_after: float | None = None
    """Seconds to wait before polling again, after a failed fetch."""

    @property
    def ready(self) -> bool:
        return self.load is not None and self.load.ok


class DeclaredSource:
    """The tracked branch (or pin) of the declared repository, polled once per cycle."""

    def __init__(
        self,
        mirror: Mirror,
        *,
        branch: str = "main",
        ref: str | None = None,
        force_push_policy: str = "follow",
        parse: ParseFn = load.parse_file,
        assemble: AssembleFn | None = None,
        backoff: Backoff = Backoff(),
        observed_fields: ObservedFields | None = None,
    ) -> None:
        if force_push_policy not in ("follow", "refuse"):
            raise ValueError("force_push_policy is 'follow' or 'refuse'")
        self.mirror = mirror
        self.branch = branch
        self.ref = ref
        self.force_push_policy = force_push_policy
        self.backoff = backoff
        self.cache = ParseCache(parse)
        # Unchanged resources keep their checks and resolution from the last revision.
        self.assembly = load.AssembleCache()
        self._assemble = assemble or functools.partial(
            load.assemble, cache=self.assembly, observed_fields=observed_fields
        )
        self.assemble_other: AssembleFn = functools.partial(
            load.assemble, observed_fields=observed_fields
        )
        """Assembles a revision other than the tracked head (no assembly cache), checked
        the same way."""
        self._lister: TreeLister | None = None
        self._good: LoadedRevision | None = None
        self._rejected: LoadedRevision | None = None
        self._failures = 0
        self.fetch_seconds = 0.0
        """How long the last poll's fetch took (the cycle's fetch phase)."""
        self._restored = False
        self.own_email: str | None = None
        """The e-mail of the controller's own commits (status on the tracked branch)."""
        self.owner = owner_identity(mirror.access.url, branch)
        """Who this controller is on everything it owns (see `reconciler.source.identity`)."""

    @classmethod
    def from_settings(
        cls, settings: Settings, *, writing: bool = False, **kwargs: object
    ) -> DeclaredSource:
        """The declared repository of `settings`, its state directory bound to its owner.

        `writing`: the caller pushes status (apply, run): the repository must be bare.
        A state directory of another owner, a local path that does not exist and (when
        writing) a working copy are refused here, before anything runs.
        """
        assert settings.repo is not None
        check_local_repository(settings.repo, writing=writing)
        access = GitAccess.from_settings(settings)
        owner = owner_identity(settings.repo, settings.branch, settings.owner)
        bind_state_dir(Path(settings.state_dir), owner, access.display_url)
        kwargs.setdefault("observed_fields", provider_observed_fields)
        source = cls(
            Mirror.in_state_dir(Path(settings.state_dir), access),
            branch=settings.branch,
            ref=settings.ref,
            force_push_policy=settings.force_push_policy,
            **kwargs,  # type: ignore[arg-type]
        )
        source.owner = owner
        source.own_email = settings.git_author_email
        return source

    @property
    def repo(self) -> pygit2.Repository:
        return self.mirror.repo

    @property
    def lister(self) -> TreeLister:
        if self._lister is None:
            self._lister = TreeLister(self.repo)
        return self._lister

    @property
    def parse_calls(self) -> int:
        """How many files have been parsed (not served from the cache) so far."""
        return self.cache.parse_calls

    @property
    def last_good(self) -> Revision | None:
        self._restore()
        return self.mirror.revision(self._good.sha) if self._good else None

    @property
    def last_reconciled(self) -> str | None:
        return self._get_ref(LAST_RECONCILED_REF)

    def keep_revision(self, name: str, sha: str) -> None:
        """Hold `sha`'s objects in the mirror under `refs/reconciler/<name>` (a fetch with
        prune and a force-push would otherwise let them go)."""
        self._set_ref(f"refs/reconciler/{name}", sha)

    def mark_reconciled(self, sha: str) -> None:
        """Record that a cycle acted on `sha`: the base for force-push detection."""
        self._set_ref(LAST_RECONCILED_REF, sha)

    def read_file(self, path: str) -> bytes | None:
        """A file of the revision in force (e.g. for a diagnostic's context)."""
        self._restore()
        return read_file(self.repo, self._good.sha, path) if self._good else None

    # --- one poll --------------------------------------------------------------

    def poll(self, *, fetch: bool = True) -> SourceResult:
        """Fetch (unless `fetch` is False), resolve the head, load it if it changed."""
        self._restore()
        self.fetch_seconds = 0.0
        if fetch and (failed := self._fetch()) is not None:
            return failed
        try:
            head_commit = self.mirror.commit_for(self.branch, self.ref)
        except PermanentError as exc:
            return self._stale(None, REVISION_NOT_FOUND, str(exc))
        head = Revision.of(head_commit)
        good = self._good
        if good is not None and head.sha == good.sha:
            return self._in_force(head)
        force_pushed = self._is_force_push(head.sha)
        if force_pushed and self.force_push_policy == "refuse":
            return self._refuse_force_push(head)
        files = declared_files(self.lister.files(head.sha), self.repo)
        if good is not None and files == good.files:
            return self._same_declared_files(head, good, force_pushed=force_pushed)
        loaded = self._load_head(head, files)
        if not loaded.result.ok:
            return self._reject(head, loaded, force_pushed=force_pushed)
        return self._take(head, loaded, force_pushed=force_pushed)

    # --- the steps of a poll ---------------------------------------------------

    def _fetch(self) -> SourceResult | None:
        """Fetch the mirror, timed (the cycle's fetch phase): None when it worked, else
        the last good revision kept in force with why and when to retry."""
        began = time.monotonic()
        try:
            self.mirror.fetch()
        except ReconcilerError as exc:
            return self._fetch_failed(exc)
        finally:
            self.fetch_seconds = time.monotonic() - began
        self._failures = 0
        return None

    def _refuse_force_push(self, head: Revision) -> SourceResult:
        """Policy "refuse": a rewritten head is not taken."""
        return self._stale(
            head,
            FORCE_PUSH_REFUSED,
            f"{self._what()} was rewritten: {head.short} does not descend from "
            f"{(self._force_push_base() or '?')[:12]}; "
            "force_push_policy is 'refuse'",
            force_pushed=True,
        )

    def _same_declared_files(
        self, head: Revision, good: LoadedRevision, *, force_pushed: bool
    ) -> SourceResult:
        """A new head whose declared files are those in force: nothing is reloaded."""
        if not force_pushed and self._only_own_commits(good.sha, head.sha):
            # The controller's own status commits on the tracked branch are never a
            # declared revision: the one in force stays, so it never feeds on itself.
            return self._in_force(head)
        # A person's commit that changes no declared file (an approval trailer, a
        # README) is the revision in force: its evidence counts.
        self._accept(LoadedRevision(head.sha, good.files, good.result))
        return replace(self._in_force(head), force_pushed=force_pushed)

    def _load_head(self, head: Revision, files: Mapping[str, pygit2.Oid]) -> LoadedRevision:
        """The head loaded (unchanged files from the cache), or the load that rejected it
        last poll: a head already found invalid is not loaded again."""
        if self._rejected is not None and self._rejected.sha == head.sha:
            return self._rejected
        return load_revision(
            self.repo,
            head.sha,
            lister=self.lister,
            cache=self.cache,
            assemble=self._assemble,
            files=files,
        )

    def _reject(
        self, head: Revision, loaded: LoadedRevision, *, force_pushed: bool
    ) -> SourceResult:
        """An invalid head: remembered as rejected, the last good revision kept in force."""
        good = self._good
        self._rejected = loaded
        self.cache.prune([good.files, loaded.files] if good else [loaded.files])
        count = len(loaded.result.diagnostics)
        return self._stale(
            head,
            VALIDATION_FAILED,
            f"revision {head.short} is invalid ({count} error{'s' * (count != 1)})",
            force_pushed=force_pushed,
            diagnostics=loaded.result.diagnostics,
        )

    def _take(self, head: Revision, loaded: LoadedRevision, *, force_pushed: bool) -> SourceResult:
        """A valid new head: the revision in force from now on, with the files it changed."""
        old_files = self._good.files if self._good else {}
        changed = frozenset(
            p for p in set(old_files) | set(loaded.files) if old_files.get(p) != loaded.files.get(p)
        )
        self._accept(loaded)
        self.cache.prune([loaded.files])
        self.lister.prune([loaded.sha])
        return SourceResult(
            revision=head,
            load=loaded.result,
            head=head,
            declared_changed=True,
            changed_paths=changed,
            force_pushed=force_pushed,
        )

    # --- helpers ---------------------------------------------------------------

    def _only_own_commits(self, base: str, head: str) -> bool:
        """Whether every commit in base..head is the controller's own status commit."""
        if self.own_email is None:
            return False
        walker = self.repo.walk(pygit2.Oid(hex=head))
        walker.hide(pygit2.Oid(hex=base))
        commits = list(walker)
        return bool(commits) and all(is_own_commit(self.repo, c, self.own_email) for c in commits)

    def _what(self) -> str:
        return f"ref {self.ref!r}" if self.ref else f"branch {self.branch!r}"

    def _force_push_base(self) -> str | None:
        return self.last_reconciled or (self._good.sha if self._good else None)

    def _is_force_push(self, head: str) -> bool:
        base = self._force_push_base()
        if base is None or base == head:
            return False
        try:
            return not self.repo.descendant_of(head, base)
        except (KeyError, ValueError, pygit2.GitError):
            return True  # the base's objects are gone: history was rewritten

    def _accept(self, loaded: LoadedRevision) -> None:
        self._good = loaded
        self._rejected = None
        self._set_ref(LAST_GOOD_REF, loaded.sha)

    def _in_force(self, head: Revision | None) -> SourceResult:
        good = self._good
        revision = self.mirror.revision(good.sha) if good else None
        return SourceResult(
            revision=revision, load=good.result if good else None, head=head or revision
        )

    def _stale(
        self,
        head: Revision | None,
        reason: str,
        message: str,
        *,
        force_pushed: bool = False,
        diagnostics: tuple[Diagnostic, ...] = (),
        retry_after: float | None = None,
    ) -> SourceResult:
        good = self._good
        keeping = (
            f"; keeping last good revision {good.sha[:12]}" if good else "; no revision in force"
        )
        return replace(
            self._in_force(head),
            head=head,
            force_pushed=force_pushed,
            stale=Stale(reason, message + keeping),
            diagnostics=diagnostics,
            retry_after=retry_after,
        )

    def _fetch_failed(self, exc: ReconcilerError) -> SourceResult:
        self._failures += 1
        if isinstance(exc, TemporaryError):
            reason = REMOTE_UNAVAILABLE
            retry_after = (
                exc.retry_after
                if exc.retry_after is not None
                else self.backoff.delay(self._failures)
            )
        else:
            reason, retry_after = REMOTE_REFUSED, self.backoff.cap
        return self._stale(None, reason, str(exc), retry_after=retry_after)

    def _restore(self) -> None:
        """After a restart: put the last good revision recorded in the mirror back in force."""
        if self._restored:
            return
        self._restored = True
        sha = self._get_ref(LAST_GOOD_REF)
        if sha is None or self._good is not None:
            return
        loaded = load_revision(
            self.repo, sha, lister=self.lister, cache=self.cache, assemble=self._assemble
        )
        if loaded.result.ok:
            self._good = loaded

    def _get_ref(self, name: str) -> str | None:
        if not self.mirror.exists:
            return None
        ref = self.repo.references.get(name)
        return str(ref.target) if ref is not None else None

    def _set_ref(self, name: str, sha: str) -> None:
        self.repo.references.create(name, pygit2.Oid(hex=sha), force=True)
