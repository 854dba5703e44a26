"""The API against the real server on 127.0.0.1: sync operations, reads, auth, OpenAPI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.controller.server.conftest import declare, repo_files, running, settings_for


def test_sync_answers_202_at_once_and_the_operation_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = declare(tmp_path, repo_files(4, latency="0.1s"))
    with running(settings_for(bare, tmp_path / "state"), monkeypatch) as api:
        answer = api.client.post("/api/v1/sync")
        assert answer.status_code == 202
        op_id = answer.json()["id"]
        assert answer.headers["Location"] == f"/api/v1/operations/{op_id}"
        assert answer.json()["phase"] == "pending"
        done = api.operation(op_id)
        assert done["phase"] == "succeeded", done
        assert done["errors"] == []
        assert done["revision"] == api.scheduler.revision
        assert done["progress"]["done"] == done["progress"]["total"]

        listed = api.client.get("/api/v1/resources").json()
        assert [r["name"] for r in listed["resources"]] == ["m00", "m01", "m02", "m03"]
        assert {r["phase"] for r in listed["resources"]} == {"Ready"}
        one = api.client.get("/api/v1/resources/Machine/m02").json()
        ready = next(c for c in one["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert api.client.get("/api/v1/resources/Machine/nope").status_code == 404
        plan = api.client.get("/api/v1/plan")
        assert plan.status_code == 200
        assert plan.json()["revision"] == api.scheduler.revision

        assert api.client.get("/healthz").json() == {"status": "ok"}
        assert api.client.get("/readyz").status_code == 200
        assert api.client.get("/api/v1/operations/unknown").status_code == 404
        metrics = api.client.get("/metrics").text
        assert 'reconciler_resources{phase="Ready"} 4.0' in metrics
        assert 'reconciler_last_reconciled_revision_info{revision="' in metrics
        assert "reconciler_cycle_duration_seconds_bucket" in metrics
        assert 'reconciler_actions_total{result="succeeded"} 4.0' in metrics

        spec = api.client.get("/openapi.json").json()
        for route in (
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/sync",
            "/api/v1/operations/{op_id}",
            "/api/v1/resources",
            "/api/v1/resources/{kind}/{name}",
            "/api/v1/plan",
            "/api/v1/webhooks/{source}",
            "/api/v1/events/{provider}",
        ):
            assert route in spec["paths"], route


def test_first_cycle_progress_is_reported_while_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = declare(tmp_path, repo_files(6, latency="0.6s"))
    settings = settings_for(bare, tmp_path / "state")
    with running(settings, monkeypatch) as api:
        op = api.client.post("/api/v1/sync").json()["id"]
        # The startup cycle is running: this sync waits for it as its one follow-up.
        assert api.client.get(f"/api/v1/operations/{op}").json()["phase"] == "pending"
        assert api.operation(op)["phase"] == "succeeded"


def test_mutating_routes_need_the_token_and_reads_open_by_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = declare(tmp_path, repo_files(1))
    with running(settings_for(bare, tmp_path / "state"), monkeypatch) as api:
        anonymous = httpx.Client(base_url=api.url, timeout=10)
        wrong = httpx.Client(base_url=api.url, headers={"Authorization": "Bearer nope"})
        cycles = len(api.scheduler.operations)
        assert anonymous.post("/api/v1/sync").status_code == 401
        assert wrong.post("/api/v1/sync").status_code == 401
        assert (
            anonymous.post("/api/v1/events/sim", json={"resource": "Machine/m00"}).status_code
            == 401
        )
        assert len(api.scheduler.operations) == cycles
        assert anonymous.get("/api/v1/resources").status_code == 401
        assert anonymous.get("/api/v1/plan").status_code == 401
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
        anonymous.close()
        wrong.close()

    state = tmp_path / "state2"
    with running(settings_for(bare, state, api_read_open=True), monkeypatch) as api:
        anonymous = httpx.Client(base_url=api.url, timeout=10)
        assert anonymous.get("/api/v1/resources").status_code == 200
        assert anonymous.post("/api/v1/sync").status_code == 401
        anonymous.close()


def test_without_a_configured_token_nothing_mutating_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = declare(tmp_path, repo_files(1))
    with running(settings_for(bare, tmp_path / "state", api_token=None), monkeypatch) as api:
        answer = api.client.post("/api/v1/sync")
        assert answer.status_code == 401
        assert "no API token" in answer.json()["detail"]
