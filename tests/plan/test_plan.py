"""plan: which stages, in which waves, refused by which guardrail — literal and property tests."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.observe.observe import ObservedState
from reconciler.plan.diff import LastApplied, diff, selector_matches
from reconciler.plan.gates import plan_values
from reconciler.plan.plan import Operation, Plan, plan, relative_to
from reconciler.providers.base import Observation
from tests import plan_values as pv


def applied(r):
    return pv.record(r)


def only(p: Plan):
    (action,) = p.actions
    return action


# --- literal cases -----------------------------------------------------------------


def test_new_resource_runs_its_whole_pipeline():
    r = pv.resource("a")
    d = pv.desired([r])
    action = only(plan_values(d, pv.observed(d, absent=[r.key])))
    assert action.operation is Operation.CREATE
    assert action.stages == tuple(s.name for s in r.stages)
    assert not action.destructive
    assert (
        "not found by provider sim; declared in machines.yaml:1 at revision abc1234"
        in (action.reasons[0])
    )


def test_changed_field_reruns_from_the_first_stage_converging_it():
    r = pv.resource("a", params={"os": "ubuntu-24.04", "application": "ceph-osd"})
    before = pv.resource("a", params={"os": "ubuntu-24.04", "application": "kubernetes-node"})
    d = pv.desired([r])
    p = plan_values(
        d,
        pv.observed(d, fields={r.key: pv.converged(before)}),
        last_applied={r.key: applied(before)},
    )
    action = only(p)
    assert action.operation is Operation.UPDATE
    assert action.stages == ("install-app", "register")
    assert not action.destructive
    assert action.changes[0].path == "params.application"
    assert "params.application changed in Git at revision abc1234" in action.reasons[0]
    assert p.exit_code == 2


def test_changing_the_os_reruns_a_destructive_stage_and_says_so():
    r = pv.resource("a", params={"os": "rhel-9"})
    before = pv.resource("a", params={"os": "ubuntu-24.04"})
    d = pv.desired([r])
    p = plan_values(
        d,
        pv.observed(d, fields={r.key: pv.converged(before)}),
        last_applied={r.key: applied(before)},
    )
    action = only(p)
    assert action.stages == ("install-os", "install-app", "register")
    assert action.destructive
    assert any("destructive stage(s) install-os" in reason for reason in action.reasons)
    assert p.summary.destructive == 1


def test_drift_is_reported_without_self_heal_and_corrected_with_it():
    r = pv.resource("a", params={"os": "ubuntu-24.04", "application": "kubernetes-node"})
    fields = pv.converged(r)
    fields["params"] = dict(fields["params"], application="none")
    for heal, operation, stages in (
        (False, Operation.REPORT_DRIFT, ()),
        (True, Operation.UPDATE, ("install-app", "register")),
    ):
        d = pv.desired([r], policy_spec=pv.policy(self_heal=heal))
        action = only(
            plan_values(d, pv.observed(d, fields={r.key: fields}), last_applied={r.key: applied(r)})
        )
        assert (action.operation, action.stages) == (operation, stages)
        assert "params.application drifted outside Git" in action.reasons[0]


def test_reported_drift_warns_when_correcting_it_would_be_destructive():
    r = pv.resource("a")
    fields = pv.converged(r) | {"params": {"os": "esxi-8"}}
    d = pv.desired([r])
    action = only(
        plan_values(d, pv.observed(d, fields={r.key: fields}), last_applied={r.key: applied(r)})
    )
    assert action.operation is Operation.REPORT_DRIFT and not action.destructive
    assert action.reasons[-1] == (
        "selfHeal is off: reported only (correcting it would re-run from stage install-os, "
        "destructive: install-os)"
    )


def test_in_sync_plan_is_empty_and_exits_zero():
    d = pv.desired([pv.resource("a"), pv.resource("b", kind="Instance", params={})])
    p = plan_values(d, pv.observed(d), last_applied={k: applied(r) for k, r in d.resources.items()})
    assert p.in_sync and p.actions == () and p.exit_code == 0
    assert p.summary.in_sync == 2


def test_orphans_are_decommissioned_only_with_prune():
    d = pv.desired([], policy_spec=pv.policy(prune=False))
    kept = only(plan_values(d, pv.observed(d, owned=[pv.orphan("old")])))
    assert kept.operation is Operation.REPORT_ORPHAN and not kept.destructive
    d = pv.desired([], policy_spec=pv.policy(prune=True))
    gone = only(plan_values(d, pv.observed(d, owned=[pv.orphan("old")])))
    assert gone.operation is Operation.DECOMMISSION and gone.destructive and gone.runnable


def test_protected_resource_is_not_destroyed_unless_approved():
    d = pv.desired([], policy_spec=pv.policy(prune=True, protected=[{"role": "storage"}]))
    seen = pv.observed(d, owned=[pv.orphan("ceph1", role="storage")])
    action = only(plan_values(d, seen))
    assert action.blocked == "protected by policy; not approved"
    assert not action.runnable
    approved = only(plan(d, diff(d, seen), approved=frozenset({"Machine/ceph1"})))
    assert approved.runnable


def test_unknown_observation_blocks_every_destructive_action():
    a = pv.resource("a")
    d = pv.desired([a], policy_spec=pv.policy(prune=True))
    p = plan_values(d, pv.observed(d, unknown=[a.key], owned=[pv.orphan("old")]))
    by_key = {x.key: x for x in p.actions}
    assert by_key[a.key].operation is Operation.UNKNOWN
    assert by_key[a.key].blocked == "observation unknown: sim: down"
    assert by_key["Machine/old"].blocked.startswith("observation unknown (Machine/a)")
    assert p.summary.blocked == 2 and p.summary.destroy == 0


def test_more_destructive_actions_than_allowed_blocks_them_all():
    d = pv.desired([], policy_spec=pv.policy(prune=True, max_destructive=2))
    p = plan_values(d, pv.observed(d, owned=[pv.orphan(f"o{i}") for i in range(3)]))
    assert all(a.blocked == "plan has 3 destructive actions, policy allows 2" for a in p.actions)
    d = pv.desired([], policy_spec=pv.policy(prune=True, max_destructive=3))
    assert all(a.runnable for a in plan_values(d, pv.observed(d, owned=[])).actions)


def test_depends_on_gives_waves_and_decommissions_come_last():
    a = pv.resource("a")
    b = pv.resource("b", depends_on=["Machine/a"])
    c = pv.resource("c", kind="Instance", params={}, depends_on=["Machine/b"])
    e = pv.resource("e")
    d = pv.desired([c, b, a, e], policy_spec=pv.policy(prune=True))
    p = plan_values(d, pv.observed(d, absent=list(d.resources), owned=[pv.orphan("old")]))
    assert [[x.key for x in w.actions] for w in p.waves] == [
        ["Machine/a", "Machine/e"],
        ["Machine/b"],
        ["Instance/c"],
        ["Machine/old"],
    ]
    assert [x.wave for x in p.actions] == [1, 1, 2, 3, 4]


def test_waves_skip_levels_without_actions():
    a = pv.resource("a")
    b = pv.resource("b", depends_on=["Machine/a"])
    d = pv.desired([a, b])
    p = plan_values(d, pv.observed(d, absent=[b.key]), last_applied={a.key: applied(a)})
    assert [(w.number, [x.key for x in w.actions]) for w in p.waves] == [(1, ["Machine/b"])]


def test_dependency_cycle_is_refused():
    a = pv.resource("a", depends_on=["Machine/b"])
    b = pv.resource("b", depends_on=["Machine/a"])
    d = pv.desired([a, b])
    with pytest.raises(ValueError, match="cycle"):
        plan_values(d, pv.observed(d))


def test_secure_values_never_reach_the_plan():
    stages = [("configure", ("params",), False)]
    r = pv.resource("a", params={"pw": "env:PW"}, stages=stages, secure=["pw"])
    d = pv.desired([r])
    seen = pv.observed(d, fields={r.key: {"params": {"pw": "s3cret-value"}}})
    text = plan_values(d, seen).to_json()
    assert "s3cret-value" not in text and "env:PW" not in text and '"***"' in text


def test_json_round_trip_and_hash():
    a = pv.resource("a")
    d = pv.desired([a, pv.resource("b")], policy_spec=pv.policy(prune=True))
    p = plan_values(d, pv.observed(d, absent=[a.key], owned=[pv.orphan("old")]))
    again = Plan.from_json(p.to_json())
    assert again == p
    assert len(p.content_hash) == 64
    assert '"contentHash"' in p.to_json() and '"dependsOn"' in p.to_json()
    tampered = p.to_json().replace('"create"', '"update"')
    with pytest.raises(ValueError, match="content hash"):
        Plan.from_json(tampered)


def test_relative_to_base_keeps_only_what_the_branch_adds():
    a, b = pv.resource("a"), pv.resource("b")
    seen_base = pv.desired([a])
    head = pv.desired([a, b])
    observation = pv.observed(head, absent=[a.key, b.key])
    base_plan = plan_values(seen_base, observation)
    head_plan = plan_values(head, observation)
    delta = relative_to(head_plan, base_plan)
    assert [x.key for x in delta.actions] == ["Machine/b"]
    assert delta.summary.create == 1


# --- properties ----------------------------------------------------------------------

STATES = ("absent", "unknown", "converged", "git", "drift", "deleted")
ROLES = ("storage", "worker", "edge")


@st.composite
def scenarios(draw):
    n = draw(st.integers(0, 10))
    resources = []
    states = {}
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        kind = draw(st.sampled_from(("Machine", "Instance")))
        destructive = draw(st.lists(st.booleans(), min_size=4, max_size=4))
        stages = [
            ("s0", ("bmc", "size"), destructive[0]),
            ("s1", ("params.os",), destructive[1]),
            ("s2", ("params.application",), destructive[2]),
            ("s3", (), destructive[3]),
        ]
        r = pv.resource(
            f"r{i}",
            kind=kind,
            params={"os": draw(st.sampled_from(("a", "b"))), "application": "x"},
            stages=stages,
            depends_on=[resources[j].key for j in sorted(deps)],
            labels={"role": draw(st.sampled_from(ROLES))},
        )
        resources.append(r)
        states[r.key] = draw(st.sampled_from(STATES))
    orphans = [
        pv.orphan(f"o{i}", role=draw(st.sampled_from(ROLES)))
        for i in range(draw(st.integers(0, 4)))
    ]
    names = [r.key for r in resources] + [o.key for o in orphans]
    protected = draw(
        st.lists(
            st.one_of(
                st.sampled_from(names or ["Machine/none"]),
                st.sampled_from([{"role": x} for x in ROLES]),
            ),
            max_size=3,
        )
    )
    policy = pv.policy(
        prune=draw(st.booleans()),
        self_heal=draw(st.booleans()),
        protected=protected,
        max_destructive=draw(st.integers(0, 6)),
    )
    d = pv.desired(resources, policy_spec=policy)
    observations, last = {}, {}
    for r in resources:
        state = states[r.key]
        fields = pv.converged(r)
        if state == "git":
            fields["params"] = dict(fields["params"], os="old")
            last[r.key] = LastApplied("old", {"params": {"os": "old"}}, "r0", resolution="old")
        elif state == "drift":
            fields["params"] = dict(fields["params"], application="hand-made")
            last[r.key] = applied(r)
        elif state in ("converged", "deleted"):
            last[r.key] = applied(r)
        base = pv.observed(
            pv.desired([r]),
            fields={r.key: fields},
            absent=[r.key] if state in ("absent", "deleted") else [],
            unknown=[r.key] if state == "unknown" else [],
        )
        observations.update(base.observations)
    broken = {"sim": "listing failed"} if draw(st.booleans()) and draw(st.booleans()) else {}
    seen = ObservedState(
        observations=observations,
        owned={} if broken else {o.key: o for o in orphans},
        unknown_providers=broken,
    )
    return d, seen, last


def labels_of(d, seen, key):
    if key in d.resources:
        return d.resources[key].labels
    return seen.owned[key].labels


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_never_destroys_a_protected_resource(scenario):
    d, seen, last = scenario
    for a in plan_values(d, seen, last_applied=last).actions:
        labels = labels_of(d, seen, a.key)
        if any(selector_matches(s, a.kind, a.name, labels) for s in d.policy.protected):
            assert not (a.destructive and a.runnable), a


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_never_destroys_when_any_observation_is_unknown(scenario):
    d, seen, last = scenario
    p = plan_values(d, seen, last_applied=last)
    unknown = [k for k, o in seen.observations.items() if not isinstance(o, Observation)]
    for a in p.actions:
        if a.key in unknown:
            assert a.operation is Operation.UNKNOWN and not a.runnable
        if unknown or seen.unknown_providers:
            assert not (a.destructive and a.runnable), a


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_destructive_budget_and_prune_hold(scenario):
    d, seen, last = scenario
    p = plan_values(d, seen, last_applied=last)
    runnable = [a for a in p.actions if a.destructive and a.runnable]
    assert len(runnable) <= d.policy.max_destructive_actions
    if not d.policy.prune:
        assert all(a.operation is not Operation.DECOMMISSION for a in p.actions)
    if not d.policy.self_heal:
        drifted = [
            k
            for k, r in diff(d, seen, last_applied=last).resources.items()
            if r.status.value == "drifted"
        ]
        assert all(a.operation is Operation.REPORT_DRIFT for a in p.actions if a.key in drifted)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_always_respects_depends_on_order(scenario):
    d, seen, last = scenario
    p = plan_values(d, seen, last_applied=last)
    wave = {a.key: a.wave for a in p.actions}
    for a in p.actions:
        for dep in a.depends_on:
            if dep in wave:
                assert wave[dep] < a.wave, (dep, a.key)
    assert [w.number for w in p.waves] == list(range(1, len(p.waves) + 1))


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_deterministic_for_the_same_inputs(scenario, rnd: random.Random):
    d, seen, last = scenario
    first = plan_values(d, seen, last_applied=last)
    items = list(d.resources.items())
    rnd.shuffle(items)
    observations = list(seen.observations.items())
    rnd.shuffle(observations)
    shuffled = type(d)(
        revision=d.revision, resources=dict(items), providers=d.providers, policy=d.policy
    )
    again = plan_values(
        shuffled,
        ObservedState(
            observations=dict(observations),
            owned=dict(reversed(seen.owned.items())),
            unknown_providers=seen.unknown_providers,
        ),
        last_applied=dict(reversed(last.items())),
    )
    assert again.to_json() == first.to_json()
    assert again.content_hash == first.content_hash
    assert Plan.from_json(first.to_json()) == first


def test_plan_without_diff_input_is_the_same_as_plan_values():
    a = pv.resource("a")
    d = pv.desired([a])
    seen = pv.observed(d, absent=[a.key])
    assert plan(d, diff(d, seen)) == plan_values(d, seen)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_stages_are_the_whole_pipeline_or_a_suffix_of_it(scenario):
    d, seen, last = scenario
    for a in plan_values(d, seen, last_applied=last).actions:
        if a.key not in d.resources:
            assert a.stages == ()
            continue
        pipeline = tuple(s.name for s in d.resources[a.key].stages)
        if a.operation is Operation.CREATE:
            assert a.stages == pipeline
        elif a.operation is Operation.UPDATE:
            assert a.stages and pipeline[-len(a.stages) :] == a.stages
            stages = {s.name: s for s in d.resources[a.key].stages}
            assert a.destructive == any(stages[s].destructive for s in a.stages)
        else:
            assert a.stages == ()


SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=16)


@settings(max_examples=100, deadline=None)
@given(SECRET, SECRET)
def test_secure_values_never_appear_in_plans_or_renderings(declared, observed):
    from reconciler.plan.render import render_markdown, render_text

    stages = [("configure", ("params",), False), ("app", ("params.application",), False)]
    r = pv.resource(
        "a",
        params={"pw": f"env:CANARY_{declared.upper()}", "application": "x"},
        stages=stages,
        secure=["pw"],
    )
    d = pv.desired([r])
    observed = f"Canary-{observed}"  # distinctive: never part of ordinary plan text
    seen = pv.observed(d, fields={r.key: {"params": {"pw": observed, "application": "y"}}})
    p = plan_values(d, seen)
    for text in (p.to_json(), render_text(p), *render_markdown(p)):
        assert observed not in text and f"CANARY_{declared.upper()}" not in text


def test_a_plan_with_an_untrusted_provider_is_never_in_sync():
    from reconciler.plan.render import summary_line

    d = pv.desired([pv.resource("a")])
    seen = pv.observed(d)
    seen = ObservedState(seen.observations, seen.owned, {"sim": "listing failed"})
    p = plan_values(d, seen, last_applied=pv.provisioned(d))
    assert p.actions == () and p.unknown_providers == ("sim",)
    assert not p.in_sync and p.exit_code == 2
    assert summary_line(p) == (
        "Incomplete: provider(s) sim could not be trusted; nothing else to do."
    )


def test_a_dependent_waits_while_its_dependency_is_not_ready() -> None:
    """dependsOn: blocked while the dependency is blocked, unknown, or (outside this plan)
    not Ready when last seen; a dependency that runs in this plan is waited for by the
    executor instead."""
    base = pv.resource("base")
    child = pv.resource("child", depends_on=["Machine/base"])
    d = pv.desired([base, child], policy_spec=pv.policy(max_destructive=10))
    records = pv.provisioned(d, "Machine/base")

    def child_action(**kwargs: object) -> str | None:
        actions = plan(d, **kwargs).actions  # type: ignore[arg-type]
        (action,) = [a for a in actions if a.key == child.key]
        return action.blocked

    both_new = diff(d, pv.observed(d, absent=[base.key, child.key]))
    assert child_action(changes=both_new) is None  # base runs first, in this plan
    assert child_action(changes=both_new, pending_approval={base.key: "needs approval"}) == (
        "dependency Machine/base is not Ready: its create is blocked: needs approval"
    )
    unknown = diff(d, pv.observed(d, unknown=[base.key], absent=[child.key]))
    assert child_action(changes=unknown).startswith(
        "dependency Machine/base is not Ready: its unknown is blocked"
    )
    # Only the dependent is looked at (base held in failure backoff): its phase decides.
    alone = pv.desired([child])
    only_child = diff(alone, pv.observed(alone, absent=[child.key]))
    (held,) = plan(alone, only_child, phases={base.key: "Failed"}).actions
    assert held.blocked == "dependency Machine/base is not Ready: its phase is Failed"
    (ready,) = plan(alone, only_child, phases={base.key: "Ready"}).actions
    assert ready.blocked is None
    in_sync = diff(d, pv.observed(d, absent=[child.key]), last_applied=records)
    assert child_action(changes=in_sync) is None
