"""The approval gate between plan and execute: the evidence it needs, the verdict, the gated plan.

Pure: no Git, no ssh-keygen. The caller (`reconciler.controller.planning`, for the
controller's cycle, `reconciler plan` and the plans of watched branches) runs the
steps: the draft plan; `undeclared` keys looked up in history; `subjects` and the
`evidence_wanted` for them; `reconciler.source.commits.gather` answers with an
`Evidence` value; `gate` asks `reconciler.plan.approvals.decide` and re-plans with
the verdict: approved keys pass protection, the others are blocked with
`needs approval from …`. When `Policy.approvals.required` is off in the rules in
force, the plan is returned as it was.

The rules in force are those of `rules_from` — the last reconciled revision
for the controller, the base branch for a pull request plan — so a change
cannot relax the rules that judge it. Protection is the union of both
revisions' `protected` selectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.load.desired import Desired, ResolvedResource
from reconciler.observe.values import ObservedState
from reconciler.plan.approvals import (
    CommitEvidence,
    Decision,
    Evidence,
    EvidenceWanted,
    Range,
    Reviewed,
    Subject,
    decide,
    pin,
    rule_changes,
)
from reconciler.plan.diff import Diff, LastApplied, diff, selector_matches
from reconciler.plan.plan import Plan, plan


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
    observed_orphans: Mapping[str, str] | None = None,
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
            observed_orphans=observed_orphans,
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


def gating(desired: Desired, rules_from: Desired | None) -> bool:
    """Whether the rules in force gate anything (else the draft plan is the plan)."""
    rules = (rules_from or desired).policy.approvals
    return bool(rules.required or rules.pin_plan) and desired.revision is not None


def without_history(
    draft: Plan, replan: Replan, desired: Desired, found: Diff, rules_from: Desired | None
) -> Gated:
    """No history to read approvals from: every gated action waits."""
    rules_desired = rules_from or desired
    pending = {
        a.key: "needs approval, and there is no Git history to read approvals from"
        for a in draft.actions
        if a.operation.executes
        and (
            a.destructive
            or _protected(a.kind, a.name, _labels(a.key, desired, found), desired, rules_desired)
        )
    }
    return Gated(replan(frozenset(), pending), Decision(pending=pending))


def undeclared(
    draft: Plan,
    desired: Desired,
    rules_from: Desired | None,
    bases: Mapping[str, str | None],
) -> tuple[str, ...]:
    """The planned keys whose last declaration must be looked up in history
    (`source.commits.last_declared`): for their path and labels when no revision in
    force declares them, for their range when nothing else starts it."""
    return tuple(
        a.key
        for a in draft.actions
        if a.key not in desired.resources
        and (
            rules_from is None
            or a.key not in rules_from.resources
            or (a.operation.executes and bases.get(a.key) is None)
        )
    )


@dataclass(frozen=True)
class GateSubject:
    """One planned action as the gate weighs it."""

    subject: Subject
    executes: bool
    destructive: bool
    base: str | None
    """Where the range of its approvals starts (see `subjects`)."""

    @property
    def gated(self) -> bool:
        return self.executes and (self.destructive or self.subject.protected)

    @property
    def range(self) -> Range:
        return (self.base, self.subject.path)


def subjects(
    draft: Plan,
    desired: Desired,
    found: Diff,
    rules_from: Desired | None,
    *,
    bases: Mapping[str, str | None],
    declared: Mapping[str, tuple[str, ResolvedResource] | None],
    fallback: str | None,
) -> tuple[GateSubject, ...]:
    """What each planned action touches, and where its range starts: `bases[key]` (a
    branch's base, or the resource's last applied revision), else the last revision
    declaring a removed resource (`declared`), else `fallback` (the last reconciled one)."""
    rules_desired = rules_from or desired
    out = []
    for action in draft.actions:
        resource = desired.resources.get(action.key)
        if resource is None and rules_from is not None:
            resource = rules_from.resources.get(action.key)
        before = declared.get(action.key)
        if resource is None and before is not None:
            resource = before[1]
        resource_diff = found.resources.get(action.key)
        labels = dict(resource.labels) if resource is not None else {}
        if resource_diff is not None and resource_diff.labels:
            labels = {**dict(resource_diff.labels), **labels}
        protected = _protected(action.kind, action.name, labels, desired, rules_desired)
        base = bases.get(action.key)
        if base is None and action.key not in desired.resources and before is not None:
            base = before[0]
        subject = Subject(
            key=action.key,
            path=resource.path if resource is not None else None,
            labels=labels,
            protected=protected,
        )
        out.append(
            GateSubject(subject, action.operation.executes, action.destructive, base or fallback)
        )
    return tuple(out)


def evidence_wanted(
    desired: Desired,
    rules_from: Desired | None,
    weighed: Sequence[GateSubject],
    *,
    merged_since: str | None,
    pin: bool,
) -> EvidenceWanted:
    """What the gate needs from history: the range of each gated action, the trusted
    signers of the rules in force, and (for `pinPlan`) the commits merged since."""
    assert desired.revision is not None  # `gating` is false without a revision
    rules_desired = rules_from or desired
    rules = rules_desired.policy.approvals
    return EvidenceWanted(
        head=desired.revision,
        ranges=tuple(dict.fromkeys(s.range for s in weighed if s.gated)),
        signers=tuple(rules.trusted_signers),
        signers_at=rules_desired.revision,
        merged_since=merged_since,
        merged=pin and rules.pin_plan,
    )


def gate(
    draft: Plan,
    replan: Replan,
    *,
    desired: Desired,
    rules_from: Desired | None,
    weighed: Sequence[GateSubject],
    evidence: Evidence,
    reviewed: Sequence[Reviewed] | None = None,
) -> Gated:
    """Gate `draft` (the plan of `desired`, `replan()`) with the evidence gathered for it.

    `replan(approved, pending)` is the caller's `plan.plan(...)` call with its own
    options (unknown providers, …) plus these two. `reviewed` are the plans reviewers
    saw for the branches merged since the last reconciled revision (None: `pinPlan`
    not checked).
    """
    rules = (rules_from or desired).policy.approvals
    problems = [f"trusted signers {ref} could not be read" for ref in evidence.missing_signers]
    commits = {s.subject.key: evidence.commits.get(s.range, ()) for s in weighed if s.gated}
    decision = decide([(s.subject, s.executes, s.destructive) for s in weighed], rules, commits)
    pending = dict(decision.pending)
    if rules.pin_plan and reviewed is not None:
        held = pin(
            [
                (a.key, a.operation.value, a.stages)
                for a in draft.actions
                if a.destructive and a.operation.executes
            ],
            reviewed,
        )
        for key, why in held.items():
            pending[key] = f"{pending[key]}; {why}" if key in pending else why
    gated = replan(decision.approved, pending)
    notes = [
        f"{key}: approved by {', '.join(who)}" for key, who in sorted(decision.approvers.items())
    ]
    notes += problems
    if notes:
        gated = with_notes(gated, *notes)
    return Gated(gated, decision, tuple(problems))


def plan_values(
    desired: Desired,
    observed: ObservedState,
    *,
    last_applied: Mapping[str, LastApplied] | None = None,
    failed: Mapping[str, str] | None = None,
) -> Plan:
    """The controller's planning path without Git history (a revision's literal values:
    nothing gated can be approved), for benchmarks and tests of values."""
    found = diff(desired, observed, last_applied=last_applied or {})
    replan = replanner(desired, found, observed, failed=failed or {})
    draft = replan()
    if not gating(desired, None):
        return draft
    return without_history(draft, replan, desired, found, None).plan


def with_notes(value: Plan, *notes: str) -> Plan:
    """The plan with notes added (everything else kept: rollouts, observed-only…)."""
    return value.rebuilt(notes=(*value.notes, *notes))


@dataclass(frozen=True)
class RulesVerdict:
    """Which revision's rules judge a head, and why the head's own are not yet in force."""

    rules: Desired
    """Its Policy's approvals and protection judge the head's changes."""
    revision: str | None
    """The rules revision after this verdict (kept by the controller)."""
    note: str | None = None
    """Why the head's changes to the rules wait (a plan note), when they do."""


