"""Observe-only resources and undo labels in the pure steps, on literal values.

The end-to-end tests (tests/e2e/test_observe_only.py, test_undo.py) go through the
CLI and the controller; these pin the rules of `reconciler.plan.management` and
`reconciler.plan.undo` on values: what is diverted, what a dependent waits for, which
orphan is kept, which record counts as a revert.
"""

from __future__ import annotations

import dataclasses

from reconciler.load.desired import ResolvedResource
from reconciler.model.common import Selector
from reconciler.plan.diff import diff
from reconciler.plan.plan import Operation, plan
from reconciler.plan.undo import Reverted, label, reverts
from tests.plan_values import desired, observed, orphan, policy, provisioned, record, resource


def watched(name: str) -> ResolvedResource:
    return dataclasses.replace(resource(name), management="observe")


def test_observed_only_get_no_action_whatever_self_heal_and_prune_say() -> None:
    d = desired(
        [watched("a"), resource("b"), watched("c")],
        policy_spec=policy(prune=True, self_heal=True),
    )
    seen = observed(
        d,
        fields={"Machine/a": {**d.resources["Machine/a"].declared(), "params": {"os": "rhel"}}},
        absent=["Machine/c"],
        owned=[orphan("gone")],
    )
    value = plan(
        d,
        diff(d, seen, last_applied=provisioned(d)),
        observed_orphans={"Machine/gone": "management: observe at abc"},
    )
    assert [a.key for a in value.actions] == []
    states = {o.key: (o.state, o.would) for o in value.observed_only}
    assert states == {  # b is managed (and in sync): not listed
        "Machine/a": ("differs", Operation.UPDATE),  # selfHeal would re-install it
        "Machine/c": ("missing", Operation.CREATE),
        "Machine/gone": ("orphaned", Operation.DECOMMISSION),  # prune would
    }
    assert not value.in_sync and value.exit_code == 2


def test_the_policy_selector_wins_over_a_resources_own_manage() -> None:
    own = dataclasses.replace(resource("x", labels={"team": "legacy"}), management="manage")
    spec = policy()
    spec = spec.model_copy(update={"observe_only": [Selector(match_labels={"team": "legacy"})]})
    d = desired([own], policy_spec=spec)
    value = plan(d, diff(d, observed(d, absent=["Machine/x"])))
    assert value.actions == ()
    assert value.observed_only[0].why == "the Policy's observeOnly selects it"


def test_a_dependent_waits_until_what_it_observes_only_is_as_declared() -> None:
    vlan = watched("vlan")
    node = resource("node", depends_on=["Machine/vlan"])
    d = desired([vlan, node])
    differs = {"Machine/vlan": {**vlan.declared(), "params": {"os": "other"}}}
    waiting = plan(d, diff(d, observed(d, fields=differs, absent=["Machine/node"])))
    assert waiting.actions[0].blocked == (
        "dependency Machine/vlan is not Ready: it is observed only, and differs"
    )
    ready = plan(d, diff(d, observed(d, absent=["Machine/node"])))
    assert ready.actions[0].key == "Machine/node" and ready.actions[0].blocked is None


def test_a_head_back_at_an_earlier_resolution_is_a_revert_of_the_named_commit() -> None:
    before = resource("m", params={"os": "ubuntu"}, stages=[("install-os", ["params.os"], True)])
    changed = resource("m", params={"os": "rhel"}, stages=[("install-os", ["params.os"], True)])
    head = desired([before])
    records = {"Machine/m": record(changed, revision="r2")}
    history = {
        "Machine/m": [
            {"resolution": before.resolution(), "revision": "r1"},
            {"resolution": changed.resolution(), "revision": "r2"},
        ]
    }
    found = reverts(head, records, history)
    assert {k: (r.to_revision, r.from_revision) for k, r in found.items()} == {
        "Machine/m": ("r1", "r2")
    }
    value = plan(head, diff(head, observed(desired([changed])), last_applied=records))
    labelled = label(value, head, found, {"Machine/m": Reverted("c0ffee" * 6, "Move to RHEL")})
    assert labelled.actions[0].undoes == "c0ffee" * 6
    assert labelled.undo[0].restores == "r1"
    assert labelled.undo[0].cannot_undo[0].startswith("install-os is destructive")
    assert labelled.content_hash != value.content_hash
    # A new resolution (never applied before) is a change, not an undo.
    assert reverts(head, records, {"Machine/m": history["Machine/m"][1:]}) == {}
