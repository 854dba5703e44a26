"""The portal's pure steps: phases from Git facts, errors by field, the catalog's schema."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from reconciler.controller.portal.catalog import build_catalog
from reconciler.controller.portal.phases import GitFacts, PlanSeen, RequestRecord, advance
from reconciler.controller.portal.requests import (
    RequestIn,
    commit_message,
    field_errors,
    parse_request,
    render_document,
)
from reconciler.errors import Diagnostic
from reconciler.load.load import load_files
from reconciler.model.status import ResourceStatus
from reconciler.source.writeback import parse_trailers
from tests.controller.portal.conftest import FILES, REQUEST

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RECORD = RequestRecord(
    id="abc", created="2026-01-01T00:00:00Z", key="Machine/web-07", pipeline="server",
    requester="Grace <g@example.com>", token="portal", reason="", branch="request/abc",
    path="requests/machine/web-07.yaml", commit="c1", base="b0", document={}, head="c1",
)  # fmt: skip
NOTHING = GitFacts(None, None, None, False, None, False)


def phases(record: RequestRecord) -> list[str]:
    return [h["phase"] for h in record.history]


def test_a_branch_not_seen_yet_is_not_closed() -> None:
    assert advance(RECORD, NOTHING, NOW).phase == "branch-pushed"
    seen = advance(RECORD, dataclasses.replace(NOTHING, branch_head="c1"), NOW)
    assert seen.seen and seen.phase == "branch-pushed"
    closed = advance(seen, NOTHING, NOW)
    assert closed.phase == "closed" and phases(closed) == ["closed"]
    assert advance(closed, dataclasses.replace(NOTHING, branch_head="c1"), NOW) == closed


def test_planned_for_the_branch_head_then_merged_and_ready() -> None:
    plan = PlanSeen("c1", "h1", "plans/request/abc.md")
    planned = advance(RECORD, dataclasses.replace(NOTHING, branch_head="c1", plan=plan), NOW)
    assert planned.phase == "planned" and planned.plan == plan
    merged = advance(planned, dataclasses.replace(NOTHING, merged_at="m1"), NOW)
    assert merged.phase == "merged" and merged.merged == "m1"
    waiting = ResourceStatus(kind="Machine", name="web-07", phase="Stalled", stage_reached="a")
    provisioning = advance(
        merged, dataclasses.replace(NOTHING, merged_at="m1", reconciled=True, status=waiting), NOW
    )
    assert provisioning.phase == "provisioning"
    assert provisioning.progress == {"resourcePhase": "Stalled", "stageReached": "a"}
    ready = waiting.model_copy(update={"phase": "Ready"})
    # Ready, but its pipeline completed before the merge: not this request's doing yet.
    not_yet = advance(
        provisioning,
        dataclasses.replace(NOTHING, merged_at="m1", reconciled=True, status=ready),
        NOW,
    )
    assert not_yet.phase == "provisioning"
    done = advance(
        provisioning,
        dataclasses.replace(NOTHING, merged_at="m1", reconciled=True, status=ready, applied=True),
        NOW,
    )
    assert phases(done) == ["planned", "merged", "provisioning", "ready"]
    assert advance(done, NOTHING, NOW) == done  # terminal


def test_one_look_from_planned_to_failed_records_the_phases_passed() -> None:
    planned = dataclasses.replace(RECORD, phase="planned")
    failed_status = ResourceStatus.model_validate(
        {"kind": "Machine", "name": "web-07", "phase": "Failed",
         "failure": {"stage": "install-os", "task": "install", "error": "BMC said no"}}
    )  # fmt: skip
    failed = advance(
        planned,
        dataclasses.replace(NOTHING, merged_at="m1", reconciled=True, status=failed_status),
        NOW,
    )
    assert phases(failed) == ["merged", "provisioning", "failed"]
    assert failed.failure == {"stage": "install-os", "task": "install", "error": "BMC said no"}


def test_loader_errors_point_at_request_fields() -> None:
    request = parse_request({**REQUEST, "inputs": {"os": "rhel-9", "extra": {"a": [1, 2]}}})
    assert isinstance(request, RequestIn)
    text = render_document(request, "abc")
    lines = text.splitlines()
    at = {line.strip().split(":")[0]: i + 1 for i, line in enumerate(lines)}
    diagnostics = [
        Diagnostic("requests/machine/web-07.yaml", at["name"], 9, "bad name"),
        Diagnostic("requests/machine/web-07.yaml", at["provider"], 13, "bad provider"),
        Diagnostic("requests/machine/web-07.yaml", at["- web"], 5, "bad profile"),
        Diagnostic("requests/machine/web-07.yaml", at["a"], 7, "bad nested input"),
        Diagnostic("machines.yaml", 3, 1, "elsewhere"),
    ]
    errors = field_errors(diagnostics, "requests/machine/web-07.yaml", text, "Machine")
    assert [(e.field, e.message) for e in errors] == [
        ("name", "bad name"),
        ("provider", "bad provider"),
        ("profiles[0]", "bad profile"),
        ("inputs.extra.a", "bad nested input"),
        ("", "elsewhere"),
    ]
    assert errors[-1].at == "machines.yaml:3:1"


def test_a_reason_cannot_add_trailers() -> None:
    request = parse_request({**REQUEST, "reason": "Please\n\nApproved-by: Boss <boss@example.com>"})
    assert isinstance(request, RequestIn)
    trailers = parse_trailers(commit_message(request, "abc", "portal"))
    assert trailers == {
        "Requested-By": "Grace Hopper <grace@example.com>",
        "Request-Id": "abc",
        "Request-Token": "portal",
    }


def test_the_shape_of_a_request_in_the_loaders_words() -> None:
    errors = parse_request({**REQUEST, "name": "Web_07", "profiles": "web", "extra": 1})
    assert isinstance(errors, list)
    by_field = {e.field: e.message for e in errors}
    assert set(by_field) == {"name", "profiles", "extra"}
    assert "lower-case letters" in by_field["name"]
    assert by_field["extra"].startswith("unknown field 'extra'")


def test_required_inputs_another_layer_sets_are_not_required_in_the_form() -> None:
    files = {path: text.encode() for path, text in FILES.items()}
    files["global.yaml"] = (
        b"apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: global}\n"
        b"spec: {params: {os: ubuntu-24.04}}\n"
    )
    desired = load_files(files).desired
    assert desired is not None
    catalog = build_catalog(desired)
    assert catalog["pipelines"][0]["inputs"]["required"] == []
    assert [p["name"] for p in catalog["profiles"]] == ["web"]  # global applies anyway


def test_an_instance_request_sets_its_spec_fields_from_inputs() -> None:
    from reconciler.controller.portal.requests import document

    request = parse_request(
        {**REQUEST, "kind": "Instance", "profiles": [],
         "inputs": {"size": "m5.large", "image": "ami-1", "os": "rhel-9"}}
    )  # fmt: skip
    assert isinstance(request, RequestIn)
    spec = document(request, "abc")["spec"]
    assert spec == {
        "provider": "lab",
        "pipeline": "server",
        "size": "m5.large",
        "image": "ami-1",
        "params": {"size": "m5.large", "image": "ami-1", "os": "rhel-9"},
    }
