"""Rollouts: which planned actions a change holds back, in which batches — pure, part of plan.

A change to a shared profile (a new OS image) must not reach every machine at once.
A `Rollout` (the Policy's, or a Pipeline's for its resources) covers the runnable
actions it applies to (`appliesTo`: updates of provisioned resources by default,
creates only when listed) and assigns each a batch:

- `canary`: the first N covered resources in key order, or those a selector picks;
  every canary must be Ready before any other covered resource starts;
- then per failure domain (`domain`: `rack`, or a label key): at most `maxUnavailable`
  resources of a domain are being changed at once (a count, or a percentage of the
  domain's covered resources, at least one). A resource is unavailable from its start
  until it is Ready again: one that fails keeps its domain's slot.

`pauseOnFailure` (a count, or a percentage of the rollout) pauses the rollout: nothing
new of it starts, running ones finish, and later plans hold its actions back until
it is resumed (a commit changing `resume`, or the API). The executor enforces the
batches (`reconciler.execute.rollout_gate`); this module only decides them, and says
in plan notes which rules made them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.load.desired import Desired, ResolvedResource
from reconciler.model.common import Selector
from reconciler.model.kinds import Rollout
from reconciler.plan.diff import selector_matches

POLICY_ROLLOUT = "policy"


@dataclass(frozen=True)
class RolloutRules:
    """One rollout as the executor enforces it."""

    id: str
    canary: frozenset[str] = frozenset()
    domains: Mapping[str, str] = field(default_factory=dict)
    """Each covered resource's failure domain value."""
    limits: Mapping[str, int] = field(default_factory=dict)
    """Per domain value, how many of its resources may be unavailable at once."""
    pause_after: int | None = None
    """Failed covered resources that pause the rollout (None: never)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "canary": sorted(self.canary),
            "domains": dict(self.domains),
            "limits": dict(self.limits),
            "pauseAfter": self.pause_after,
        }


def rollout_for(resource: ResolvedResource, desired: Desired) -> tuple[str, Rollout] | None:
    """The rollout covering a resource: its pipeline's, else the Policy's."""
    pipeline = desired.pipelines.get(resource.pipeline)
    if pipeline is not None and pipeline.spec.rollout is not None:
        return f"pipeline-{resource.pipeline}", pipeline.spec.rollout
    if desired.policy.rollout is not None:
        return POLICY_ROLLOUT, desired.policy.rollout
    return None


def domain_of(resource: ResolvedResource, domain: str | None) -> str:
    """A resource's failure domain value (`*` without a domain, `(none)` without a value)."""
    if domain is None:
        return "*"
    if domain == "rack":
        rack = getattr(resource.document.spec, "rack", None)
        value = rack or resource.labels.get("rack")
    else:
        value = resource.labels.get(domain)
    return str(value) if value else "(none)"


def _count(value: int | str | None, of: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        return max(1, math.ceil(of * int(value.rstrip("%")) / 100))
    return max(1, value)


def _canaries(canary: int | Selector | None, covered: list[ResolvedResource]) -> frozenset[str]:
    if canary is None:
        return frozenset()
    if isinstance(canary, int):
        return frozenset(r.key for r in covered[:canary])
    return frozenset(r.key for r in covered if selector_matches(canary, r.kind, r.name, r.labels))


def rollout_spec(desired: Desired, rollout_id: str) -> Rollout | None:
    """The `Rollout` a rollout id names (the Policy's, or a Pipeline's)."""
    if rollout_id == POLICY_ROLLOUT:
        return desired.policy.rollout
    pipeline = desired.pipelines.get(rollout_id.removeprefix("pipeline-"))
    return pipeline.spec.rollout if pipeline is not None else None


def covers(spec: Rollout, operation: str) -> bool:
    return operation in spec.applies_to


def plan_rollouts(
    desired: Desired, covered: Iterable[tuple[str, str]]
) -> tuple[dict[str, RolloutRules], dict[str, tuple[str, str]]]:
    """The rollouts of the runnable `(key, operation)` actions, and each covered
    action's (rollout id, batch name): `canary`, or `rack=r01`-style per domain."""
    members: dict[str, tuple[Rollout, list[ResolvedResource]]] = {}
    for key, operation in sorted(covered):
        resource = desired.resources.get(key)
        found = rollout_for(resource, desired) if resource is not None else None
        if resource is None or found is None or not covers(found[1], operation):
            continue
        members.setdefault(found[0], (found[1], []))[1].append(resource)
    rules: dict[str, RolloutRules] = {}
    batches: dict[str, tuple[str, str]] = {}
    for rollout_id, (spec, resources) in sorted(members.items()):
        canary = _canaries(spec.canary, resources)
        domains = {r.key: domain_of(r, spec.domain) for r in resources}
        sizes: dict[str, int] = {}
        for value in domains.values():
            sizes[value] = sizes.get(value, 0) + 1
        limits = {v: _count(spec.max_unavailable, n) or 1 for v, n in sizes.items()}
        rules[rollout_id] = RolloutRules(
            rollout_id, canary, domains, limits, _count(spec.pause_on_failure, len(resources))
        )
        for r in resources:
            label = spec.domain or "fleet"
            batches[r.key] = (
                rollout_id,
                "canary" if r.key in canary else f"{label}={domains[r.key]}",
            )
    return rules, batches


def describe(rules: RolloutRules, spec: Rollout) -> str:
    """The plan note saying which rules made a rollout's batches."""
    per = f"per {spec.domain}" if spec.domain else "across the fleet"
    parts = [
        f"rollout {rules.id}: {len(rules.domains)} resource(s) in "
        f"{len(rules.limits)} domain(s), at most {spec.max_unavailable} unavailable {per}"
    ]
    if rules.canary:
        parts.append(f"canary first: {', '.join(sorted(rules.canary))}")
    if rules.pause_after is not None:
        parts.append(f"pauses after {rules.pause_after} failure(s)")
    return "; ".join(parts)
