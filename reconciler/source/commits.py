"""Approval evidence from Git: the commits of a range, their trailers and signatures.

The Git edge of the approval gate (`reconciler.plan.approvals` weighs what this
module reads). Reads the mirror only; verifying a signature runs `ssh-keygen`.

- `commits_between(repo, base, head)`: the commits reachable from `head` and not
  from `base` (`git rev-list base..head`, merge commits and the PR's own commits
  included), newest first. Without a base (or one that is not an ancestor of
  head), the history of `head` up to `limit` commits.
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
from collections.abc import Iterable
from pathlib import Path

import pygit2
from pygit2.enums import SortMode

from reconciler.plan.approvals import APPROVED_BY, CommitEvidence, SignatureStatus
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
