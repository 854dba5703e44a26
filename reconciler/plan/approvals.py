"""Approval gates: which gated actions of a plan are approved, and who is still needed.

Pure, between diff and plan (the plan step takes the decision: `approved` keys
run, `pending` keys are blocked with the reason). Git I/O — walking commits,
reading trailers, verifying signatures — lives in `reconciler.source.commits`;
this module only weighs the evidence it gathered against `Policy.approvals`.

- An action is *gated* when approvals are required and it would run something
  (create, update, decommission) that is destructive or touches a protected resource.
- A gated action is approved when a commit in its range carries
  `Approved-by: Name <email>` from a reviewer listed for the resource, or is
  signed by a trusted key whose principal is such a reviewer. Identities match
  by e-mail address, case-insensitively. The range (chosen by `reconciler.plan.gates`)
  runs from the resource's last applied revision to the head, merge commits
  included, starting at the first commit in it that changed the resource's
  file: an approval counts only when given with the change or after it.
- With `requireSignature`, only commits signed by a trusted key count (their
  signer and their `Approved-by` trailers); an unsigned commit, or one signed
  by an unknown key, is refused and the plan says so.
- With `pinPlan`, a destructive action runs only if a reviewed plan showed it:
  the plan file of a branch whose head was merged (`Reviewed`); otherwise it is
  held and the plan names what reviewers saw instead (`pin`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from reconciler.model.kinds import Approvals, PolicySpec, Reviewer

SignatureStatus = Literal["none", "good", "untrusted", "bad", "unsupported"]
"""good: valid and by a trusted key; untrusted: valid but by a key not trusted;
bad: does not verify; unsupported: a signature format we cannot check (OpenPGP)."""

APPROVED_BY = "Approved-by"


@dataclass(frozen=True)
class CommitEvidence:
    """What one commit says about approval: its trailers and its signature."""

    sha: str
    author: str
    approved_by: tuple[str, ...] = ()
    signature: SignatureStatus = "none"
    signer: str | None = None
    """The principal of a good signature (an allowed_signers identity, usually an e-mail)."""


Range = tuple[str | None, str | None]
"""(base revision, path): the commits of `base..head` from the first one changing `path`
(the whole range without a path, or when nothing in it changed the path)."""


@dataclass(frozen=True)
class EvidenceWanted:
    """What the gate asks of Git history (pure, from the draft plan); `source.commits.gather`
    answers it with an `Evidence` before the gate decides."""

    head: str
    ranges: tuple[Range, ...] = ()
    signers: tuple[str, ...] = ()
    """Trusted-signer references (`repo:`, `file:`, `env:`) that verify the signatures."""
    signers_at: str | None = None
    """The revision `repo:` signer references are read at (the rules in force)."""
    merged_since: str | None = None
    merged: bool = False
    """Also list the commits of `merged_since..head` (for `pinPlan`)."""


@dataclass(frozen=True)
class Evidence:
    """Approval evidence gathered from Git as values: the gate does no Git of its own."""

    commits: Mapping[Range, tuple[CommitEvidence, ...]] = field(default_factory=dict)
    """Each wanted range's commits (newest first)."""
    missing_signers: tuple[str, ...] = ()
    """Trusted-signer references that could not be read."""
    merged: tuple[str, ...] = ()
    """The commits of `merged_since..head`, when wanted."""


@dataclass(frozen=True)
class Subject:
    """What a gated action touches: for reviewer matching."""

    key: str
    path: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    protected: bool = False


