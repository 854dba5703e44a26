"""One revision planned with its approval evidence: the pure gate fed by Git reads.

The edge between `reconciler.source.commits` (history read as values) and the
pure `reconciler.plan.gates`: the controller's cycle, the plans of watched
branches and `reconciler plan` all plan through `plan_revision`, so a reviewer
sees what will be applied. Every Git read happens here, before the gate decides:

    diff  ->  last declarations of removed resources (history: an orphan observed-only
    there is never decommissioned)  ->  draft plan  ->  subjects, the evidence wanted
    ->  `gather` (commits, trailers, signatures)  ->  reviewed plans (`pinPlan`, the
    status branch)  ->  `gates.gate` (pure)  ->  undo labels (the commits a head
    reverts, read from history; `reconciler.plan.undo` labels the plan)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pygit2

from reconciler.controller.branch_plans import reviewed_plans
from reconciler.load.desired import Desired, ResolvedResource
from reconciler.model.kinds import PolicySpec
from reconciler.observe.values import ObservedState
from reconciler.plan import gates
from reconciler.plan.diff import Diff, LastApplied, Status, diff
from reconciler.plan.gates import Gated, RulesHistory, RulesVerdict
from reconciler.plan.management import observe_only
from reconciler.plan.undo import Revert, Reverted, label, reverts
from reconciler.report.provenance import DocumentKey, documents_of
from reconciler.source.commits import allowed_signers, gather, last_declared, range_evidence
from reconciler.source.history import DocumentChanges


@dataclass(frozen=True)
class PlanContext:
    """What the plan of a revision depends on besides the revision and the observation:
    the same for the controller's cycle, the plans of watched branches and
    `reconciler plan`, so a reviewer sees what will be applied."""

    repo: pygit2.Repository | None
    """The mirror, for approval evidence; None: no history to read (nothing gated can be
    approved; a plan of a checkout, or of literal values)."""
    records: Mapping[str, LastApplied] = field(default_factory=dict)
    """What was applied per resource (the journal's records, else the status branch's)."""
    failed: Mapping[str, str] = field(default_factory=dict)
    """Resource -> the stage its last apply failed at (it runs again from there)."""
    rules_from: Desired | None = None
    """The revision whose rules judge the change (the last reconciled one)."""
    reconciled: str | None = None
    load: Callable[[str], Desired | None] = lambda _sha: None
    """The Desired set of a revision (to find where a removed resource was declared)."""
    status_branch: str | None = None
    """Where reviewed plans are read for `pinPlan` (None: not checked)."""
    phases: Mapping[str, str] = field(default_factory=dict)
    """Each resource's phase when last seen: a dependent waits for a dependency that
    is not Ready, also when this plan does not look at it (held in backoff, out of scope)."""
    rules_note: str | None = None
    """Why the head's own changes to the approval rules are not in force (`judge_rules`)."""
    paused: Mapping[str, str] = field(default_factory=dict)
    """Paused rollouts (id -> why): their actions are held back until resumed."""
    history: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    """Per resource, the resolutions it was applied with (`resolution_history` of the
    journal): an action bringing one back is labelled an undo (`reconciler.plan.undo`)."""


def plan_revision(
    context: PlanContext,
    desired: Desired,
    observed: ObservedState,
    *,
    base: str | None = None,
) -> tuple[Diff, Gated]:
    """The diff and the gated plan of `desired` against `observed`: the one planning path.

    Approvals count from each resource's last applied revision (or, for one no longer
    declared, the last revision declaring it) to the head; `base` starts every range
    there instead (a branch's plan: only approvals on the branch count).
    """
    found = diff(desired, observed, last_applied=context.records)
    declared: dict[str, tuple[str, ResolvedResource] | None] = {}

    def before(key: str) -> tuple[str, ResolvedResource] | None:
        if key not in declared and context.repo is not None:
            declared[key] = last_declared(context.repo, key, context.reconciled, context.load)
        return declared.get(key)

    replan = gates.replanner(
        desired,
        found,
        observed,
        failed=context.failed,
        phases=context.phases,
        paused=context.paused,
        observed_orphans=observed_orphans(found, before, context.load),
    )
    gated = _gated(context, desired, found, replan, base)
    if context.rules_note:
        gated = replace(gated, plan=gates.with_notes(gated.plan, context.rules_note))
    found_reverts = reverts(desired, context.records, context.history)
    if found_reverts and context.repo is not None:
        undone = reverted_commits(context.repo, desired, found_reverts, context.load)
        gated = replace(gated, plan=label(gated.plan, desired, found_reverts, undone))
    return found, gated


