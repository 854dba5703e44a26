"""The approval gate between plan and execute: evidence from Git, the verdict, the gated plan.

Used by the controller's cycle, by `reconciler plan` and by the plans of
watched branches. It reads commits and trusted keys from the mirror
(`reconciler.source.commits`), asks the pure `reconciler.plan.approvals.decide`,
and re-plans with the verdict: approved keys pass protection, the others are
blocked with `needs approval from …`. When `Policy.approvals.required` is off
in the rules in force, the plan is returned as it was.

The rules in force are those of `rules_from` — the last reconciled revision
for the controller, the base branch for a pull request plan — so a change
cannot relax the rules that judge it. Protection is the union of both
revisions' `protected` selectors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import pygit2

from reconciler.controller.branch_plans import reviewed_plans
from reconciler.load.desired import Desired, ResolvedResource
from reconciler.observe.observe import ObservedState
from reconciler.plan.approvals import CommitEvidence, Decision, Subject, decide, pin, rule_changes
from reconciler.plan.diff import Diff, LastApplied, diff, selector_matches
from reconciler.plan.plan import Plan, PlannedAction, plan
from reconciler.source.commits import SignatureVerifier, allowed_signers, commits_between, evidence


class Replan(Protocol):
    def __call__(
        self, approved: frozenset[str] = ..., pending: Mapping[str, str] | None = ...
    ) -> Plan: ...


def replanner(
    desired: Desired,
    found: Diff,
    observed: ObservedState,
    *,
    failed: Mapping[str, str] | None = None,
    phases: Mapping[str, str] | None = None,
    paused: Mapping[str, str] | None = None,
) -> Replan:
    """What the gate re-plans with: the plan of `found` under a given approval verdict."""

    def replan(
        approved: frozenset[str] = frozenset(), pending: Mapping[str, str] | None = None
    ) -> Plan:
        return plan(
            desired,
            found,
            unknown_providers=observed.unknown_providers,
            approved=approved,
            pending_approval=pending,
            failed=failed,
            phases=phases,
            paused=paused,
        )

    return replan


@dataclass(frozen=True)
class Gated:
    """A plan after the gate, and the verdict that shaped it."""

    plan: Plan
    decision: Decision = field(default_factory=Decision)
    problems: tuple[str, ...] = ()
    """Trusted-signer references that could not be read (reported as plan notes)."""


def _protected(kind: str, name: str, labels: Mapping[str, str], *desired: Desired) -> bool:
    return any(selector_matches(s, kind, name, labels) for d in desired for s in d.policy.protected)


def _labels(key: str, desired: Desired, found: Diff) -> Mapping[str, str]:
    """A resource's labels as declared, else as observed (one no longer declared)."""
    resource = desired.resources.get(key)
    if resource is not None:
        return resource.labels
    resource_diff = found.resources.get(key)
    return dict(resource_diff.labels) if resource_diff is not None and resource_diff.labels else {}


def gate(
    repo: pygit2.Repository | None,
    *,
    desired: Desired,
    found: Diff,
    replan: Replan,
    rules_from: Desired | None,
    base_of: Callable[[str], str | None],
    declared_before: Callable[[str], ResolvedResource | None] | None = None,
    status_branch: str | None = None,
    reconciled: str | None = None,
) -> Gated:
    """Gate the plan of `desired` over `found`; `base_of(key)` starts each range.

    `replan(approved, pending)` is the caller's `plan.plan(...)` call with its own
    options (unknown providers, …) plus these two: the draft is `replan()`.

    `declared_before(key)` finds a resource no longer declared (a decommission),
    for the path reviewers are listed by. With `pinPlan`, the plans reviewers saw
    are read from `status_branch` for the branches merged since `rules_from`.
    """
    rules_desired = rules_from or desired
    rules = rules_desired.policy.approvals
    draft = replan()
    if not (rules.required or rules.pin_plan) or desired.revision is None:
        return Gated(draft)
    if repo is None:  # no history to read approvals from: everything gated waits
        pending = _without_history(draft, desired, found, rules_desired)
        return Gated(replan(frozenset(), pending), Decision(pending=pending))
    head = desired.revision
    verifier, problems = _verifier(repo, rules_desired)
    subjects = [
        (_subject(action, desired, found, rules_from, declared_before), action)
        for action in draft.actions
    ]
    commits = _evidence(repo, subjects, base_of, head, verifier)
    decision = decide(
        [(subject, a.operation.executes, a.destructive) for subject, a in subjects],
        rules,
        commits,
    )
    pending = dict(decision.pending)
    if rules.pin_plan and status_branch is not None:
        # Branches merged since the last reconciled revision: what is new to apply.
        since = (
            reconciled if reconciled is not None else (rules_from.revision if rules_from else None)
        )
        held = _unreviewed(repo, draft, status_branch, since, head)
        for key, why in held.items():
            pending[key] = f"{pending[key]}; {why}" if key in pending else why
    gated = _noted(replan(decision.approved, pending), decision, problems)
    return Gated(gated, decision, tuple(problems))


