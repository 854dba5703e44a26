"""Scope: which resources a new revision touches — incremental or full cycle.

Sits between load and observe in a long-running controller. A push that changes
one machine of ten thousand should not make every provider describe every
resource again: the resources whose resolution changed (added, edited, or moved
under a changed pipeline, stage or profile), the ones removed, and the ones not
yet settled (failed, waiting for an approval, drifted, unknown: their plan may
change with any commit, an approval trailer for one) are the whole plan, with
any resources the caller asks for (provider events waiting).

Anything that can change the plan of resources whose resolution did not change
— the Policy (guardrails, prune, ignore rules, approvals), a Provider document —
asks for a full cycle, as does the same revision again (then the point is to
look for drift everywhere) and a change too large to be worth narrowing.

Scheduled cycles also hold back resources whose last apply failed until their
backoff (`Policy.failureBackoff`) runs out (`held_failures`): a broken BMC is not
hammered every minute, and its status stays Failed, saying when it is tried next.

Pure: Desired values and the statuses in, a value out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from reconciler.load.desired import Desired
from reconciler.model.status import ResourceStatus

SETTLED_PHASES = frozenset({"Ready", "Decommissioned"})
"""A resource in these phases needs nothing from a revision that leaves it unchanged."""

DEFAULT_MAX_SHARE = 0.5
"""Past this share of the declared resources, narrowing saves little: plan everything."""


@dataclass(frozen=True)
class Scope:
    """The resources one incremental cycle plans, relative to the revision in force."""

    changed: frozenset[str]
    """Declared now, and added or resolved differently than before."""
    removed: frozenset[str]
    """Declared before, not now: found orphaned (and pruned, if policy says so)."""
    revisited: frozenset[str]
    """Declared and unchanged, but planned again: not Ready (or with no status at all),
    as every cycle does, or asked for (provider events waiting when the cycle began)."""
    declared: int
    """How many resources the new revision declares."""

    @property
    def observed(self) -> frozenset[str]:
        """The declared keys to observe and plan."""
        return self.changed | self.revisited

    @property
    def keys(self) -> frozenset[str]:
        """Every key whose status and drift entry this cycle writes."""
        return self.changed | self.removed | self.revisited

    def describe(self) -> str:
        parts = [f"{len(self.changed)} changed", f"{len(self.removed)} removed"]
        if self.revisited:
            parts.append(f"{len(self.revisited)} revisited")
        return (
            f"incremental: {len(self.observed)} of {self.declared} declared resources planned "
            f"({', '.join(parts)}); the others wait for the next full cycle"
        )


@dataclass(frozen=True)
class FullCycle:
    """Why this cycle observes and plans every resource."""

    reason: str


def revision_scope(
    before: Desired | None,
    after: Desired,
    statuses: Mapping[str, ResourceStatus],
    *,
    also: Collection[str] = (),
    max_share: float = DEFAULT_MAX_SHARE,
) -> Scope | FullCycle:
    """What revision `after` changes over `before` (the last revision reconciled in full
    or in part), or why everything must be planned.

    Resources compare by identity first: the loader's assemble cache hands back the
    very same resolved resource for an unchanged document, so a one-file commit
    costs one comparison per resource, not a deep one. `also` names resources to plan
    again whatever their state (declared ones only).
    """
    if before is None:
        return FullCycle("no revision reconciled yet in this process")
    if before.revision == after.revision:
        return FullCycle("no new revision: every resource is observed for drift")
    if before.policy is not after.policy and before.policy != after.policy:
        return FullCycle("the Policy changed")
    if before.providers.keys() != after.providers.keys():
        return FullCycle("the set of Providers changed")
    for name, provider in after.providers.items():
        if before.providers[name] is not provider and before.providers[name] != provider:
            return FullCycle(f"Provider {name} changed")

    changed: set[str] = set()
    for key, resource in after.resources.items():
        old = before.resources.get(key)
        if old is not resource and old != resource:
            changed.add(key)
    removed = frozenset(before.resources.keys() - after.resources.keys())
    asked = set(also)
    revisited = frozenset(
        key
        for key in after.resources
        if key not in changed
        and (
            key in asked
            or (status := statuses.get(key)) is None
            or status.phase not in SETTLED_PHASES
        )
    )
    scope = Scope(
        changed=frozenset(changed),
        removed=removed,
        revisited=revisited,
        declared=len(after.resources),
    )
    if len(scope.keys) > max_share * max(len(after.resources), 1):
        return FullCycle(
            f"{len(scope.keys)} of {len(after.resources)} resources to plan: not worth narrowing"
        )
    return scope


def held_failures(
    desired: Desired, statuses: Mapping[str, ResourceStatus], now: datetime
) -> dict[str, datetime]:
    """Failed resources a scheduled cycle leaves alone, with when they are due again.

    Held: the last apply failed, its `retry_at` is still ahead, and what failed is
    what Git declares now (same resolution: a fix in Git is tried at once).
    """
    held: dict[str, datetime] = {}
    for key, status in statuses.items():
        failure = status.failure
        if status.phase != "Failed" or failure is None or failure.retry_at is None:
            continue
        resource = desired.resources.get(key)
        if resource is None or failure.retry_at <= now:
            continue
        if failure.resolution == resource.resolution():
            held[key] = failure.retry_at
    return held


__all__ = [
    "DEFAULT_MAX_SHARE",
    "SETTLED_PHASES",
    "FullCycle",
    "Scope",
    "held_failures",
    "revision_scope",
]