@dataclass(frozen=True)
class RulesHistory:
    """What Git says about a change of the approval rules, gathered by the caller."""

    old_signers: str = ""
    """The allowed_signers text of the rules in force (verifies the commits below)."""
    new_signers: str = ""
    """The allowed_signers text the head's rules name."""
    commits: tuple[CommitEvidence, ...] = ()
    """The commits of `rules_range` (empty when it is None)."""


def changed_rules(current: Desired, head: Desired, history: RulesHistory | None) -> list[str]:
    """Which approval rules the head changes, the signers files' contents included."""
    changed = list(rule_changes(current.policy, head.policy))
    signers_changed = history is not None and history.old_signers != history.new_signers
    if signers_changed and "approvals.trustedSigners" not in changed:
        changed.append("approvals.trustedSigners (the signers files)")
    return changed


def _rules_subject(current: Desired, head: Desired) -> Subject:
    name, path = head.policy_source or current.policy_source or ("policy", None)
    return Subject(key=f"Policy/{name}", path=path, protected=True)


def rules_range(current: Desired | None, head: Desired, history: RulesHistory) -> Range | None:
    """The commits `judge_rules` weighs (given the signers in `history`), if any."""
    if current is None or current.revision is None or head.revision is None:
        return None
    if not current.policy.approvals.required or not changed_rules(current, head, history):
        return None
    return (current.revision, _rules_subject(current, head).path)


def judge_rules(
    current: Desired | None, head: Desired, history: RulesHistory | None
) -> RulesVerdict:
    """The rules in force for `head`: those of the last revision whose changes to the
    approval rules were approved (`current`), or the head's own once its changes to
    them are approved under `current`'s rules — so no commit relaxes the rules that
    judge it, however many cycles run at that head.

    Without a current rules revision (the first cycle) the head's rules apply. When
    the current rules do not require approvals, changing them needs none. `history`
    None: there is no Git history to read approvals from.
    """
    if current is None or current.revision is None:
        return RulesVerdict(head, head.revision)
    changed = changed_rules(current, head, history)
    if not changed:
        return RulesVerdict(current, current.revision)
    rules = current.policy.approvals
    if not rules.required or head.revision is None:
        return RulesVerdict(head, head.revision)
    if history is None:
        return RulesVerdict(current, current.revision, "the approval rules changed: no history")
    subject = _rules_subject(current, head)
    decision = decide([(subject, True, False)], rules, {subject.key: history.commits})
    if subject.key in decision.approved:
        return RulesVerdict(head, head.revision)
    why = decision.pending.get(subject.key, "needs approval")
    note = (
        f"the approval rules changed in Git ({', '.join(changed)}) since revision "
        f"{current.revision[:12]}: {why}; until then the rules of {current.revision[:12]} "
        "judge every change"
    )
    return RulesVerdict(current, current.revision, note)
