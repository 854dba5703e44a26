"""`apply`'s exit codes, the README's table: the pure rule, then each code through the CLI.

The rule (`commands.apply_exit_code`) is checked on hand-made cycle results; each code
is then produced by a real `reconciler apply` subprocess against a declared
repository made for it (the simulator, or an HTTP provider at a closed port for an
observation that fails), and the status branch is read to see what the code said.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from reconciler.cli.commands import apply_exit_code
from reconciler.controller.controller import CycleResult
from reconciler.execute.engine import ExecutionResult, ResourceOutcome
from reconciler.model.status import ResourceStatus
from reconciler.source import SourceResult
from reconciler.source.declared import Stale
from reconciler.source.mirror import Revision
from tests.conftest import BASE_FILES
from tests.e2e.support import Fleet

REVISION = Revision("a" * 40, "A", "a@example.com", "declare", datetime(2026, 1, 1, tzinfo=UTC))


def result(*phases: str, **fields: object) -> CycleResult:
    statuses = {
        f"Machine/m{i}": ResourceStatus(kind="Machine", name=f"m{i}", phase=phase)  # type: ignore[arg-type]
        for i, phase in enumerate(phases)
    }
    source = fields.pop("source", SourceResult(revision=REVISION, load=None, head=REVISION))
    return CycleResult(source=source, statuses=statuses, **fields)  # type: ignore[arg-type]


def execution(*outcomes: tuple[str, str]) -> ExecutionResult:
    return ExecutionResult(
        "e",
        "h",
        {k: ResourceOutcome(key=k, operation="create", result=r) for k, r in outcomes},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("phases", "code"),
    [
        (("Ready", "Ready"), 0),
        (("Ready", "Drifted"), 0),  # drift reported with selfHeal off is what was asked
        ((), 0),
        (("Ready", "Failed"), 1),
        (("Ready", "Unknown"), 1),
        (("Stalled", "Unknown"), 1),  # a failure outranks a wait
        (("Ready", "Stalled"), 2),
        (("Ready", "Pending"), 2),
        (("Provisioning",), 2),
    ],
)
def test_exit_code_from_phases(phases: tuple[str, ...], code: int) -> None:
    assert apply_exit_code(result(*phases)) == code


def test_exit_code_when_the_head_was_not_applied_or_written() -> None:
    unreachable = SourceResult(
        revision=None, load=None, head=None, stale=Stale("RemoteUnavailable", "down")
    )
    assert apply_exit_code(result(source=unreachable)) == 1
    stale = SourceResult(
        revision=REVISION, load=None, head=None, stale=Stale("ValidationFailed", "bad")
    )
    assert apply_exit_code(result("Ready", source=stale)) == 1
    assert apply_exit_code(result("Ready", write_error="push refused")) == 1


def test_exit_code_from_executions() -> None:
    assert apply_exit_code(result("Ready", execution=execution(("Machine/x", "failed")))) == 1
    assert apply_exit_code(result("Ready", resumed=execution(("Machine/x", "failed")))) == 1
    # An orphan's decommission outside a change window has no status of its own.
    assert apply_exit_code(result("Ready", execution=execution(("Machine/x", "skipped")))) == 2
    assert apply_exit_code(result("Ready", execution=execution(("Machine/x", "succeeded")))) == 0


# --- through the CLI ---------------------------------------------------------------------


def tip_statuses(fleet: Fleet) -> dict[str, dict[str, Any]]:
    """The machines' status files on the status branch's tip."""
    repo = pygit2.Repository(str(fleet.bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    machines = tip.tree["status"] / "Machine"  # type: ignore[operator]
    return {
        f"Machine/{entry.name.removesuffix('.yaml')}": yaml.safe_load(repo[entry.id].data)
        for entry in machines
    }


def last_statuses(fleet: Fleet) -> dict[str, str]:
    return {key: status["phase"] for key, status in tip_statuses(fleet).items()}


def test_apply_exits_0_when_every_resource_is_ready(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    done = fleet.run("apply")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(last_statuses(fleet).values()) == {"Ready"}


def test_apply_exits_1_when_a_task_fails(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["providers.yaml"] = files["providers.yaml"].replace(
        "spec: {type: simulator}", "spec: {type: simulator, settings: {failureRate: 1.0}}"
    )
    fleet = Fleet.create(tmp_path, files)
    done = fleet.run("apply")
    assert done.returncode == 1, done.stdout + done.stderr
    assert last_statuses(fleet)["Machine/m1"] == "Failed"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_apply_exits_1_when_an_observation_fails(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["providers.yaml"] = f"""\
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: sim}}
spec:
  type: http
  endpoint: http://127.0.0.1:{closed_port()}
  settings:
    observe: {{url: "/machines/{{name}}", select: {{params.os: $.os, params.app: $.app}}}}
    maxRetries: 0
    timeout: 2s
"""
    fleet = Fleet.create(tmp_path, files)
    done = fleet.run("apply")
    assert done.returncode == 1, done.stdout + done.stderr
    for status in tip_statuses(fleet).values():
        assert status["phase"] == "Unknown"
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("Unknown", "ObservationFailed")
        assert "All connection attempts failed" in ready["message"]


def test_apply_exits_1_when_the_repository_is_unreachable(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    done = fleet.run("--repo", str(tmp_path / "no-such.git"), "apply")
    assert done.returncode == 1, done.stdout + done.stderr


def test_apply_exits_2_when_resources_wait_for_approval(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["policy.yaml"] = """\
apiVersion: reconciler/v1
kind: Policy
metadata: {name: policy}
spec:
  protected: [{name: Machine/m2}]
  approvals: {required: true, reviewers: [{paths: ["**"], names: ["A <a@example.com>"]}]}
"""
    fleet = Fleet.create(tmp_path, files)
    done = fleet.run("apply")
    assert done.returncode == 2, done.stdout + done.stderr
    assert last_statuses(fleet) == {"Machine/m1": "Ready", "Machine/m2": "Stalled"}


def test_exit_code_of_an_unknown_observation_in_the_plan() -> None:
    from reconciler.plan.plan import Operation, Plan, PlannedAction, PlanPolicy, Summary, Wave

    unknown = PlannedAction(
        key="Machine/m0",
        kind="Machine",
        name="m0",
        provider="sim",
        operation=Operation.UNKNOWN,
        blocked="observation unknown: sim: down",
    )
    plan = Plan.build(
        revision=REVISION.sha,
        policy=PlanPolicy(prune=False, self_heal=False, max_destructive_actions=1),
        waves=[Wave(number=1, actions=(unknown,))],
        summary=Summary(unknown=1, blocked=1),
    )
    assert apply_exit_code(result("Stalled", plan=plan)) == 1
