"""The approval gate's pure logic: reviewers by path and label, trailers, signatures."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reconciler.controller.branch_plans import patterns_of, read_plan_header, read_reviewed
from reconciler.model.kinds import Approvals, PolicySpec
from reconciler.plan.approvals import (
    CommitEvidence,
    Reviewed,
    Subject,
    approver_names,
    decide,
    email_of,
    path_matches,
    pin,
    reviewers_for,
)
from reconciler.source.commits import trailer_values

ADA = "Ada Lovelace <ada@example.com>"
GRACE = "Grace Hopper <grace@example.com>"

RULES = Approvals(
    required=True,
    reviewers=[
        {"paths": ["machines/rack-r01.yaml"], "names": [ADA]},
        {"paths": ["machines/**"], "labels": {"role": "storage"}, "names": [GRACE]},
    ],
)
NODE = Subject("Machine/r01-node01", "machines/rack-r01.yaml", {"role": "k8s"}, protected=True)
STORAGE = Subject("Machine/r02-node01", "machines/rack-r02.yaml", {"role": "storage"})
PLAIN = Subject("Machine/r01-node02", "machines/rack-r01.yaml", {"role": "k8s"})


def commit(sha: str = "a" * 40, *approved: str, **kw: object) -> CommitEvidence:
    return CommitEvidence(sha=sha, author="A Human <human@example.com>", approved_by=approved, **kw)  # type: ignore[arg-type]


def test_paths_and_labels_choose_the_reviewers() -> None:
    assert reviewers_for(RULES, NODE) == [ADA]
    assert reviewers_for(RULES, STORAGE) == [GRACE]
    assert (
        reviewers_for(RULES, Subject("Instance/x", "instances/x.yaml", {"role": "storage"})) == []
    )
    assert path_matches("machines/**", "machines/a/b.yaml")
    assert path_matches("**/*.yaml", "top.yaml")
    assert not path_matches("machines/*", "machines/a/b.yaml")
    assert email_of("Ada <ADA@Example.com>") == "ada@example.com"


def test_only_gated_actions_need_approval() -> None:
    decision = decide(
        [(PLAIN, True, False), (NODE, False, False), (STORAGE, True, True)],
        RULES,
        {},
    )
    # plain: neither protected nor destructive; NODE: nothing runs (a report); STORAGE: destroys
    assert set(decision.pending) == {"Machine/r02-node01"}
    assert decision.pending["Machine/r02-node01"].startswith(f"needs approval from {GRACE}")
    off = decide([(NODE, True, True)], Approvals(), {})
    assert off.pending == {} and off.approved == frozenset()


def test_a_trailer_from_a_listed_reviewer_approves() -> None:
    gated = [(NODE, True, True)]
    nobody = decide(gated, RULES, {NODE.key: [commit()]})
    assert nobody.pending[NODE.key] == (
        f"needs approval from {ADA} (destructive; Approved-by trailer)"
    )
    wrong = decide(gated, RULES, {NODE.key: [commit("b" * 40, GRACE)]})
    assert NODE.key in wrong.pending
    right = decide(gated, RULES, {NODE.key: [commit("c" * 40, "ada <Ada@example.com>")]})
    assert right.approved == {NODE.key} and not right.pending
    assert approver_names(right, NODE.key) == (ADA,)


def test_signatures_when_required() -> None:
    rules = RULES.model_copy(update={"require_signature": True})
    gated = [(NODE, True, True)]
    unsigned = decide(gated, rules, {NODE.key: [commit("d" * 40, ADA)]})
    assert "refused: it is not signed" in unsigned.pending[NODE.key]
    untrusted = decide(gated, rules, {NODE.key: [commit("e" * 40, ADA, signature="untrusted")]})
    assert "signed by an untrusted key" in untrusted.pending[NODE.key]
    pgp = decide(gated, rules, {NODE.key: [commit("f" * 40, ADA, signature="unsupported")]})
    assert "cannot be checked" in pgp.pending[NODE.key]
    by_signer = decide(
        gated, rules, {NODE.key: [commit("1" * 40, signature="good", signer="ada@example.com")]}
    )
    assert by_signer.approved == {NODE.key}
    vouched = decide(
        gated, rules, {NODE.key: [commit("2" * 40, ADA, signature="good", signer="ci@x")]}
    )
    assert vouched.approved == {NODE.key}  # a trusted signer's commit carries the trailer


def test_nobody_listed_is_said() -> None:
    decision = decide([(Subject("Instance/x", "x.yaml", protected=True), True, False)], RULES, {})
    assert "lists nobody" in decision.pending["Instance/x"]


def test_policy_fields_are_checked() -> None:
    spec = PolicySpec.model_validate(
        {
            "approvals": {
                "required": True,
                "requireSignature": True,
                "trustedSigners": ["repo:keys/allowed_signers", "file:/etc/signers"],
                "reviewers": [{"labels": {"role": "storage"}, "names": [GRACE]}],
            }
        }
    )
    assert spec.approvals.require_signature
    with pytest.raises(ValidationError):
        PolicySpec.model_validate({"approvals": {"reviewers": [{"names": ["just a name"]}]}})
    with pytest.raises(ValidationError):
        PolicySpec.model_validate({"approvals": {"trustedSigners": ["ssh-ed25519 AAAA"]}})
    assert PolicySpec().approvals.required is False


def test_trailers_and_plan_headers() -> None:
    message = f"Retire a node\n\nbody\n\nApproved-by: {ADA}\nAPPROVED-BY: {GRACE}\nOther: x\n"
    assert trailer_values(message, "Approved-by") == (ADA, GRACE)
    assert trailer_values("subject only", "Approved-by") == ()
    assert patterns_of(" request/*, ,hotfix/* ") == ("request/*", "hotfix/*")
    header = "<!-- reconciler-plan branch=request/a head=abc base=def plan-hash=0123 -->\n# x"
    assert read_plan_header(header) == {
        "branch": "request/a",
        "head": "abc",
        "base": "def",
        "plan-hash": "0123",
    }


def test_pin_holds_destructive_actions_reviewers_did_not_see() -> None:
    reviewed = [
        Reviewed("request/a", "h1", "p" * 64, (("Machine/a", "decommission", ()),)),
        Reviewed("request/b", "h2", "q" * 64, (("Machine/b", "update", ("install-os",)),)),
    ]
    held = pin(
        [
            ("Machine/a", "decommission", ()),
            ("Machine/b", "update", ("install-os", "secure")),
            ("Machine/c", "decommission", ()),
        ],
        reviewed,
    )
    assert set(held) == {"Machine/b", "Machine/c"}
    assert "request/b (plan qqqqqqqqqqqq) showed update install-os" in held["Machine/b"]
    assert pin([("Machine/c", "decommission", ())], []) == {
        "Machine/c": "held: no reviewed plan of a merged branch shows this decommission"
    }
    text = (
        "<!-- reconciler-plan branch=request/a head=h1 base=b plan-hash=abc -->\n"
        '<!-- reconciler-destructive [["Machine/a","decommission",[]]] -->\n# Plan'
    )
    assert read_reviewed(text) == Reviewed(
        "request/a", "h1", "abc", (("Machine/a", "decommission", ()),)
    )
