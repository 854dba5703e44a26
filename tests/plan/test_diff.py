"""diff: pairing, classification, ignore rules, redaction — on literal values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from reconciler.load.desired import ResolvedResource
from reconciler.model.common import Selector
from reconciler.plan.diff import Cause, LastApplied, Status, diff
from tests import plan_values as pv


def applied(r, **override):
    declared = r.declared()
    declared.update(override)
    changed = bool(override)
    return LastApplied(
        fingerprint="old" if changed else r.fingerprint(),
        declared=declared,
        revision="r0",
        resolution="old" if changed else r.resolution(),
        stages=r.stage_digests(),
    )


def test_pairs_missing_unknown_orphaned_unprovisioned_and_in_sync():
    a, b, c, e = (pv.resource(n) for n in "abce")
    d = pv.desired([a, b, c, e])
    seen = pv.observed(d, absent=["Machine/b"], unknown=["Machine/c"], owned=[pv.orphan("gone")])
    result = diff(d, seen, last_applied=pv.provisioned(d, "Machine/a"))
    status = {k: v.status for k, v in result.resources.items()}
    assert status == {
        "Machine/a": Status.IN_SYNC,
        "Machine/b": Status.MISSING,
        "Machine/c": Status.UNKNOWN,
        "Machine/e": Status.UNPROVISIONED,
        "Machine/gone": Status.ORPHANED,
    }
    assert result.resources["Machine/c"].reason == "sim: down"


def test_existing_is_not_provisioned_whatever_the_provider_reports():
    """Every bare-metal machine exists on its BMC before anyone provisions it: observed
    fields that happen to equal the declared ones do not make it in sync."""
    r = pv.resource("a")
    d = pv.desired([r])
    found = diff(d, pv.observed(d)).resources[r.key]
    assert (found.status, found.exists, found.fields) == (Status.UNPROVISIONED, True, ())
    # A first run that completed two stages, then stopped: the rest is what remains.
    names = list(r.stage_digests())
    partial = LastApplied(stages={n: r.stage_digests()[n] for n in names[:2]})
    found = diff(d, pv.observed(d), last_applied={r.key: partial}).resources[r.key]
    assert (found.status, found.done) == (Status.UNPROVISIONED, tuple(names[:2]))


def test_adopt_takes_over_only_what_is_observed_as_declared():
    r = dataclasses.replace(pv.resource("a"), adopt=True)
    d = pv.desired([r])
    assert diff(d, pv.observed(d)).resources[r.key].status is Status.ADOPTABLE
    other = pv.converged(r) | {"params": {"os": "rhel-9"}}
    found = diff(d, pv.observed(d, fields={r.key: other})).resources[r.key]
    assert found.status is Status.UNPROVISIONED
    assert found.adopt
    assert [(f.path, f.declared, f.observed) for f in found.fields] == [
        ("params.os", "ubuntu-24.04", "rhel-9")
    ]


def test_a_stage_not_as_it_last_completed_is_a_git_change():
    r = pv.resource("a")
    d = pv.desired([r])
    names = list(r.stage_digests())
    old = dataclasses.replace(
        pv.record(r), resolution="older", stages={**r.stage_digests(), names[2]: "0" * 16}
    )
    found = diff(d, pv.observed(d), last_applied={r.key: old}).resources[r.key]
    assert (found.status, found.changed_stages) == (Status.CHANGED, (names[2],))


def test_a_resource_missing_from_the_observation_is_unknown_not_missing():
    d = pv.desired([pv.resource("a")])
    empty = pv.observed(pv.desired([]))
    assert diff(d, empty).resources["Machine/a"].status is Status.UNKNOWN


def test_declared_change_is_git_and_names_the_field():
    r = pv.resource("a", params={"os": "rhel-9"})
    d = pv.desired([r])
    before = pv.resource("a", params={"os": "ubuntu-24.04"})
    seen = pv.observed(d, fields={r.key: pv.converged(before)})
    result = diff(d, seen, last_applied={r.key: applied(before)})
    (field,) = result.resources[r.key].fields
    assert result.resources[r.key].status is Status.CHANGED
    assert (field.path, field.declared, field.observed, field.cause) == (
        "params.os",
        "rhel-9",
        "ubuntu-24.04",
        Cause.GIT,
    )


def test_observed_change_with_unchanged_declaration_is_drift():
    r = pv.resource("a")
    d = pv.desired([r])
    fields = pv.converged(r) | {"params": {"os": "windows-server-2022"}}
    result = diff(d, pv.observed(d, fields={r.key: fields}), last_applied={r.key: applied(r)})
    assert result.resources[r.key].status is Status.DRIFTED
    assert [f.cause for f in result.resources[r.key].fields] == [Cause.DRIFT]


def test_never_applied_difference_counts_as_git():
    r = pv.resource("a")
    d = pv.desired([r])
    fields = pv.converged(r) | {"params": {}}
    result = diff(d, pv.observed(d, fields={r.key: fields}))
    (field,) = result.resources[r.key].fields
    assert (field.cause, field.absent) == (Cause.GIT, "observed")


def test_deleted_outside_git_is_drift_not_missing():
    r = pv.resource("a")
    d = pv.desired([r])
    result = diff(d, pv.observed(d, absent=[r.key]), last_applied={r.key: applied(r)})
    assert result.resources[r.key].status is Status.DRIFTED
    assert result.resources[r.key].exists is False


def test_only_converged_fields_are_compared():
    r = pv.resource("a", params={"os": "ubuntu-24.04", "ntp": "pool.ntp.org"})
    d = pv.desired([r])
    fields = pv.converged(r) | {"params": {"os": "ubuntu-24.04"}, "extra": 1}
    result = diff(d, pv.observed(d, fields={r.key: fields}), last_applied=pv.provisioned(d))
    assert result.resources[r.key].status is Status.IN_SYNC


def test_declared_change_no_stage_converges_is_reported_as_unconverged():
    r = pv.resource("a", params={"os": "ubuntu-24.04", "ntp": "b"})
    before = pv.resource("a", params={"os": "ubuntu-24.04", "ntp": "a"})
    d = pv.desired([r])
    result = diff(d, pv.observed(d), last_applied={r.key: applied(before)})
    assert result.resources[r.key].status is Status.IN_SYNC
    assert result.resources[r.key].unconverged == ("params.ntp",)


DECLARED_NICS = [{"name": "eno1", "ip": "10.0.0.1"}, {"name": "eno2", "ip": "10.0.0.2"}]


@dataclass(frozen=True)
class WithNics(ResolvedResource):
    """A resource kind that declares a list (none of today's kinds does)."""

    def declared(self):
        return {**super().declared(), "nics": DECLARED_NICS}


def with_nics(r):
    return WithNics(**{f.name: getattr(r, f.name) for f in fields(r)})


def test_ignore_rules_match_list_elements_and_selectors():
    stages = [("net", ("nics",), False)]
    edge = with_nics(pv.resource("edge", params={}, stages=stages, labels={"tier": "edge"}))
    core = with_nics(pv.resource("core", params={}, stages=stages))
    rule = (Selector(match_labels={"tier": "edge"}), ["observed.nics.*.ip"])
    d = pv.desired([edge, core], policy_spec=pv.policy(ignore=[rule]))
    observed_nics = [{"name": "eno1", "ip": "10.9.9.9"}, {"name": "eno2", "ip": "10.0.0.2"}]
    seen = pv.observed(d, fields={k: {"nics": observed_nics} for k in d.resources})
    result = diff(d, seen, last_applied=pv.provisioned(d))
    assert result.resources[edge.key].status is Status.IN_SYNC
    assert [f.path for f in result.resources[core.key].fields] == ["nics.0.ip"]
    assert result.resources[core.key].fields[0].observed == "10.9.9.9"


def test_secure_params_are_redacted_in_every_diff():
    stages = [("configure", ("params",), False)]
    r = pv.resource(
        "a", params={"rootPassword": "env:ROOT_PW"}, stages=stages, secure=["rootPassword"]
    )
    d = pv.desired([r])
    seen = pv.observed(d, fields={r.key: {"params": {"rootPassword": "hunter2-plain"}}})
    (field,) = diff(d, seen).resources[r.key].fields
    assert field.path == "params.rootPassword"
    assert field.declared == "***"
    assert field.observed == "***"
    assert "hunter2" not in repr(diff(d, seen))


def test_whole_params_difference_redacts_secure_keys_inside():
    stages = [("configure", ("params",), False)]
    r = pv.resource("a", params={"pw": "env:PW", "os": "x"}, stages=stages, secure=["pw"])
    d = pv.desired([r])
    seen = pv.observed(d, fields={r.key: {}})
    (field,) = diff(d, seen).resources[r.key].fields
    assert field.path == "params"
    assert field.declared == {"pw": "***", "os": "x"}


def test_fingerprint_alone_tells_drift_from_git_change_per_resource():
    r = pv.resource("a", params={"os": "rhel-9"})
    d = pv.desired([r])
    fields = pv.converged(r) | {"params": {"os": "esxi-8"}}
    seen = pv.observed(d, fields={r.key: fields})
    same = diff(d, seen, last_applied={r.key: LastApplied(r.fingerprint(), resolution="x")})
    assert same.resources[r.key].status is Status.DRIFTED
    other = diff(d, seen, last_applied={r.key: LastApplied("older", resolution="x")})
    assert other.resources[r.key].status is Status.CHANGED
    assert LastApplied.from_dict(LastApplied("f", {"params": {}}, "r1").to_dict()) == LastApplied(
        "f", {"params": {}}, "r1"
    )
