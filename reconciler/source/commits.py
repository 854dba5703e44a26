"""Approval evidence from Git: the commits of a range, their trailers and signatures.

The Git edge of the approval gate (`reconciler.plan.approvals` weighs what this
module reads). Reads the mirror only; verifying a signature runs `ssh-keygen`.

- `commits_between(repo, base, head)`: the commits reachable from `head` and not
  from `base` (`git rev-list base..head`, merge commits and the PR's own commits
  included), newest first. Without a base (or one that is not an ancestor of
  head), the history of `head` up to `limit` commits.
- `gather(repo, wanted)`: the `Evidence` the approval gate asks for
  (`reconciler.plan.approvals.EvidenceWanted`), gathered before it decides, so the
  gate itself stays pure; `last_declared` finds where a removed resource was declared.
- `SignatureVerifier`: SSH signatures (`gpgsig` headers made by
  `git commit -S` with `gpg.format=ssh`) are checked with `ssh-keygen -Y
  find-principals` / `-Y verify` against the trusted allowed_signers, with
  namespace `git`. A signature that is valid but by a key not in the file is
  `untrusted`; OpenPGP and X.509 signatures are `unsupported` (never trusted).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pygit2
from pygit2.enums import SortMode

from reconciler.load.desired import Desired, ResolvedResource
from reconciler.plan.approvals import (
    APPROVED_BY,
    CommitEvidence,
    Evidence,
    EvidenceWanted,
    Range,
    SignatureStatus,
)
from reconciler.source.tree import read_file

SSH_SIGNATURE = b"-----BEGIN SSH SIGNATURE-----"
NAMESPACE = "git"


def commits_between(
    repo: pygit2.Repository, base: str | None, head: str, *, limit: int = 1000
) -> list[pygit2.Commit]:
    """Commits in `base..head`, newest first (see the module docstring)."""
    walker = repo.walk(pygit2.Oid(hex=head), SortMode.TOPOLOGICAL | SortMode.TIME)
    if base and base != head and _is_ancestor(repo, base, head):
        walker.hide(pygit2.Oid(hex=base))
    elif base == head:
        return []
    out: list[pygit2.Commit] = []
    for commit in walker:
        out.append(commit)
        if len(out) >= limit:
            break
    return out


def _is_ancestor(repo: pygit2.Repository, base: str, head: str) -> bool:
    try:
        return repo.descendant_of(pygit2.Oid(hex=head), pygit2.Oid(hex=base))
    except (KeyError, ValueError, pygit2.GitError):
        return False


def trailer_values(message: str, key: str) -> tuple[str, ...]:
    """Values of `key:` trailer lines in a commit message's last paragraph (case-insensitive)."""
    paragraphs = message.strip().split("\n\n")
    if len(paragraphs) < 2:
        return ()
    wanted = key.lower() + ":"
    return tuple(
        line.split(":", 1)[1].strip()
        for line in paragraphs[-1].splitlines()
        if line.lower().startswith(wanted)
    )


def ssh_keygen_available() -> bool:
    return shutil.which("ssh-keygen") is not None


