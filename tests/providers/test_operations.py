"""run_action and observe_one: the simulator behind the executor's task callbacks."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.errors import PermanentError, TemporaryError
from reconciler.providers.base import (
    ActionRequest,
    ObservationUnknown,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    ResourceRef,
)
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


def test_polls_when_the_progress_rate_says_the_operation_is_done(tmp_path):
    """A 1 s operation with linear progress: seen done just after 1 s, in 3 polls
    (the backoff alone would take 7 polls and see it done at 1.04 s)."""
    clock = Clock()
    sim = SimulatorProvider.open(tmp_path, clock=clock, latency=1)
    polls: list[float] = []
    poll = sim.poll

    async def counted(handle):
        polls.append(clock.now)
        return await poll(handle)

    sim.poll = counted  # type: ignore[method-assign]
    began = clock.now
    request = ActionRequest("install-os", REF, "idem-rate")
    result = asyncio.run(run_action(sim, request, sleep=clock.sleep, clock=clock))
    assert result["phase"] == "succeeded"
    assert len(polls) == 3
    assert 1.0 <= clock.now - began < 1.03


def test_stalled_progress_backs_off_instead_of_polling_fast():
    """An operation stuck at 99 % is polled less and less often, up to the maximum."""
    clock = Clock()

    class Stuck:
        name = "stuck"
        polls = 0

        async def start(self, request):
            return OperationHandle("stuck", "op-1", request.idempotency_key, REF.key, "x")

        async def poll(self, handle):
            self.polls += 1
            if self.polls == 40:
                return OperationStatus("op-1", OperationPhase.SUCCEEDED, 1.0)
            return OperationStatus("op-1", OperationPhase.RUNNING, min(0.99, self.polls * 0.33))

    provider = Stuck()
    began = clock.now
    asyncio.run(
        run_action(provider, ActionRequest("x", REF, "k"), sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    )
    assert clock.now - began > 45  # backing off to one poll per 2 s, not 40 polls in 0.2 s
