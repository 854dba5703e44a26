"""The planner's property tests reach the gate: the same random scenarios as
`tests/test_plan.py`, with `approvals.required` or `pinPlan` set, through
`gates.plan_values` (the controller's planning path, without Git history: no
approval evidence, no reviewed plan of a merged branch).
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings

from reconciler.plan.diff import selector_matches
from reconciler.plan.gates import plan_values
from tests.plan.test_plan import labels_of, scenarios


def with_approvals(d, **rules):
    approvals = d.policy.approvals.model_copy(update=rules)
    return dataclasses.replace(d, policy=d.policy.model_copy(update={"approvals": approvals}))


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_without_an_approval_nothing_protected_runs(scenario):
    d, seen, last = scenario
    gated = with_approvals(d, required=True)
    plan = plan_values(gated, seen, last_applied=last)
    for a in plan.actions:
        labels = labels_of(d, seen, a.key)
        if any(selector_matches(s, a.kind, a.name, labels) for s in d.policy.protected):
            assert not a.runnable, a  # label selectors too, not only names
    assert not [a for a in plan.actions if a.destructive and a.runnable]


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_pinned_plan_without_a_reviewed_plan_runs_nothing_destructive(scenario):
    d, seen, last = scenario
    pinned = with_approvals(d, pin_plan=True)
    plan = plan_values(pinned, seen, last_applied=last)
    assert not [a for a in plan.actions if a.destructive and a.runnable]
