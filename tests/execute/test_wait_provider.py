"""The wait-for and provider runners, with real callbacks (no network needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from reconciler.errors import TemporaryError
from reconciler.execute import run_task

from .conftest import CANARY, assert_no_canary, make_ctx, task


def observer(*states: dict[str, Any]):  # type: ignore[no-untyped-def]
    seen: list[int] = []

    async def observe() -> dict[str, Any]:
        seen.append(1)
        return states[min(len(seen), len(states)) - 1]

    observe.seen = seen  # type: ignore[attr-defined]
    return observe


def test_wait_for_until_condition_holds() -> None:
    observe = observer(
        {"power": "off"}, {"power": "off"}, {"power": "on", "os": {"name": "ubuntu"}}
    )
    t = task(
        type="wait-for",
        condition={"field": "os.name", "equals": ["${params.os}"]},
        interval=0.01,
        retry={"attempts": 1},
        timeout=5,
    )
    result = asyncio.run(run_task(t, make_ctx(observe=observe)))
    assert result.ok, result.message
    assert result.outputs == {"field": "os.name", "value": "ubuntu"}
    assert len(observe.seen) == 3  # type: ignore[attr-defined]
    assert result.attempts == 1  # waiting consumed no attempt


def test_wait_for_exists() -> None:
    t = task(type="wait-for", condition={"field": "ip", "exists": True}, interval=0.01)
    result = asyncio.run(run_task(t, make_ctx(observe=observer({}, {"ip": "10.0.0.1"}))))
    assert result.ok and result.outputs["value"] == "10.0.0.1"


def test_wait_for_deadline_reports_last_observed() -> None:
    t = task(
        type="wait-for", condition={"field": "power", "equals": ["on"]}, interval=0.05, timeout=0.5
    )
    result = asyncio.run(run_task(t, make_ctx(observe=observer({"power": "off"}))))
    assert not result.ok
    assert (
        result.message
        == 'condition power in ["on"] not met within 0.5s; last observed: power="off"'
    )


def test_provider_action_retried_with_the_same_key() -> None:
    calls: list[tuple[str, dict[str, Any], str]] = []

    async def provider_action(action: str, args: dict[str, Any], key: str) -> dict[str, Any]:
        calls.append((action, args, key))
        if len(calls) == 1:
            raise TemporaryError("BMC busy", retry_after=0.01)
        return {"operationId": "op-7", "state": "done", "echo": args["password"]}

    t = task(
        type="provider",
        action="install-os",
        args={"image": "${params.os}", "password": "${params.token}", "host": "${resource.name}"},
        retry={"attempts": 3, "initialBackoff": 0.01},
    )
    ctx = make_ctx(provider_action=provider_action)
    result = asyncio.run(run_task(t, ctx))
    assert result.ok, result.message
    assert result.attempts == 2 and result.operation_id == "op-7"
    assert [c[2] for c in calls] == [ctx.idempotency_key] * 2
    assert calls[0][1] == {"image": "ubuntu", "password": CANARY, "host": "m1"}
    assert result.outputs["echo"] == "***"
    assert_no_canary(result.to_json())


def test_provider_without_callback_fails_cleanly() -> None:
    result = asyncio.run(run_task(task(type="provider", action="power-on"), make_ctx()))
    assert not result.ok and "provider_action" in result.message


def test_deadline_from_context_wins_over_task_timeout() -> None:
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        t = task(type="wait-for", condition={"field": "x", "exists": True}, interval=0.02)
        ctx = make_ctx(observe=observer({}), deadline=loop.time() + 0.3)
        return await run_task(t, ctx)

    result = asyncio.run(main())
    assert not result.ok and "not met within 0.3s" in result.message
