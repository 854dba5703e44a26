"""Provenance: who asked for a resource's change, who merged it, who approved it. Pure.

Between the Git edge that walks the history (`reconciler.source.history`: which
commit last changed each document, which merge brought it in, the evidence of
the commits since) and the audit records (`reconciler.report.transitions.audit_records`).

- The documents a resource *resolves from*: its own, its pipeline and every
  pipeline that one includes, each stage it runs, its profiles and the `global`
  profile (`documents_of`). A change to any of them is a change to the resource.
- *Asked by* is the author of the newest commit that changed one of them; the
  *committer* is whoever merged that commit into the tracked branch (the merge
  commit's author) or, for a commit pushed directly, its committer.
- Every `Approved-by` trailer of the commits that speak for that change (the
  change itself, the merge that brought it in, and later commits that change no
  document: approvals given afterwards) is recorded, whether or not a Policy
  asks for approvals, as `verified` — the approver is a reviewer the rules in
  force list for the resource, and the commit is signed by a trusted key when
  the rules require signatures — or as `claimed`. A commit signed by a trusted
  key whose principal is a listed reviewer is that reviewer's approval
  (`via: signature`). Approvals the gate counted are verified whatever the walk saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.load.desired import GLOBAL_PROFILE, Desired, ResolvedResource
from reconciler.model.kinds import Approvals
from reconciler.plan.approvals import CommitEvidence, Subject, email_of, reviewers_for

DocumentKey = tuple[str, str]
"""(kind, name) of a declared document."""

ApprovalStatus = Literal["verified", "claimed"]


@dataclass(frozen=True)
class Approval:
    """One approval of a resource's change, as the audit records it."""

    name: str
    commit: str | None
    status: ApprovalStatus
    via: Literal["trailer", "signature"] = "trailer"

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "status": self.status, "via": self.via}
        if self.commit:
            data["commit"] = self.commit
        return data

    @classmethod
    def from_data(cls, data: Any) -> Approval:
        """An audit line's approval; a bare name (records before approvals had a status)
        is one the gate counted."""
        if isinstance(data, str):
            return cls(name=data, commit=None, status="verified")
        status = data.get("status")
        via = data.get("via")
        return cls(
            name=str(data.get("name", "")),
            commit=data.get("commit"),
            status=status if status in ("verified", "claimed") else "claimed",
            via=via if via in ("trailer", "signature") else "trailer",
        )


@dataclass(frozen=True)
class Origin:
    """What the history says about one resource's change (gathered from Git)."""

    commit: str | None = None
    """The newest commit that changed a document the resource resolves from."""
    author: str | None = None
    committer: str | None = None
    """Who merged it in (the merge commit's author), else who committed it."""
    merge: str | None = None
    """The merge commit that brought `commit` into the tracked branch, if any."""
    evidence: tuple[CommitEvidence, ...] = ()
    """The commits that speak for the change (see the module docstring), newest first."""


@dataclass(frozen=True)
class Provenance:
    """Who asked for, merged and approved the change an action brought about."""

    author: str | None = None
    commit: str | None = None
    committer: str | None = None
    merge: str | None = None
    approvals: tuple[Approval, ...] = field(default_factory=tuple)

    @property
    def approvers(self) -> tuple[str, ...]:
        """The verified approvers' names, each once."""
        return tuple(dict.fromkeys(a.name for a in self.approvals if a.status == "verified"))


def documents_of(desired: Desired | None, resource: ResolvedResource) -> frozenset[DocumentKey]:
    """The documents `resource` resolves from (see the module docstring)."""
    keys: set[DocumentKey] = {(resource.kind, resource.name)}
    pipelines = desired.pipelines if desired is not None else {}
    pending = [resource.pipeline]
    while pending:  # the pipeline and what it includes, each once
        name = pending.pop()
        if ("Pipeline", name) in keys:
            continue
        keys.add(("Pipeline", name))
        found = pipelines.get(name)
        if found is not None:
            pending.extend(s.include for s in found.spec.steps if s.include)
    keys.update(("Stage", stage.name) for stage in resource.stages)
    keys.update(("Profile", name) for name in resource.document.spec.profiles)
    if desired is None or GLOBAL_PROFILE in desired.profiles:
        keys.add(("Profile", GLOBAL_PROFILE))
    return frozenset(keys)


def _counted(counted: Iterable[str]) -> list[tuple[str, str | None]]:
    """The gate's `Name <email> (commit abc123)` strings as (name, short commit)."""
    out: list[tuple[str, str | None]] = []
    for entry in counted:
        name, sep, rest = entry.rpartition(" (commit ")
        out.append((name, rest.rstrip(")")) if sep else (entry, None))
    return out


def weigh(
    origin: Origin,
    *,
    rules: Approvals,
    subject: Subject,
    counted: Sequence[str] = (),
) -> Provenance:
    """The audit's view of one resource's change: `origin` with every approval judged.

    `counted` are the approvals the gate counted for it (`Decision.approvers`).
    """
    listed = {email_of(n): n for n in reviewers_for(rules, subject)}
    approvals: dict[tuple[str, str | None], Approval] = {}
    for commit in origin.evidence:
        trusted = commit.signature == "good"
        signed_ok = trusted or not rules.require_signature
        for said in commit.approved_by:
            email = email_of(said)
            verified = email in listed and signed_ok
            approvals.setdefault(
                (email, commit.sha),
                Approval(
                    name=listed.get(email, said) if verified else said,
                    commit=commit.sha,
                    status="verified" if verified else "claimed",
                ),
            )
        if trusted and commit.signer and email_of(commit.signer) in listed:
            email = email_of(commit.signer)
            approvals[(email, commit.sha)] = Approval(
                listed[email], commit.sha, "verified", via="signature"
            )
    for name, short in _counted(counted):
        email = email_of(name)
        same = [
            k for k in approvals if k[0] == email and (short is None or (k[1] or "")[:12] == short)
        ]
        for key in same:
            approvals[key] = Approval(name, approvals[key].commit, "verified", approvals[key].via)
        if not same:
            approvals[(email, short)] = Approval(name, short, "verified")
    return Provenance(
        author=origin.author,
        commit=origin.commit,
        committer=origin.committer,
        merge=origin.merge,
        approvals=tuple(approvals.values()),
    )


def subject_of(key: str, resource: ResolvedResource | None) -> Subject:
    """What reviewers are listed by: the declaring file and the labels (none for a
    resource no longer declared)."""
    if resource is None:
        return Subject(key=key, path=None)
    return Subject(key=key, path=resource.path, labels=dict(resource.labels))


def provenance_by_key(
    origins: Mapping[str, Origin],
    desired: Desired | None,
    *,
    rules: Approvals,
    counted: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Provenance]:
    """`weigh` for each resource the history was asked about."""
    resources = desired.resources if desired is not None else {}
    return {
        key: weigh(
            origin,
            rules=rules,
            subject=subject_of(key, resources.get(key)),
            counted=(counted or {}).get(key, ()),
        )
        for key, origin in origins.items()
    }


__all__ = [
    "Approval",
    "DocumentKey",
    "Origin",
    "Provenance",
    "documents_of",
    "provenance_by_key",
    "subject_of",
    "weigh",
]
