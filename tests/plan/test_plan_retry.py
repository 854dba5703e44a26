"""plan: a resource whose last apply failed runs again from the stage that failed."""

from __future__ import annotations

from reconciler.plan.gates import plan_values
from reconciler.plan.plan import Operation
from tests import plan_values as pv


def test_a_failure_after_the_converging_work_is_retried_though_fields_are_in_sync() -> None:
    r = pv.resource("a")
    d = pv.desired([r])
    observed = pv.observed(d, fields={r.key: pv.converged(r)})
    done = pv.provisioned(d)
    assert plan_values(d, observed, last_applied=done).in_sync  # the diff sees nothing to do

    p = plan_values(d, observed, last_applied=done, failed={r.key: "register"})
    (action,) = p.actions
    assert action.operation is Operation.UPDATE
    assert action.stages == ("register",)
    assert action.reasons == ("stage register failed in the last apply: it runs again",)
    assert not action.destructive
    assert p.exit_code == 2
    assert p.summary.in_sync == 0 and p.summary.update == 1


def test_retrying_a_destructive_stage_says_so_and_meets_the_guardrails() -> None:
    r = pv.resource("a")
    d = pv.desired([r], policy_spec=pv.policy(max_destructive=0))
    observed = pv.observed(d, fields={r.key: pv.converged(r)})
    done = pv.provisioned(d)
    (action,) = plan_values(d, observed, last_applied=done, failed={r.key: "install-os"}).actions
    assert action.stages == ("install-os", "install-app", "register")
    assert action.destructive and action.blocked


def test_a_change_after_the_failed_stage_starts_at_the_failed_stage() -> None:
    r = pv.resource("a", params={"os": "ubuntu-24.04", "application": "ceph-osd"})
    before = pv.resource("a", params={"os": "ubuntu-24.04", "application": "kubernetes-node"})
    d = pv.desired([r])
    observed = pv.observed(d, fields={r.key: pv.converged(before)})
    applied = {r.key: pv.record(before)}
    (action,) = plan_values(d, observed, last_applied=applied, failed={r.key: "burn-in"}).actions
    assert action.stages == ("burn-in", "install-os", "install-app", "register")
    assert action.destructive  # install-os comes again


def test_a_stage_no_longer_in_the_pipeline_or_a_missing_resource_changes_nothing() -> None:
    r = pv.resource("a")
    d = pv.desired([r])
    observed = pv.observed(d, fields={r.key: pv.converged(r)})
    done = pv.provisioned(d)
    assert plan_values(d, observed, last_applied=done, failed={r.key: "gone"}).in_sync
    missing = pv.observed(d, absent=[r.key])
    (action,) = plan_values(d, missing, failed={r.key: "register"}).actions
    assert action.operation is Operation.CREATE
    assert action.stages == tuple(s.name for s in r.stages)
