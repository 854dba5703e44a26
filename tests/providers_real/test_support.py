"""The real providers' shared helpers: keyed locks, operation records, limits."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from reconciler.errors import PermanentError
from reconciler.providers.base import ActionRequest, OperationPhase, ResourceRef
from reconciler.providers.support import (
    Gate,
    KeyedLocks,
    OperationRecord,
    OperationStore,
    existing_operation,
    is_tls_failure,
)
from reconciler.secrets import REDACTOR


def test_keyed_locks_serialize_one_key_and_forget_it_afterwards() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(key: str, name: str, pause: float) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(pause)
            order.append(f"{name}-")

    async def run() -> None:
        await asyncio.gather(hold("k", "a", 0.05), hold("k", "b", 0), hold("other", "c", 0))

    asyncio.run(run())
    assert order.index("a-") < order.index("b+")  # same key: one after the other
    assert order.index("c+") < order.index("a-")  # another key does not wait
    assert len(locks) == 0


def test_operation_records_survive_reopening_and_refuse_a_reused_key(tmp_path: Path) -> None:
    REDACTOR.add("s3cr3t-value")
    store = OperationStore(tmp_path / "ops.db")
    record = OperationRecord(
        "op-1", "key-1", "Machine/a", "power-on", data={"note": "s3cr3t-value"}
    )
    store.put(record)
    store.finish(record, OperationPhase.SUCCEEDED, "done with s3cr3t-value", result={"power": "on"})
    store.close()

    again = OperationStore(tmp_path / "ops.db")
    found = again.by_idempotency_key("key-1")
    assert found is not None and found.phase is OperationPhase.SUCCEEDED
    assert found.status().result == {"power": "on"}
    assert "s3cr3t-value" not in found.message and found.data["note"] == "***"
    ref = ResourceRef("Machine", "a", "Machine/a")
    assert existing_operation(again, ActionRequest("power-on", ref, "key-1")) == found
    with pytest.raises(PermanentError, match="was used for power-on on Machine/a"):
        existing_operation(again, ActionRequest("power-off", ref, "key-1"))
    assert again.get("op-2") is None
    again.close()


def test_gate_spaces_calls_by_the_declared_rate() -> None:
    gate = Gate(concurrency=2, rate_per_second=20)

    async def run() -> float:
        began = time.monotonic()
        await asyncio.gather(*(gate.thread(lambda: None) for _ in range(5)))
        return time.monotonic() - began

    assert asyncio.run(run()) >= 0.19  # five calls at 20/s: four gaps of 50 ms


def test_gate_runs_as_many_blocking_calls_at_once_as_its_concurrency() -> None:
    # Blocking SDK calls (sushy, boto3) in the gate's own pool: asyncio's default executor
    # (min(32, CPUs + 4) threads) would leave some of them waiting, and the barrier break.
    size = (os.cpu_count() or 1) + 5 + 8
    gate = Gate(concurrency=size, rate_per_second=None, name="bmc")
    barrier = threading.Barrier(size, timeout=10)

    async def run() -> list[str]:
        return await asyncio.gather(
            *(gate.thread(lambda: (barrier.wait(), threading.current_thread().name)[1])
              for _ in range(size))
        )  # fmt: skip

    try:
        names = asyncio.run(run())
    finally:
        gate.close()
    assert len(set(names)) == size and all(n.startswith("provider-bmc") for n in names)


def test_tls_failures_are_recognised_through_the_cause_chain() -> None:
    try:
        try:
            raise OSError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
        except OSError as inner:
            raise RuntimeError("connection failed") from inner
    except RuntimeError as outer:
        assert is_tls_failure(outer)
    assert not is_tls_failure(RuntimeError("connection refused"))
