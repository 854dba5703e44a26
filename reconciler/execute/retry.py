"""Retries with backoff, polling and a deadline: how one task's attempts are paced.

Part of execute, under the runners. `with_retries` calls an attempt function until
it returns, and decides what happens after each typed error (`reconciler.errors`):

- `TemporaryError`: wait an exponentially growing, fully jittered delay
  (``rng() * min(maxBackoff, initialBackoff * multiplier ** (n - 1))``, but never
  less than the remote's ``retry_after``), then try again; this consumes an attempt.
- `WaitingError`: not a failure; try again after ``poll_after`` without consuming
  an attempt (how long-running operations are polled).
- `PermanentError` (or any other `ReconcilerError`): stop.

Every wait is bounded by the deadline: when the next try could not start before
it, we stop at once instead of sleeping in vain. Whatever stops the loop is raised
as `GaveUp`, which says why, how many attempts were used and what the last error was.
The clock and sleep are injectable, so tests run without real waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError, WaitingError
from reconciler.model.common import RetryPolicy

T = TypeVar("T")

GiveUpReason = Literal["permanent", "exhausted", "deadline"]


class GaveUp(PermanentError):
    """`with_retries` stopped without a result; `last` is the error that ended it."""

    def __init__(
        self, reason: GiveUpReason, *, attempts: int, last: ReconcilerError | None
    ) -> None:
        self.reason = reason
        self.attempts = attempts
        self.last = last
        text = str(last) if last is not None else "no attempt could start"
        if reason == "exhausted":
            text = f"gave up after {attempts} attempts: {text}"
        elif reason == "deadline" and not isinstance(last, WaitingError):
            text = f"deadline reached after {attempts} attempts: {text}"
        super().__init__(text)


def retry_delay(retry: RetryPolicy, failures: int, rng: Callable[[], float]) -> float:
    """Full-jitter delay after the `failures`-th consecutive temporary failure (1-based)."""
    ceiling = min(retry.max_backoff, retry.initial_backoff * retry.multiplier ** (failures - 1))
    return rng() * ceiling


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    retry: RetryPolicy,
    *,
    deadline: float,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    clock: Callable[[], float] = _loop_time,
) -> tuple[T, int]:
    """`fn`'s result and the attempts used (temporary failures + 1); raises `GaveUp`.

    `deadline` is on `clock`'s time line (by default the event loop's monotonic clock).
    `fn` itself is not interrupted here: bound it with ``asyncio.timeout_at(deadline)``.
    """
    attempts = 1
    last: ReconcilerError
    while True:
        consumed = False
        try:
            return await fn(), attempts
        except WaitingError as exc:
            delay, last = exc.poll_after, exc
        except TemporaryError as exc:
            if attempts >= retry.attempts:
                raise GaveUp("exhausted", attempts=attempts, last=exc) from exc
            delay = max(retry_delay(retry, attempts, rng), exc.retry_after or 0.0)
            last, consumed = exc, True
        except ReconcilerError as exc:
            raise GaveUp("permanent", attempts=attempts, last=exc) from exc
        if clock() + delay >= deadline:
            raise GaveUp("deadline", attempts=attempts, last=last) from last
        await sleep(delay)
        attempts += consumed
