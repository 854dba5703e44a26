"""Retry with bounded exponential backoff and jitter, for remotes that are down.

Used at the Git edge (`DeclaredSource` suggests when to try again; `retry` wraps
one call). Only `TemporaryError` is retried: a `PermanentError` (authentication
refused, unknown host key) fails at once, so a wrong password never turns into a
tight loop against the server.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from reconciler.errors import TemporaryError

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempt` (1-based): base * factor**(attempt-1), capped, jittered.

    Jitter is "equal jitter": the delay is drawn from [d * (1 - jitter), d], so
    many controllers that failed together do not retry together.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exp = max(attempt - 1, 0)
        raw = self.cap if exp >= 64 else min(self.cap, self.base * self.factor**exp)
        low = raw * (1.0 - self.jitter)
        return (rng or random).uniform(low, raw)


def retry(
    call: Callable[[], T],
    *,
    attempts: int = 4,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """`call()`, retried on TemporaryError up to `attempts` times in all; the last error raised.

    A `retry_after` hint on the error wins over the computed delay (still capped).
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TemporaryError as exc:
            if attempt == attempts:
                raise
            hint = exc.retry_after
            sleep(min(hint, backoff.cap) if hint is not None else backoff.delay(attempt, rng))
    raise AssertionError("unreachable")  # pragma: no cover
