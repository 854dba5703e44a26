"""The sample repository against a fresh simulator: all to create; applied: in sync; drift shows.

The apply here is a minimal stand-in for the executor (provider tasks only, in stage
order, with `${params.NAME}` substituted), enough to prove that the simulator
converges every field the sample's stages declare they converge.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from reconciler.load.desired import TASK_POINTS, Desired
from reconciler.load.load import load_directory
from reconciler.observe.observe import observe, resource_ref
from reconciler.plan.gates import plan_values
from reconciler.plan.plan import Operation, Plan
from reconciler.plan.render import render_text
from reconciler.providers.base import ActionRequest, OperationPhase
from reconciler.providers.simulator import SimulatorProvider
from tests import plan_values as pv

SAMPLE = Path(__file__).resolve().parents[2] / "sample-repo"
PARAM = re.compile(r"\$\{params\.([A-Za-z0-9_]+)\}")


class Clock:
    now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def substitute(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = PARAM.fullmatch(value)
        if whole:
            return params.get(whole.group(1))
        return PARAM.sub(lambda m: str(params.get(m.group(1), "")), value)
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    return value


def apply(plan: Plan, desired: Desired, sim: SimulatorProvider, clock: Clock) -> None:
    for action in plan.actions:
        if not action.runnable:
            continue
        resource = desired.resources[action.key]
        stages = {s.name: s for s in resource.stages}
        for stage_name in action.stages:
            stage = stages[stage_name]
            for point in TASK_POINTS:
                for task in stage.tasks[point]:
                    if task.type != "provider":
                        continue
                    request = ActionRequest(
                        action=task.action,
                        resource=resource_ref(resource),
                        idempotency_key=f"{plan.content_hash}/{action.key}/{stage_name}/{task.name}",
                        args=substitute(dict(task.args), dict(stage.params)),
                    )
                    handle = asyncio.run(sim.start(request))
                    clock.now += 60
                    assert asyncio.run(sim.poll(handle)).phase is OperationPhase.SUCCEEDED


@pytest.fixture
def sample(tmp_path):
    result = load_directory(SAMPLE)
    assert result.ok, result.diagnostics
    desired = result.desired
    clock = Clock()
    (name,) = [n for n, p in desired.providers.items() if p.spec.type == "simulator"]
    sim = SimulatorProvider.open(tmp_path, name=name, clock=clock, latency=30)
    assert {r.provider for r in desired.resources.values()} == {name}
    return desired, sim, clock


def test_sample_repo_plans_create_then_in_sync_then_drift(sample):
    desired, sim, clock = sample
    providers = {sim.name: sim}

    seen = asyncio.run(observe(desired, providers))
    first = plan_values(desired, seen)
    assert first.summary.create == len(desired.resources) > 0
    assert {a.operation for a in first.actions} == {Operation.CREATE}
    assert first.exit_code == 2
    text = render_text(first)
    assert "+ Machine/r01-node01  create: discover → inventory" in text

    apply(first, desired, sim, clock)
    last = {key: pv.record(r, revision=desired.revision) for key, r in desired.resources.items()}
    seen = asyncio.run(observe(desired, providers, previous=seen.existing))
    settled = plan_values(desired, seen, last_applied=last)
    assert settled.in_sync, render_text(settled)
    assert settled.exit_code == 0

    sim.drift("Machine/r01-node02", "params.os", "esxi-8")
    seen = asyncio.run(observe(desired, providers, previous=seen.existing))
    drifted = plan_values(desired, seen, last_applied=last)
    (action,) = drifted.actions
    assert (action.key, action.operation) == ("Machine/r01-node02", Operation.REPORT_DRIFT)
    assert action.changes[0].path == "params.os" and action.changes[0].observed == "esxi-8"
    assert drifted.exit_code == 2