def _without_history(
    draft: Plan, desired: Desired, found: Diff, rules_desired: Desired
) -> dict[str, str]:
    """Every action the rules gate, pending: with no history nothing can be approved."""
    return {
        a.key: "needs approval, and there is no Git history to read approvals from"
        for a in draft.actions
        if a.operation.executes
        and (
            a.destructive
            or _protected(a.kind, a.name, _labels(a.key, desired, found), desired, rules_desired)
        )
    }


def _verifier(
    repo: pygit2.Repository, rules_desired: Desired
) -> tuple[SignatureVerifier | None, list[str]]:
    """The verifier of the trusted signers in force (None: none listed or none readable),
    and a problem for each reference that could not be read."""
    rules = rules_desired.policy.approvals
    if not rules.trusted_signers:
        return None, []
    text, missing = allowed_signers(rules.trusted_signers, repo, rules_desired.revision)
    problems = [f"trusted signers {ref} could not be read" for ref in missing]
    return (SignatureVerifier.for_signers(text) if text.strip() else None), problems


def _subject(
    action: PlannedAction,
    desired: Desired,
    found: Diff,
    rules_from: Desired | None,
    declared_before: Callable[[str], ResolvedResource | None] | None,
) -> Subject:
    """What the approval rules judge of an action: the resource's path (declared now, in
    the rules' revision, or before it was removed), its labels (observed ones under the
    declared ones) and whether a `protected` selector of either revision matches."""
    resource = desired.resources.get(action.key)
    if resource is None and rules_from is not None:
        resource = rules_from.resources.get(action.key)
    if resource is None and declared_before is not None:
        resource = declared_before(action.key)
    resource_diff = found.resources.get(action.key)
    labels = dict(resource.labels) if resource is not None else {}
    if resource_diff is not None and resource_diff.labels:
        labels = {**dict(resource_diff.labels), **labels}
    return Subject(
        key=action.key,
        path=resource.path if resource is not None else None,
        labels=labels,
        protected=_protected(action.kind, action.name, labels, desired, rules_from or desired),
    )


def _evidence(
    repo: pygit2.Repository,
    subjects: list[tuple[Subject, PlannedAction]],
    base_of: Callable[[str], str | None],
    head: str,
    verifier: SignatureVerifier | None,
) -> dict[str, list[CommitEvidence]]:
    """Per gated action, the commits since its base that touched its file, as evidence
    (each range walked once per base, each commit read once)."""
    ranges: dict[str | None, list[pygit2.Commit]] = {}
    seen: dict[pygit2.Oid, CommitEvidence] = {}
    commits: dict[str, list[CommitEvidence]] = {}
    for subject, action in subjects:
        if not (action.operation.executes and (action.destructive or subject.protected)):
            continue
        base = base_of(action.key)
        if base not in ranges:
            ranges[base] = commits_between(repo, base, head)
        in_range = since_change(repo, ranges[base], subject.path)
        for commit in in_range:
            if commit.id not in seen:
                seen[commit.id] = evidence(commit, verifier)
        commits[action.key] = [seen[c.id] for c in in_range]
    return commits


def _unreviewed(
    repo: pygit2.Repository, draft: Plan, status_branch: str, since: str | None, head: str
) -> dict[str, str]:
    """With `pinPlan`: the destructive actions no plan reviewed on a branch merged since
    `since` showed, and why."""
    merged = commits_between(repo, since, head)
    reviewed = reviewed_plans(repo, status_branch, {str(c.id) for c in merged})
    return pin(
        [
            (a.key, a.operation.value, a.stages)
            for a in draft.actions
            if a.destructive and a.operation.executes
        ],
        reviewed,
    )


def _noted(gated: Plan, decision: Decision, problems: list[str]) -> Plan:
    """The gated plan with a note per approved action and per unreadable signer list."""
    notes = [
        f"{key}: approved by {', '.join(who)}" for key, who in sorted(decision.approvers.items())
    ]
    notes += problems
    if not notes:
        return gated
    return Plan.build(
        revision=gated.revision,
        policy=gated.policy,
        waves=gated.waves,
        summary=gated.summary,
        notes=(*gated.notes, *notes),
        unknown_providers=gated.unknown_providers,
    )


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


