"""End to end: `reconciler run` never starts a pipeline whose secret cannot be resolved.

The repository of tests/e2e/test_secret_refs.py (one machine whose *last* stage
needs an unset variable, one that needs nothing missing) under a real `reconciler
run` process: after its first cycle the simulator's action log shows only the
plain machine's work, the journal has no task of the other, and the API says it is
Failed before its first stage, naming the reference. Once the variable is set in
the controller's environment (a restart, as an operator would fix it), the next
cycle starts its pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.controller import controller
from tests.e2e.support import Fleet
from tests.e2e.test_secret_refs import MISSING, repo

pytestmark = pytest.mark.slow


def test_run_does_not_start_a_pipeline_with_an_unresolvable_reference(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, repo())
    fleet.env.pop(MISSING, None)
    needed = "stage register, work task cmdb: auth.bearer"
    with controller(fleet, tmp_path) as api:
        line = api.wait_for_line("cycle failed")
        failed = api.client.get("/api/v1/resources/Machine/needs-token").json()
        plain = api.client.get("/api/v1/resources/Machine/plain").json()
    assert line["level"] == "error"
    assert any(f"env:{MISSING}" in error for error in line["errors"]), line
    started = [e["key"] for e in fleet.action_log() if e["event"] == "started"]
    assert started == ["Machine/plain"]  # nothing of needs-token ran, not even install-os
    assert not [t for t in fleet.journal_tasks() if t["resource"] == "Machine/needs-token"]
    assert plain["phase"] == "Ready"
    assert failed["phase"] == "Failed"
    assert failed["failure"]["error"] == (
        f"not started: secret reference env:{MISSING} cannot be resolved "
        f"(environment variable is not set); needed by Machine/needs-token ({needed})"
    )

    # Set, the reference resolves: the next controller starts the pipeline (the http
    # task then fails on its closed port, which proves it started).
    with controller(fleet, tmp_path, env={MISSING: "token-now-set-0123"}) as api:
        api.wait_for_line("cycle failed")
        again = api.client.get("/api/v1/resources/Machine/needs-token").json()
    started = [e["key"] for e in fleet.action_log() if e["event"] == "started"]
    assert "Machine/needs-token" in started
    assert "not started" not in again["failure"]["error"], again
