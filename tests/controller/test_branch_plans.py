"""Watched-branch plans: the fleet observed once a cycle, a branch planned again only when
its key (branch head, base head, observed generation) moved.

A real controller (in-process, the same `Controller` `reconciler run` drives) over a
bare Git repository with two `request/*` branches and the simulator; the plan files
are read back from the status branch it commits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pygit2

from reconciler.controller.branch_plans import delta, merged
from reconciler.controller.controller import Controller
from reconciler.controller.cycle import FULL
from reconciler.load.load import load_files
from reconciler.observe.observe import ObservedState
from reconciler.providers.base import Observation
from reconciler.providers.simulator import SimulatorProvider
from tests.controller.server.conftest import declare, repo_files, settings_for
from tests.repos import commit_tree

MACHINES = 10


def branch(bare: Path, name: str, files: dict[str, str], message: str) -> str:
    """A commit holding `files` on `refs/heads/<name>`, its parent main (or the branch)."""
    return commit_tree(bare, files, message, branch=name)


def plan_files(bare: Path) -> dict[str, bytes]:
    repo = pygit2.Repository(str(bare))
    tip = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit)
    plans = repo[tip.tree["plans"].id]
    found = {}
    for entry in repo[plans["request"].id]:
        found[entry.name] = repo[entry.id].data
    return found


def test_branch_plans_observe_the_fleet_once_and_are_reused_until_their_key_moves(
    tmp_path: Path,
) -> None:
    base = repo_files(MACHINES)
    bare = declare(tmp_path, base)
    rhel = repo_files(MACHINES)
    rhel["machines.yaml"] = rhel["machines.yaml"].replace("os: ubuntu", "os: rhel", 1)
    branch(bare, "request/rhel-m00", rhel, "m00 on RHEL")
    branch(bare, "request/grow", repo_files(MACHINES + 1), "One more machine")
    state = tmp_path / "state"
    settings = settings_for(bare, state, plan_branches="request/*")

    async def cycles() -> list[tuple[int, int, dict[str, bytes]]]:
        seen = []
        with Controller(settings) as controller:
            plans = controller.branch_plans

            async def cycle() -> None:
                before = (plans.planned, plans.observed_resources)
                await controller.reconcile(FULL)
                counts = (plans.planned - before[0], plans.observed_resources - before[1])
                seen.append((*counts, plan_files(bare)))

            await cycle()  # the fleet is created; both branches planned
            await cycle()  # what the first cycle applied is reconciled: both planned again
            await cycle()  # nothing moved: both plans reused
            branch(bare, "request/grow", repo_files(MACHINES + 2), "Two more machines")
            await cycle()  # one branch moved: it alone is planned again
            sim = SimulatorProvider.open(state, name="sim", repository=controller.repository)
            sim.drift("Machine/m05", "params.os", "debian")
            await cycle()  # something observed changed: both planned again
        return seen

    first, settled, same, moved, drifted = asyncio.run(cycles())
    # Each cycle observes the fleet once, plus what each branch declares differently
    # (m00 with another os; the new machines): never the fleet once per branch.
    assert first[:2] == (2, MACHINES + 1 + 1)
    assert settled[:2] == (2, MACHINES + 1 + 1)
    assert same[:2] == (0, MACHINES + 1 + 1) and same[2] == settled[2]
    assert moved[:2] == (1, MACHINES + 1 + 2)
    assert moved[2]["rhel-m00.md"] == same[2]["rhel-m00.md"]
    assert b"Machine/m11" in moved[2]["grow.md"] and b"Machine/m11" not in first[2]["grow.md"]
    assert drifted[:2] == (2, MACHINES + 1 + 2)


DOCS = repo_files(2)


def test_a_delta_is_what_a_branch_declares_differently() -> None:
    def desired(files: dict[str, str]):  # type: ignore[no-untyped-def]
        loaded = load_files({k: v.encode() for k, v in files.items()}, revision="x")
        assert loaded.desired is not None
        return loaded.desired

    base = desired(DOCS)
    assert delta(base, base).resources == {}
    changed = dict(DOCS, **{"machines.yaml": DOCS["machines.yaml"].replace("SN01", "SN99")})
    assert set(delta(base, desired(changed)).resources) == {"Machine/m01"}
    other_provider = dict(DOCS, **{"providers.yaml": DOCS["providers.yaml"].replace("50", "5")})
    assert set(delta(base, desired(other_provider)).resources) == {"Machine/m00", "Machine/m01"}
    assert set(delta(base, desired(repo_files(3))).resources) == {"Machine/m02"}

    fleet = ObservedState({"a": Observation("a", True), "b": Observation("b", True)})
    own = ObservedState({"b": Observation("b", False)}, unknown_providers={"p": "down"})
    both = merged(fleet, own)
    assert both.observations["b"].exists is False and both.observations["a"].exists is True
    assert both.unknown_providers == {"p": "down"}