def plan_values(
    desired: Desired,
    observed: ObservedState,
    *,
    last_applied: Mapping[str, LastApplied] | None = None,
    failed: Mapping[str, str] | None = None,
) -> Plan:
    """`plan_revision` without Git history (a revision's literal values): the planning
    path the controller takes, for benchmarks and tests of values."""
    context = PlanContext(repo=None, records=last_applied or {}, failed=failed or {})
    return plan_revision(context, desired, observed)[1].plan


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
    replan = replanner(
        desired,
        found,
        observed,
        failed=context.failed,
        phases=context.phases,
        paused=context.paused,
    )
    declared: dict[str, tuple[str, ResolvedResource] | None] = {}

    def before(key: str) -> tuple[str, ResolvedResource] | None:
        if key not in declared:
            declared[key] = last_declared(context.repo, key, context.reconciled, context.load)
        return declared[key]

    def base_of(key: str) -> str | None:
        if base is not None:
            return base
        record = context.records.get(key)
        if record is not None and record.revision:
            return record.revision
        if key not in desired.resources and (found_before := before(key)) is not None:
            return found_before[0]
        return context.reconciled

    def declared_before(key: str) -> ResolvedResource | None:
        found_before = before(key)
        return found_before[1] if found_before is not None else None

    gated = gate(
        context.repo,
        desired=desired,
        found=found,
        replan=replan,
        rules_from=context.rules_from,
        base_of=base_of,
        declared_before=declared_before,
        status_branch=context.status_branch,
        reconciled=context.reconciled,
    )
    if context.rules_note:
        gated = replace(gated, plan=with_notes(gated.plan, context.rules_note))
    return found, gated


def with_notes(value: Plan, *notes: str) -> Plan:
    return Plan.build(
        revision=value.revision,
        policy=value.policy,
        waves=value.waves,
        summary=value.summary,
        notes=(*value.notes, *notes),
        unknown_providers=value.unknown_providers,
    )


@dataclass(frozen=True)
class RulesVerdict:
    """Which revision's rules judge a head, and why the head's own are not yet in force."""

    rules: Desired
    """Its Policy's approvals and protection judge the head's changes."""
    revision: str | None
    """The rules revision after this verdict (kept by the controller)."""
    note: str | None = None
    """Why the head's changes to the rules wait (a plan note), when they do."""


def judge_rules(
    repo: pygit2.Repository | None, current: Desired | None, head: Desired
) -> RulesVerdict:
    """The rules in force for `head`: those of the last revision whose changes to the
    approval rules were approved (`current`), or the head's own once its changes to
    them are approved under `current`'s rules — so no commit relaxes the rules that
    judge it, however many cycles run at that head.

    Without a current rules revision (the first cycle) the head's rules apply. When
    the current rules do not require approvals, changing them needs none.
    """
    if current is None or current.revision is None:
        return RulesVerdict(head, head.revision)
    changed = list(rule_changes(current.policy, head.policy))
    old_signers = new_signers = ""
    signers = current.policy.approvals.trusted_signers or head.policy.approvals.trusted_signers
    if signers and repo is not None:
        old_signers = allowed_signers(
            current.policy.approvals.trusted_signers, repo, current.revision
        )[0]
        new_signers = allowed_signers(head.policy.approvals.trusted_signers, repo, head.revision)[0]
        if old_signers != new_signers and "approvals.trustedSigners" not in changed:
            changed.append("approvals.trustedSigners (the signers files)")
    if not changed:
        return RulesVerdict(current, current.revision)
    rules = current.policy.approvals
    if not rules.required or head.revision is None:
        return RulesVerdict(head, head.revision)
    if repo is None:
        return RulesVerdict(current, current.revision, "the approval rules changed: no history")
    name, path = head.policy_source or current.policy_source or ("policy", None)
    subject = Subject(key=f"Policy/{name}", path=path, protected=True)
    verifier = SignatureVerifier.for_signers(old_signers) if old_signers.strip() else None
    in_range = since_change(repo, commits_between(repo, current.revision, head.revision), path)
    decision = decide(
        [(subject, True, False)], rules, {subject.key: [evidence(c, verifier) for c in in_range]}
    )
    if subject.key in decision.approved:
        return RulesVerdict(head, head.revision)
    why = decision.pending.get(subject.key, "needs approval")
    note = (
        f"the approval rules changed in Git ({', '.join(changed)}) since revision "
        f"{current.revision[:12]}: {why}; until then the rules of {current.revision[:12]} "
        "judge every change"
    )
    return RulesVerdict(current, current.revision, note)


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
