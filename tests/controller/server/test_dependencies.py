"""`dependsOn` means what it says, in the controller's cycles (real Git, the simulator).

A dependent never starts while what it depends on is not Ready: failed in an
earlier cycle and held in failure backoff by a scheduled cycle (so not part of
this plan), blocked, unknown. It stays in the plan, blocked with
`DependencyNotReady` naming the dependency, and runs in the first cycle after the
dependency is Ready. Asserted on the simulator's action log and the status branch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pygit2
import yaml

from reconciler.controller.controller import Controller
from reconciler.controller.cycle import AtHead
from reconciler.providers.simulator import SimulatorProvider

from .conftest import declare, repo_files, settings_for
from .test_incremental import started, status_commit, with_failing_check


def stalled_reason(bare: Path, name: str) -> tuple[str, str]:
    repo = pygit2.Repository(str(bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    status = yaml.safe_load(repo[tip.tree["status"]["Machine"][f"{name}.yaml"].id].data)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    return stalled["reason"], stalled["message"]


def test_a_dependent_waits_for_a_failed_dependency_held_in_backoff(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "m00").touch()  # m00's install-os fails while this flag exists
    files = repo_files(2)
    files["machines.yaml"] = files["machines.yaml"].replace(
        "name: m01}\nspec:\n", "name: m01}\nspec:\n  dependsOn: [m00]\n"
    )
    assert "dependsOn: [m00]" in files["machines.yaml"]
    with_failing_check(files, flags)
    bare = declare(tmp_path, files)
    state = tmp_path / "state"
    with Controller(settings_for(bare, state)) as controller:
        first = asyncio.run(controller.reconcile(AtHead(hold_failures=True)))
        assert first.statuses["Machine/m00"].phase == "Failed"
        assert first.statuses["Machine/m01"].phase == "Stalled"
        sim = SimulatorProvider.open(state, name="sim", repository="x")
        assert [k for k, _ in started(sim, 0)] == ["Machine/m00"]  # m01 never started

        # A scheduled cycle holds m00 (failure backoff): it is not in this plan. m01 is
        # not Ready either and is planned again; it must still wait.
        seen = len(sim.action_log())
        scheduled = asyncio.run(controller.reconcile(AtHead(hold_failures=True)))
        assert "Machine/m00" in scheduled.held
        assert started(sim, seen) == []
        reason, message = stalled_reason(bare, "m01")
        assert reason == "DependencyNotReady"
        assert message.startswith("dependency Machine/m00 is not Ready: its phase is Failed")
        (action,) = [a for a in scheduled.plan.actions if a.key == "Machine/m01"]
        assert action.blocked is not None and action.blocked.startswith("dependency Machine/m00")

        # Fixed: the next cycle a person asks for runs m00, then m01 after it.
        (flags / "m00").unlink()
        asked = asyncio.run(controller.reconcile(AtHead()))
        assert asked.ok, asked.statuses
        assert [k for k, _ in started(sim, seen)] == ["Machine/m00", "Machine/m01"]
        assert status_commit(bare)[1] == {"m00": "Ready", "m01": "Ready"}