class SignatureVerifier:
    """Checks commit signatures against trusted SSH keys (an allowed_signers text).

    `for_signers` shares one verifier (and its per-commit results) per set of keys,
    so a commit's signature is checked once, not once per cycle.
    """

    def __init__(self, allowed_signers: str) -> None:
        self.allowed_signers = allowed_signers
        self._cache: dict[str, tuple[SignatureStatus, str | None]] = {}

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def for_signers(allowed_signers: str) -> SignatureVerifier:
        return SignatureVerifier(allowed_signers)

    def check(self, commit: pygit2.Commit) -> tuple[SignatureStatus, str | None]:
        sha = str(commit.id)
        if sha not in self._cache:
            self._cache[sha] = self._check(commit)
        return self._cache[sha]

    def _check(self, commit: pygit2.Commit) -> tuple[SignatureStatus, str | None]:
        signature, data = commit.gpg_signature
        if not signature or data is None:
            return "none", None
        if not signature.lstrip().startswith(SSH_SIGNATURE):
            return "unsupported", None
        if not ssh_keygen_available():
            return "unsupported", None
        with tempfile.TemporaryDirectory(prefix="reconciler-sig-") as tmp:
            sig_path = Path(tmp) / "commit.sig"
            sig_path.write_bytes(signature)
            allowed = Path(tmp) / "allowed_signers"
            allowed.write_text(self.allowed_signers, encoding="utf-8")
            found = _ssh_keygen(
                ["-Y", "find-principals", "-s", str(sig_path), "-f", str(allowed)], None
            )
            principals = found.stdout.decode().split() if found.returncode == 0 else []
            for principal in principals:
                verified = _ssh_keygen(
                    [
                        "-Y",
                        "verify",
                        "-f",
                        str(allowed),
                        "-I",
                        principal,
                        "-n",
                        NAMESPACE,
                        "-s",
                        str(sig_path),
                    ],
                    data,
                )
                if verified.returncode == 0:
                    return "good", principal
            valid = _ssh_keygen(
                ["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig_path)], data
            )
            return ("untrusted" if valid.returncode == 0 else "bad"), None


def _ssh_keygen(args: list[str], data: bytes | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ssh-keygen", *args],
        input=data if data is not None else b"",
        capture_output=True,
        timeout=30,
        check=False,
    )


def evidence(commit: pygit2.Commit, verifier: SignatureVerifier | None) -> CommitEvidence:
    status, signer = verifier.check(commit) if verifier is not None else ("none", None)
    if verifier is None and commit.gpg_signature[0]:
        status = "untrusted"  # signed, but no trusted key is configured
    return CommitEvidence(
        sha=str(commit.id),
        author=f"{commit.author.name} <{commit.author.email}>",
        approved_by=trailer_values(commit.message, APPROVED_BY),
        signature=status,
        signer=signer,
    )


def allowed_signers(
    refs: Iterable[str], repo: pygit2.Repository, revision: str | None
) -> tuple[str, list[str]]:
    """The allowed_signers text of the trusted-signer references, and what could not be read.

    `repo:PATH` is read from the declared repository at `revision` (the rules in
    force), `file:PATH` from the controller's disk, `env:NAME` from its environment.
    """
    texts: list[str] = []
    missing: list[str] = []
    for ref in refs:
        scheme, _, where = ref.partition(":")
        text: str | None = None
        if scheme == "repo" and revision is not None:
            data = read_file(repo, revision, where)
            text = data.decode("utf-8", "replace") if data is not None else None
        elif scheme == "file":
            path = Path(where).expanduser()
            text = path.read_text(encoding="utf-8") if path.is_file() else None
        elif scheme == "env":
            text = os.environ.get(where)
        if text is None:
            missing.append(ref)
        else:
            texts.append(text.rstrip("\n") + "\n")
    return "".join(texts), missing


def gather(repo: pygit2.Repository, wanted: EvidenceWanted) -> Evidence:
    """The evidence of each wanted range, signatures verified against the trusted signers."""
    verifier: SignatureVerifier | None = None
    missing: list[str] = []
    if wanted.signers:
        text, missing = allowed_signers(wanted.signers, repo, wanted.signers_at)
        verifier = SignatureVerifier.for_signers(text) if text.strip() else None
    walked: dict[str | None, list[pygit2.Commit]] = {}
    seen: dict[pygit2.Oid, CommitEvidence] = {}
    found: dict[Range, tuple[CommitEvidence, ...]] = {}
    for base, path in wanted.ranges:
        if base not in walked:
            walked[base] = commits_between(repo, base, wanted.head)
        in_range = since_change(repo, walked[base], path)
        for commit in in_range:
            if commit.id not in seen:
                seen[commit.id] = evidence(commit, verifier)
        found[(base, path)] = tuple(seen[c.id] for c in in_range)
    merged: tuple[str, ...] = ()
    if wanted.merged:
        merged = tuple(str(c.id) for c in commits_between(repo, wanted.merged_since, wanted.head))
    return Evidence(commits=found, missing_signers=tuple(missing), merged=merged)


def range_evidence(
    repo: pygit2.Repository, base: str | None, head: str, path: str | None, allowed: str
) -> tuple[CommitEvidence, ...]:
    """The evidence of one range, signatures verified against an allowed_signers text."""
    verifier = SignatureVerifier.for_signers(allowed) if allowed.strip() else None
    in_range = since_change(repo, commits_between(repo, base, head), path)
    return tuple(evidence(c, verifier) for c in in_range)


def last_declared(
    repo: pygit2.Repository | None,
    key: str,
    start: str | None,
    load: Callable[[str], Desired | None],
    *,
    limit: int = 20,
) -> tuple[str, ResolvedResource] | None:
    """The newest revision (first parents from `start`, at most `limit`) still declaring `key`."""
    if start is None or repo is None:
        return None
    try:
        commit: pygit2.Commit | None = repo[start].peel(pygit2.Commit)
    except (KeyError, ValueError, AttributeError, pygit2.GitError):
        return None
    for _ in range(limit):
        if commit is None:
            return None
        loaded = load(str(commit.id))
        if loaded is not None and key in loaded.resources:
            return str(commit.id), loaded.resources[key]
        commit = commit.parents[0] if commit.parents else None
    return None


def _changes(commit: pygit2.Commit, path: str) -> bool:
    def blob(tree: pygit2.Tree) -> pygit2.Oid | None:
        try:
            return tree[path].id
        except KeyError:
            return None

    before = blob(commit.parents[0].tree) if commit.parents else None
    return blob(commit.tree) != before


def since_change(
    repo: pygit2.Repository, commits: list[pygit2.Commit], path: str | None
) -> list[pygit2.Commit]:
    """The commits (newest first) from the first one in range that changed `path` on.

    An approval counts only when given with the change or after it, so an old
    `Approved-by` in the same range does not approve a later change. Without a
    change in range (drift correction, a resource never applied) the whole range counts.
    """
    if path is None:
        return commits
    changed = [c for c in commits if _changes(c, path)]
    if not changed:
        return commits
    first = changed[-1].id
    return [c for c in commits if c.id == first or repo.descendant_of(c.id, first)]
