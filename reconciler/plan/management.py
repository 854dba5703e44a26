"""Observe-only resources: which ones the controller must never act on — pure, part of plan.

A resource is *observed only* when its resolved `spec.management` is `observe` (its
own, else its profiles', else the global profile's: `Resolver.management`) or a
selector of the Policy's `observeOnly` picks it (a guardrail: a resource cannot opt out
of it by saying `management: manage`). Such a resource is observed, diffed and
reported, and nothing is ever done to it: no create, update, self-heal, adoption,
power or state change, and no decommission when it leaves Git — for a resource no
longer declared, the management it had at the last revision declaring it decides.

`observed_state` says what the plan and the status show of one: `in-sync` (every
converged field observed as declared: Ready), `differs` or `missing` (Drifted),
`unknown` (its provider could not say), `orphaned` (no longer declared, kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from reconciler.plan.diff import ResourceDiff, Status, selector_matches

if TYPE_CHECKING:
    from reconciler.load.desired import ResolvedResource
    from reconciler.model.kinds import PolicySpec

ObservedState = Literal["in-sync", "differs", "missing", "unknown", "orphaned"]


def observe_only(resource: ResolvedResource, policy: PolicySpec) -> str | None:
    """Why the resource is only observed (for the plan and its status), or None: managed."""
    for selector in policy.observe_only:
        if selector_matches(selector, resource.kind, resource.name, resource.labels):
            return "the Policy's observeOnly selects it"
    if resource.management == "observe":
        where = resource.management_from
        if where and where != resource.key:
            return f"management: observe (from {where})"
        return "management: observe"
    return None


def observed_state(found: ResourceDiff) -> ObservedState:
    """What observation says of an observed-only resource (module docstring)."""
    if found.status is Status.UNKNOWN:
        return "unknown"
    if found.status is Status.ORPHANED:
        return "orphaned"
    if not found.exists:
        return "missing"
    # Stages that changed since they last ran do not matter here: nothing runs them.
    return "differs" if found.fields else "in-sync"
