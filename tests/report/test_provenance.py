"""Provenance, pure: which documents a resource resolves from, and approvals weighed
verified or claimed — through the functions the controller's audit calls."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.execute.engine import ExecutionResult, ResourceOutcome, TaskRecord
from reconciler.load.load import load_files
from reconciler.model.kinds import Approvals
from reconciler.plan.approvals import CommitEvidence, Subject
from reconciler.report.provenance import Approval, Origin, Provenance, documents_of, weigh
from reconciler.report.report import ControllerStatus, build_report
from reconciler.report.transitions import audit_records, unreported
from tests.conftest import BASE_FILES, as_bytes

ADA = "Ada Lovelace <ada@example.com>"
GRACE = "Grace Hopper <grace@example.com>"
EVE = "Eve <eve@example.com>"
RULES = Approvals(reviewers=[{"paths": ["machines.yaml"], "names": [GRACE]}])
SUBJECT = Subject("Machine/m1", "machines.yaml")


def evidence(sha: str, *approved: str, **kw: object) -> CommitEvidence:
    return CommitEvidence(sha=sha, author=ADA, approved_by=approved, **kw)  # type: ignore[arg-type]


def test_documents_of_a_resource_are_its_own_its_pipelines_stages_and_profiles() -> None:
    files = dict(BASE_FILES)
    files["profiles.yaml"] = (
        "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: global}\nspec: {}\n---\n"
        "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: db}\nspec: {}\n"
    )
    files["machines.yaml"] = files["machines.yaml"].replace(
        "  params: {os: ubuntu}", "  profiles: [db]\n  params: {os: ubuntu}"
    )
    desired = load_files(as_bytes(files)).desired
    assert desired is not None
    assert documents_of(desired, desired.resources["Machine/m1"]) == {
        ("Machine", "m1"),
        ("Pipeline", "bm"),
        ("Pipeline", "app"),  # included by bm
        ("Stage", "install-os"),
        ("Stage", "install-app"),
        ("Profile", "db"),
        ("Profile", "global"),
    }
    assert ("Profile", "db") not in documents_of(desired, desired.resources["Machine/m2"])


def test_trailers_are_verified_only_from_listed_reviewers_and_claimed_otherwise() -> None:
    origin = Origin(commit="c" * 40, author=ADA, evidence=(evidence("m" * 40, GRACE, EVE),))
    found = weigh(origin, rules=RULES, subject=SUBJECT)
    assert found.approvals == (
        Approval(GRACE, "m" * 40, "verified"),
        Approval(EVE, "m" * 40, "claimed"),
    )
    assert found.approvers == (GRACE,)
    # Listed, but for another file: claimed.
    elsewhere = weigh(origin, rules=RULES, subject=Subject("Machine/x", "other.yaml"))
    assert {a.status for a in elsewhere.approvals} == {"claimed"}


def test_required_signatures_make_an_unsigned_trailer_a_claim_and_a_signature_an_approval() -> None:
    rules = RULES.model_copy(update={"require_signature": True})
    unsigned = Origin(evidence=(evidence("u" * 40, GRACE),))
    assert weigh(unsigned, rules=rules, subject=SUBJECT).approvals == (
        Approval(GRACE, "u" * 40, "claimed"),
    )
    signed = Origin(evidence=(evidence("s" * 40, signature="good", signer="grace@example.com"),))
    assert weigh(signed, rules=rules, subject=SUBJECT).approvals == (
        Approval(GRACE, "s" * 40, "verified", via="signature"),
    )
    untrusted = Origin(evidence=(evidence("t" * 40, GRACE, signature="untrusted"),))
    assert weigh(untrusted, rules=rules, subject=SUBJECT).approvals[0].status == "claimed"


def test_what_the_gate_counted_is_verified() -> None:
    origin = Origin(evidence=(evidence("m" * 40, EVE),))
    found = weigh(
        origin, rules=Approvals(), subject=SUBJECT, counted=(f"{GRACE} (commit {'g' * 12})",)
    )
    assert Approval(GRACE, "g" * 12, "verified") in found.approvals
    assert Approval(EVE, "m" * 40, "claimed") in found.approvals


def test_approvals_read_back_from_old_and_new_records() -> None:
    assert Approval.from_data(GRACE) == Approval(GRACE, None, "verified")
    assert Approval.from_data({"name": EVE, "status": "odd"}).status == "claimed"


def _execution(execution: str) -> ExecutionResult:
    task = TaskRecord("install-os", "work", "install", "succeeded", "", "t0", "t1")
    outcome = ResourceOutcome("Machine/m1", "update", "succeeded", tasks=(task,))
    return ExecutionResult(execution, "p" * 64, {"Machine/m1": outcome})


def test_records_carry_the_provenance_and_reported_executions_are_dropped() -> None:
    asked = Provenance(ADA, "c" * 40, GRACE, "m" * 40, (Approval(GRACE, "m" * 40, "verified"),))
    records = audit_records(
        _execution("e" * 64), revision="r" * 40, provenance={"Machine/m1": asked}
    )
    assert [(r.author, r.change, r.committer, r.merge, r.approvers) for r in records] == [
        (ADA, "c" * 40, GRACE, "m" * 40, (GRACE,))
    ]
    assert unreported(records, {"e" * 64}) == []
    assert unreported(records, {"f" * 64}) == records


def test_two_executions_reported_in_one_second_get_two_files() -> None:
    records = audit_records(_execution("a" * 64), revision=None) + audit_records(
        _execution("b" * 64), revision=None
    )
    report = build_report(
        controller=ControllerStatus(repository="r", branch="main", revision=None),
        statuses={},
        drift=[],
        audit=records,
        plan_hash=None,
        plan_summary="",
        author=None,
        now=datetime(2026, 11, 29, 21, 1, tzinfo=UTC),
    )
    files = sorted(p for p in report.files if p.startswith("audit/"))
    assert [p.split("-")[1] for p in files] == ["a" * 12, "b" * 12]
    assert report.trailers["Executions"] == f"{'a' * 64}, {'b' * 64}"
