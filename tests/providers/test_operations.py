"""run_action and observe_one: the simulator behind the executor's task callbacks."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.errors import PermanentError, TemporaryError
from reconciler.providers.base import ActionRequest, ObservationUnknown, ResourceRef
from reconciler.providers.operations import observe_one, run_action
from reconciler.providers.simulator import SimulatorProvider

REF = ResourceRef("Machine", "m1", "Machine/m1", {"params": {}}, {"os": "rhel-9"})


class Clock:
    now = 5_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_runs_an_action_to_completion_and_resumes_by_operation_id(tmp_path):
    clock = Clock()
    sim = SimulatorProvider.open(tmp_path, clock=clock, latency=10)
    acked: list[str] = []
    request = ActionRequest("install-os", REF, "idem-1")
    result = asyncio.run(run_action(sim, request, on_acknowledged=acked.append, sleep=clock.sleep))
    assert result["phase"] == "succeeded" and acked == [result["operationId"]]
    assert asyncio.run(observe_one(sim, REF))["params"]["os"] == "rhel-9"
    again = asyncio.run(
        run_action(sim, request, operation_id=result["operationId"], sleep=clock.sleep)
    )
    assert again["operationId"] == result["operationId"]
    assert [e["event"] for e in sim.action_log()] == ["started", "succeeded"]


def test_failed_operation_is_permanent(tmp_path):
    clock = Clock()
    sim = SimulatorProvider.open(tmp_path, clock=clock, latency=1, failureRate=1.0)
    with pytest.raises(PermanentError, match="install-os on Machine/m1 failed: simulated failure"):
        asyncio.run(run_action(sim, ActionRequest("install-os", REF, "k"), sleep=clock.sleep))


def test_observe_one_absent_and_unknown(tmp_path):
    sim = SimulatorProvider.open(tmp_path)
    assert asyncio.run(observe_one(sim, REF)) == {}

    class Down:
        name = "down"

        async def observe(self, refs):
            return {r.key: ObservationUnknown(r.key, "BMC unreachable") for r in refs}

    with pytest.raises(TemporaryError, match="BMC unreachable"):
        asyncio.run(observe_one(Down(), REF))  # type: ignore[arg-type]
