"""Catalog -> request -> branch -> plan -> merge -> Ready, end to end against a real Git server.

The declared repository is served by `git daemon` on 127.0.0.1; a person's clone
merges (or deletes) the request branches; the controller's API runs for real
(scheduler + uvicorn) and follows the request through Git. The simulator stands
in for the fleet.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.controller.portal.conftest import REQUEST, TOKENS, Fleet

pytestmark = pytest.mark.slow


def test_catalog_request_plan_merge_ready(fleet: Fleet) -> None:
    portal = fleet.client(TOKENS["PORTAL_TOKEN"])

    # The catalog: what a portal renders its form from.
    catalog = portal.get("/api/v1/catalog").json()
    assert [p["name"] for p in catalog["pipelines"]] == ["server"]  # `internal` is not offered
    offering = catalog["pipelines"][0]
    assert offering["title"] == "Bare-metal server"
    assert offering["kinds"] == ["Machine"] and offering["tags"] == ["compute", "lab"]
    schema = offering["inputs"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["os"] == {
        "title": "os",
        "description": "Operating system",
        "type": "string",
        "enum": ["ubuntu-24.04", "rhel-9"],
    }
    assert schema["properties"]["rootPassword"]["x-reconciler-secure"] is True
    assert schema["properties"]["disks"]["default"] == 2
    assert schema["required"] == ["os"]
    assert schema["additionalProperties"] is False
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(REQUEST["inputs"])
    assert not validator.is_valid({"os": "windows"})
    assert not validator.is_valid({"os": "rhel-9", "rootPassword": "hunter2"})
    assert catalog["profiles"] == [{"name": "web", "description": "Web servers"}]
    assert catalog["providers"] == [{"name": "lab", "type": "simulator"}]

    # The request: 202 with an operation, a branch authored by the requester.
    answer = portal.post("/api/v1/requests", json=REQUEST)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    request_id = accepted["id"]
    assert accepted["phase"] == "branch-pushed"
    assert answer.headers["Location"] == accepted["location"] == f"/api/v1/requests/{request_id}"
    branch = f"request/{request_id}"
    assert fleet.branches() == [branch]
    assert fleet.log(branch, "%an <%ae>|%cn <%ce>") == (
        "Grace Hopper <grace@example.com>|reconciler-bot <bot@reconciler.example>"
    )
    message = fleet.log(branch, "%B")
    assert message.startswith("Request Machine/web-07 (pipeline server)\n\n")
    assert "A web server for the conference site" in message
    assert "Requested-By: Grace Hopper <grace@example.com>" in message
    assert f"Request-Id: {request_id}" in message
    assert "Request-Token: backstage" in message  # the token's name, in the audit trail
    assert fleet.log(branch, "%P") == fleet.log("main", "%H")  # made on the tracked head
    declared = fleet.show(branch, "requests/machine/web-07.yaml")
    assert "rootPassword: env:WEB07_ROOT" in declared
    assert "s3cret-root-password" not in declared

    # The controller plans the branch (the request asked for a cycle).
    planned = fleet.wait_phase(request_id, "planned")
    assert planned["plan"]["path"] == f"plans/{branch}.md"
    plan_md = fleet.show("reconciler/status", f"plans/{branch}.md")
    assert "+ Machine/web-07  create: install-os" in plan_md
    assert planned["plan"]["head"] == accepted["commit"]

    # A person merges it; the next cycle provisions the machine.
    merge = fleet.merge(branch)
    assert fleet.sync()["phase"] == "succeeded"
    ready = fleet.wait_phase(request_id, "ready", "failed")
    assert ready["phase"] == "ready", ready
    assert ready["merged"] == merge
    assert [h["phase"] for h in ready["history"]] == [
        "branch-pushed",
        "planned",
        "merged",
        "provisioning",
        "ready",
    ]
    assert ready["terminal"] is True
    status = fleet.status("Machine/web-07")
    assert status["phase"] == "Ready"
    assert status["observed"]["params"]["os"] == "rhel-9"
    assert portal.get("/api/v1/resources/Machine/web-07").json()["phase"] == "Ready"
    listed = portal.get("/api/v1/requests").json()["requests"]
    assert [(r["id"], r["phase"]) for r in listed] == [(request_id, "ready")]
    assert "s3cret-root-password" not in json.dumps(listed)


def test_invalid_requests_get_field_errors_and_create_nothing(fleet: Fleet) -> None:
    portal = fleet.client(TOKENS["PORTAL_TOKEN"])
    bad = {
        **REQUEST,
        "name": "existing",
        "profiles": ["web", "gpu"],
        "inputs": {"os": "windows", "colour": "blue"},
        "requester": {"name": "Grace", "email": "not-an-email"},
    }
    answer = portal.post("/api/v1/requests", json=bad)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == "the request is invalid: nothing was created"
    errors = answer.json()["errors"]
    assert [e["field"] for e in errors] == ["requester.email"]  # the shape first, alone
    assert "requester.email" in errors[0]["message"]

    bad["requester"] = REQUEST["requester"]
    errors = portal.post("/api/v1/requests", json=bad).json()["errors"]
    by_field = {e["field"]: e["message"] for e in errors}
    assert by_field["name"] == "duplicate Machine 'existing': already declared at machines.yaml:1:1"
    bad["name"] = "web-08"
    errors = portal.post("/api/v1/requests", json=bad).json()["errors"]
    assert [(e["field"], e["message"]) for e in errors] == [
        ("profiles[1]", "unknown Profile 'gpu'; known: web")
    ]
    bad["profiles"] = ["web"]
    errors = portal.post("/api/v1/requests", json=bad).json()["errors"]
    by_field = {e["field"]: e for e in errors}
    assert set(by_field) == {"inputs.colour", "inputs.os"}, errors
    assert by_field["inputs.os"]["message"] == (
        "param 'os' = 'windows' is not offered by pipeline 'server' (allowed: ubuntu-24.04, rhel-9)"
    )
    assert by_field["inputs.os"]["at"].startswith("requests/machine/web-08.yaml:")
    assert "not an input of pipeline 'server'" in by_field["inputs.colour"]["message"]

    other = {**REQUEST, "pipeline": "internal"}
    errors = portal.post("/api/v1/requests", json=other).json()["errors"]
    assert errors == [
        {
            "field": "pipeline",
            "message": "pipeline 'internal' is not offered in the catalog (offered: server)",
        }
    ]
    assert portal.post("/api/v1/requests", content=b"[1, 2").status_code == 422
    assert portal.post("/api/v1/requests", json=[1]).status_code == 422

    # Nothing was created: no branch on the server, no request kept.
    assert fleet.branches() == []
    assert portal.get("/api/v1/requests").json() == {"requests": []}


def test_a_secure_input_by_value_is_refused_without_repeating_it(fleet: Fleet) -> None:
    portal = fleet.client(TOKENS["PORTAL_TOKEN"])
    leaked = {**REQUEST, "inputs": {"os": "rhel-9", "licence": "hunter2-plain-value"}}
    answer = portal.post("/api/v1/requests", json=leaked)
    assert answer.status_code == 422
    assert [(e["field"], e["message"]) for e in answer.json()["errors"]] == [
        ("inputs.licence", "param 'licence' is secure: give a reference, env:NAME or file:PATH")
    ]
    assert "hunter2" not in answer.text
    leaked = {**REQUEST, "inputs": {"os": "rhel-9", "rootPassword": "hunter2-plain-value"}}
    answer = portal.post("/api/v1/requests", json=leaked)
    assert [(e["field"], e["message"]) for e in answer.json()["errors"]] == [
        (
            "inputs.rootPassword",
            "spec.params.rootPassword: inline secret not allowed; give a reference, "
            "env:NAME or file:PATH",
        )
    ]
    assert "hunter2" not in answer.text
    secretish = {**REQUEST, "inputs": {"os": "rhel-9", "apiToken": "abc123"}}
    answer = portal.post("/api/v1/requests", json=secretish)
    assert answer.status_code == 422
    assert "abc123" not in answer.text
    assert {e["field"] for e in answer.json()["errors"]} == {"inputs.apiToken"}
    assert fleet.branches() == []


def test_scopes_and_the_token_named_in_the_audit(fleet: Fleet) -> None:
    reader = fleet.client(TOKENS["READER_TOKEN"])
    ops = fleet.client(TOKENS["OPS_TOKEN"])
    portal = fleet.client(TOKENS["PORTAL_TOKEN"])
    anonymous = fleet.client(None)
    admin = fleet.api.client  # api_token: the `default` token, every scope

    assert anonymous.get("/api/v1/catalog").status_code == 401
    assert reader.get("/api/v1/catalog").status_code == 200
    refused = reader.post("/api/v1/requests", json=REQUEST)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "the token 'dashboard' lacks the request scope"
    assert ops.post("/api/v1/requests", json=REQUEST).status_code == 403
    assert ops.get("/api/v1/catalog").status_code == 403
    assert ops.get("/api/v1/resources").status_code == 403
    assert portal.post("/api/v1/sync").status_code == 403
    assert reader.post("/api/v1/sync").status_code == 403
    assert portal.get("/api/v1/resources").status_code == 200  # it has read too
    intake = fleet.client(TOKENS["INTAKE_TOKEN"])  # request alone: its own routes only
    assert intake.get("/api/v1/catalog").status_code == 200
    assert intake.get("/api/v1/requests").status_code == 200
    assert intake.get("/api/v1/resources").status_code == 403
    assert intake.get("/api/v1/operations/x").status_code == 403
    synced = ops.post("/api/v1/sync")
    assert synced.status_code == 202
    operation = fleet.api.operation(synced.json()["id"])
    assert operation["trigger"] == "sync:ops"  # the token's name: who asked
    assert fleet.branches() == []

    answer = admin.post("/api/v1/requests", json={**REQUEST, "name": "web-09"})
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["id"]
    assert "Request-Token: default" in fleet.log(f"request/{request_id}", "%B")
    assert reader.get(f"/api/v1/requests/{request_id}").json()["token"] == "default"


def test_a_branch_deleted_unmerged_closes_the_request(fleet: Fleet) -> None:
    portal = fleet.client(TOKENS["PORTAL_TOKEN"])
    request_id = portal.post("/api/v1/requests", json=REQUEST).json()["id"]
    fleet.wait_phase(request_id, "planned")
    fleet.delete_branch(f"request/{request_id}")
    assert fleet.sync()["phase"] == "succeeded"
    closed = fleet.wait_phase(request_id, "closed")
    assert [h["phase"] for h in closed["history"]] == ["branch-pushed", "planned", "closed"]
    assert closed["terminal"] is True
    assert "plans" not in fleet.show("reconciler/status", "")  # the plan went with the branch


def test_a_restarted_controller_follows_its_requests_on(fleet: Fleet) -> None:
    portal = fleet.client(TOKENS["PORTAL_TOKEN"])
    request_id = portal.post("/api/v1/requests", json=REQUEST).json()["id"]
    fleet.wait_phase(request_id, "planned")
    fleet.restart()  # the request is kept in the state directory
    fleet.merge(f"request/{request_id}")
    assert fleet.sync()["phase"] == "succeeded"
    ready = fleet.wait_phase(request_id, "ready", "failed")
    assert [h["phase"] for h in ready["history"]] == [
        "branch-pushed",
        "planned",
        "merged",
        "provisioning",
        "ready",
    ]
