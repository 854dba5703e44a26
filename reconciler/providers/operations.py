"""Provider calls as the executor's task callbacks: an action run to completion, one observe.

Sits between execute (whose provider and wait-for tasks take
``provider_action(action, args, idempotency_key)``, ``observe()`` and
``cancel_operation()`` callbacks, see `reconciler.execute.context`) and a
`Provider`. "200 OK is not request complete": `run_action` starts the action,
reports the acknowledgement, and polls the operation until it is done;
`cancel_operation` asks the provider to stop one a task gave up on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from reconciler.errors import PermanentError, TemporaryError
from reconciler.providers.base import (
    ActionRequest,
    Observation,
    OperationHandle,
    OperationPhase,
    Provider,
    ResourceRef,
)


async def run_action(
    provider: Provider,
    request: ActionRequest,
    *,
    operation_id: str | None = None,
    on_acknowledged: Callable[[str], object] | None = None,
    poll_interval: float = 0.05,
    max_poll_interval: float = 2.0,
    min_poll_interval: float = 0.005,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Start `request` (or resume polling `operation_id` from the journal) until done.

    Returns ``{"operationId", "phase", "message", "result"}`` when the operation
    succeeded; raises `PermanentError` when it failed or was cancelled. Errors of
    `start` and `poll` pass through (`TemporaryError` is retried by the caller with
    the same idempotency key, which never starts the action twice). The caller's
    deadline bounds the polling (cancel this coroutine to stop it).

    When to poll next: while the reported progress advances, at the time its rate
    since the first poll says the operation will be done (within
    [`min_poll_interval`, `max_poll_interval`]; each estimate that proves early
    doubles that lower bound): it is seen done moments after it is, in about
    three polls. Without progress to go by, or when it stalls, polls start
    `poll_interval` apart and back off by half each time up to `max_poll_interval`.
    """
    if operation_id is None:
        handle = await provider.start(request)
    else:
        handle = OperationHandle(
            provider.name, operation_id, request.idempotency_key, request.key, request.action
        )
    first: tuple[float, float] | None = None  # (when, progress) of the first poll
    last_progress, floor = 0.0, min_poll_interval
    if on_acknowledged is not None:
        on_acknowledged(handle.operation_id)
    while True:
        status = await provider.poll(handle)
        if status.phase is OperationPhase.SUCCEEDED:
            return {
                "operationId": handle.operation_id,
                "phase": status.phase.value,
                "message": status.message,
                "result": dict(status.result),
            }
        if status.phase.done:
            why = status.message or status.phase.value
            raise PermanentError(
                f"{request.action} on {request.key} {status.phase.value}: {why} "
                f"(operation {handle.operation_id})"
            )
        now, progress = clock(), min(max(status.progress, 0.0), 1.0)
        if first is None:
            first = (now, progress)
        if progress > last_progress and progress > first[1] and now - first[0] > 0:
            remaining = (1.0 - progress) * (now - first[0]) / (progress - first[1])
            delay = min(max(remaining * 1.02 + 0.001, floor), max_poll_interval)
            floor = min(floor * 2, max_poll_interval)  # each missed estimate trusts less
        else:  # no progress to go by, or it stalled: back off
            delay = poll_interval
            poll_interval = min(poll_interval * 1.5, max_poll_interval)
        last_progress = progress
        await sleep(delay)


CANCEL_TIMEOUT = 30.0
"""How long a provider's `cancel` may take before the caller stops waiting for it."""


async def cancel_operation(
    provider: Provider, handle: OperationHandle, *, timeout: float = CANCEL_TIMEOUT
) -> str:
    """Ask `provider` to stop an operation the caller gives up on (its deadline passed);
    what became of it, in words for a task log. Never raises but for cancellation."""
    what = f"operation {handle.operation_id} ({handle.action} on {handle.key})"
    try:
        async with asyncio.timeout(timeout):
            cancelled = await provider.cancel(handle)
    except TimeoutError:
        return f"provider {provider.name} did not answer the cancel of {what} within {timeout:g}s"
    except Exception as exc:  # the provider's own words, whatever it raised
        return f"provider {provider.name} could not cancel {what}: {exc}"
    if cancelled:
        return f"{what} cancelled through provider {provider.name}"
    return f"provider {provider.name} cannot cancel {what}: it may still complete"


async def observe_one(provider: Provider, ref: ResourceRef) -> Mapping[str, Any]:
    """The observed fields of one resource (empty when it does not exist).

    An unknown observation is a `TemporaryError`: the caller polls again later.
    """
    result = (await provider.observe([ref])).get(ref.key)
    if isinstance(result, Observation):
        return result.fields if result.exists else {}
    reason = getattr(result, "reason", "not reported")
    raise TemporaryError(f"{ref.key} could not be observed: {reason}")