@dataclass(frozen=True)
class Decision:
    """The gate's verdict for one plan."""

    approved: frozenset[str] = frozenset()
    pending: Mapping[str, str] = field(default_factory=dict)
    """Gated keys without approval -> `needs approval from …` (the plan's blocked reason)."""
    approvers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Approved keys -> the reviewers whose approval counted, with the commit."""


def email_of(identity: str) -> str:
    """`Name <email>` (or a bare address) -> the lower-cased e-mail address."""
    found = re.search(r"<([^<>]+)>", identity)
    return (found.group(1) if found else identity).strip().lower()


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def path_matches(pattern: str, path: str) -> bool:
    """A glob on a repository path: `*` and `?` within a folder, `**` across folders."""
    return bool(_glob(pattern.lstrip("/")).fullmatch(path))


def reviewer_covers(reviewer: Reviewer, subject: Subject) -> bool:
    if reviewer.paths and not (
        subject.path and any(path_matches(p, subject.path) for p in reviewer.paths)
    ):
        return False
    return all(subject.labels.get(k) == v for k, v in reviewer.labels.items())


def reviewers_for(rules: Approvals, subject: Subject) -> list[str]:
    """The reviewers listed for a resource (`Name <email>`), in policy order, no repeats."""
    names: list[str] = []
    for reviewer in rules.reviewers:
        if reviewer_covers(reviewer, subject):
            names.extend(n for n in reviewer.names if n not in names)
    return names


def is_gated(rules: Approvals, *, executes: bool, destructive: bool, protected: bool) -> bool:
    return rules.required and executes and (destructive or protected)


def _approvals_in(
    commits: Sequence[CommitEvidence], wanted: Mapping[str, str], require_signature: bool
) -> tuple[list[str], list[str]]:
    """(approvals that count as `Name <email> (commit)`, refusals with why)."""
    counted: list[str] = []
    refused: list[str] = []
    for commit in commits:
        short = commit.sha[:12]
        trusted = commit.signature == "good"
        said = [email_of(v) for v in commit.approved_by]
        if trusted and commit.signer:
            said.append(email_of(commit.signer))
        for email in dict.fromkeys(said):
            if email not in wanted:
                continue
            if require_signature and not trusted:
                why = {
                    "none": "it is not signed",
                    "untrusted": "it is signed by an untrusted key",
                    "bad": "its signature does not verify",
                    "unsupported": "its signature cannot be checked (only SSH signatures are)",
                }.get(commit.signature, "it is not signed by a trusted key")
                refused.append(f"approval by {wanted[email]} in commit {short} refused: {why}")
                continue
            counted.append(f"{wanted[email]} (commit {short})")
    return counted, refused


def decide(
    subjects: Iterable[tuple[Subject, bool, bool]],
    rules: Approvals,
    commits: Mapping[str, Sequence[CommitEvidence]],
) -> Decision:
    """Weigh each action's evidence.

    `subjects` yields (subject, executes, destructive) per planned action;
    `commits` gives the commits in each key's range (newest first).
    """
    approved: set[str] = set()
    pending: dict[str, str] = {}
    approvers: dict[str, tuple[str, ...]] = {}
    for subject, executes, destructive in subjects:
        if not is_gated(
            rules, executes=executes, destructive=destructive, protected=subject.protected
        ):
            continue
        names = reviewers_for(rules, subject)
        why = "destructive" if destructive else "protected"
        if not names:
            pending[subject.key] = (
                f"needs approval ({why}), but policy approvals.reviewers lists nobody for "
                f"{subject.key}"
            )
            continue
        wanted = {email_of(n): n for n in names}
        counted, refused = _approvals_in(
            commits.get(subject.key, ()), wanted, rules.require_signature
        )
        if counted:
            approved.add(subject.key)
            approvers[subject.key] = tuple(dict.fromkeys(counted))
            continue
        how = "Approved-by trailer"
        if rules.require_signature:
            how += " in a commit signed by a trusted key"
        reason = f"needs approval from {' or '.join(names)} ({why}; {how})"
        if refused:
            reason += "; " + "; ".join(dict.fromkeys(refused))
        pending[subject.key] = reason
    return Decision(approved=frozenset(approved), pending=pending, approvers=approvers)


def approver_names(decision: Decision, key: str) -> tuple[str, ...]:
    """`Name <email>` of each approver of `key` (without the commit)."""
    return tuple(
        dict.fromkeys(a.rsplit(" (commit ", 1)[0] for a in decision.approvers.get(key, ()))
    )


@dataclass(frozen=True)
class Reviewed:
    """A pull request plan as recorded for reviewers (`plans/<branch>.md`)."""

    branch: str
    head: str
    plan_hash: str
    destructive: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    """(key, operation, stages) of each destructive action it showed."""


def pin(
    actions: Iterable[tuple[str, str, tuple[str, ...]]], reviewed: Sequence[Reviewed]
) -> dict[str, str]:
    """Destructive actions (key, operation, stages) no reviewed plan showed -> why held."""
    held: dict[str, str] = {}
    seen = {entry for r in reviewed for entry in r.destructive}
    for key, operation, stages in actions:
        if (key, operation, stages) in seen:
            continue
        shown = [
            f"{r.branch} (plan {r.plan_hash[:12]}) showed "
            + (
                ", ".join(
                    f"{op} {' → '.join(st)}".strip() for k, op, st in r.destructive if k == key
                )
                or "nothing destructive for it"
            )
            for r in reviewed
        ]
        if shown:
            held[key] = f"held: {operation} differs from the reviewed plan; " + "; ".join(shown)
        else:
            held[key] = f"held: no reviewed plan of a merged branch shows this {operation}"
    return held


RULE_FIELDS: dict[str, Callable[[PolicySpec], object]] = {
    "approvals.required": lambda p: p.approvals.required,
    "approvals.reviewers": lambda p: [r.model_dump() for r in p.approvals.reviewers],
    "approvals.trustedSigners": lambda p: list(p.approvals.trusted_signers),
    "approvals.requireSignature": lambda p: p.approvals.require_signature,
    "approvals.pinPlan": lambda p: p.approvals.pin_plan,
    "protected": lambda p: [s.model_dump() for s in p.protected],
}
"""The parts of a Policy that decide who must approve what: changing them is gated too."""


def rule_changes(old: PolicySpec, new: PolicySpec) -> tuple[str, ...]:
    """Which of the approval rules differ between two policies (`RULE_FIELDS` names)."""
    return tuple(name for name, part in RULE_FIELDS.items() if part(old) != part(new))