def _gated(
    context: PlanContext, desired: Desired, found: Diff, replan: gates.Replan, base: str | None
) -> Gated:
    draft = replan()
    rules_from = context.rules_from
    if not gates.gating(desired, rules_from):
        return Gated(draft)
    repo = context.repo
    if repo is None:
        return gates.without_history(draft, replan, desired, found, rules_from)
    bases = {a.key: base or _applied_at(context, a.key) for a in draft.actions}
    declared: dict[str, tuple[str, ResolvedResource] | None] = {
        key: last_declared(repo, key, context.reconciled, context.load)
        for key in gates.undeclared(draft, desired, rules_from, bases)
    }
    weighed = gates.subjects(
        draft, desired, found, rules_from, bases=bases, declared=declared,
        fallback=context.reconciled,
    )  # fmt: skip
    since = context.reconciled
    if since is None and rules_from is not None:
        since = rules_from.revision
    wanted = gates.evidence_wanted(
        desired, rules_from, weighed, merged_since=since, pin=context.status_branch is not None
    )
    evidence = gather(repo, wanted)
    reviewed = None
    if wanted.merged and context.status_branch is not None:
        # Branches merged since the last reconciled revision: what is new to apply.
        reviewed = reviewed_plans(repo, context.status_branch, evidence.merged)
    return gates.gate(
        draft, replan, desired=desired, rules_from=rules_from, weighed=weighed,
        evidence=evidence, reviewed=reviewed,
    )  # fmt: skip


def _applied_at(context: PlanContext, key: str) -> str | None:
    record = context.records.get(key)
    return record.revision if record is not None and record.revision else None


def judge_rules(
    repo: pygit2.Repository | None, current: Desired | None, head: Desired
) -> RulesVerdict:
    """The rules in force for `head` (`gates.judge_rules`), with the signers files and
    the commits changing the rules read from history first."""
    if repo is None or current is None or current.revision is None:
        return gates.judge_rules(current, head, None)
    old_refs = current.policy.approvals.trusted_signers
    new_refs = head.policy.approvals.trusted_signers
    history = RulesHistory()
    if old_refs or new_refs:
        history = RulesHistory(
            old_signers=allowed_signers(old_refs, repo, current.revision)[0],
            new_signers=allowed_signers(new_refs, repo, head.revision)[0],
        )
    wanted = gates.rules_range(current, head, history)
    if wanted is not None and head.revision is not None:
        base, path = wanted
        commits = range_evidence(repo, base, head.revision, path, history.old_signers)
        history = replace(history, commits=commits)
    return gates.judge_rules(current, head, history)


def reverted_commits(
    repo: pygit2.Repository,
    desired: Desired,
    found: Mapping[str, Revert],
    load: Callable[[str], Desired | None],
) -> dict[str, Reverted]:
    """The commit each revert undoes: the newest one, up to the revision the resolution
    reverted away from was applied at, that changed a document the resource resolves
    from (then, or now)."""
    by_revision: dict[str, dict[str, frozenset[DocumentKey]]] = {}
    for key, revert in found.items():
        if not revert.from_revision:
            continue
        resource = desired.resources[key]
        then = load(revert.from_revision)
        docs = documents_of(desired, resource)
        if then is not None and key in then.resources:
            docs |= documents_of(then, then.resources[key])
        by_revision.setdefault(revert.from_revision, {})[key] = docs
    changes = DocumentChanges(repo)
    out: dict[str, Reverted] = {}
    for revision, wanted in by_revision.items():
        try:
            origins = changes.origins(revision, wanted)
        except (KeyError, ValueError, pygit2.GitError):  # the revision is gone (force-push)
            continue
        for key, origin in origins.items():
            if origin.commit is None:
                continue
            commit = repo[origin.commit].peel(pygit2.Commit)
            subject = commit.message.strip().splitlines()[0] if commit.message.strip() else ""
            out[key] = Reverted(origin.commit, subject, origin.author)
    return out


def observed_orphans(
    found: Diff,
    before: Callable[[str], tuple[str, ResolvedResource] | None],
    load: Callable[[str], Desired | None],
) -> dict[str, str]:
    """Orphans that were observed only at the last revision declaring them (its
    `management`, or its Policy's `observeOnly`), and why: removing an observed-only
    resource from Git never decommissions it."""
    out: dict[str, str] = {}
    for key, d in found.resources.items():
        if d.status is not Status.ORPHANED:
            continue
        last = before(key)
        if last is None:
            continue
        sha, resource = last
        at = load(sha)
        why = observe_only(resource, at.policy if at is not None else PolicySpec())
        if why is not None:
            out[key] = f"{why} at {sha[:12]}, the last revision declaring it"
    return out
