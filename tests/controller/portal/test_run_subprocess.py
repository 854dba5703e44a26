"""The portal through a real `reconciler run` subprocess configured from the environment.

A request becomes a pull request recorded by the local fake forge (GitHub cannot run
here: see `tests.controller.portal.test_forge`), with `RECONCILER_FORGE*` and
`RECONCILER_PLAN_BRANCHES` read from the environment only; and a request whose
pipeline fails after its merge ends `failed`, with the failure's stage, task and
error in `GET /api/v1/requests/{id}`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controller.portal.conftest import REQUEST
from tests.controller.portal.run_support import BURN_ERROR, run_portal

pytestmark = pytest.mark.slow

FAILING = {
    **REQUEST,
    "name": "db-01",
    "pipeline": "burn",
    "profiles": [],
    "inputs": {"os": "ubuntu-24.04"},
    "reason": "A database server",
}


def test_environment_configured_run_opens_a_pull_request_and_reports_a_failure(
    tmp_path: Path,
) -> None:
    with run_portal(tmp_path) as portal, portal.client() as client:
        answer = client.post("/api/v1/requests", json=REQUEST)
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["id"]
        branch = f"request/{request_id}"

        # RECONCILER_PLAN_BRANCHES=request/*: the branch is planned; RECONCILER_FORGE=github:
        # a pull request is opened, with that plan as its description.
        planned = portal.wait_phase(request_id, "planned")
        linked = portal.wait_for(
            lambda: client.get(f"/api/v1/requests/{request_id}").json().get("pullRequest"),
            "the pull request",
        )
        assert linked == {"number": 7, "url": "https://github.example/acme/infra/pull/7",
                          "shown": planned["plan"]["hash"]}  # fmt: skip
        (post,) = [c for c in portal.forge.calls if c["method"] == "POST"]
        assert post["path"] == "/repos/acme/infra/pulls"
        assert post["headers"]["Authorization"] == "Bearer forge-token-0123456789"
        assert post["body"]["head"] == branch and post["body"]["base"] == "main"
        assert "+ Machine/web-07  create: install-os" in post["body"]["body"]

        # A request whose pipeline fails after the merge: `failed`, with where and why.
        failing = client.post("/api/v1/requests", json=FAILING)
        assert failing.status_code == 202, failing.text
        failing_id = failing.json()["id"]
        portal.wait_phase(failing_id, "planned")
        portal.merge(f"request/{failing_id}")
        portal.sync()
        failed = portal.wait_phase(failing_id, "failed", "ready")
        assert failed["phase"] == "failed", failed
        assert failed["failure"]["stage"] == "burn-in"
        assert failed["failure"]["task"] == "stress-disks"
        assert BURN_ERROR in failed["failure"]["error"]
        assert failed["progress"]["resourcePhase"] == "Failed"
        assert [h["phase"] for h in failed["history"]] == [
            "branch-pushed",
            "planned",
            "merged",
            "provisioning",
            "failed",
        ]
        assert failed["terminal"] is False  # a retry that succeeds still makes it ready
