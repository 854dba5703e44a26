"""with_retries on a fake clock: backoff, Retry-After, polling, attempts and deadline."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import PermanentError, TemporaryError, WaitingError
from reconciler.execute.retry import GaveUp, retry_delay, with_retries
from reconciler.model.common import RetryPolicy


class FakeClock:
    """A clock that only moves when someone sleeps: no real waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def script(*steps: object):  # type: ignore[no-untyped-def]
    """An attempt function raising or returning the given steps in order."""
    queue = list(steps)
    calls = []

    async def fn() -> object:
        calls.append(1)
        step = queue.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def run(fn, retry: RetryPolicy, clock: FakeClock, deadline: float = 1000.0, rng=lambda: 1.0):  # type: ignore[no-untyped-def]
    return asyncio.run(
        with_retries(fn, retry, deadline=deadline, sleep=clock.sleep, rng=rng, clock=clock)
    )


POLICY = RetryPolicy(attempts=4, initial_backoff=1.0, max_backoff=3.0, multiplier=2.0)


def test_temporary_errors_back_off_exponentially_capped() -> None:
    clock = FakeClock()
    fn = script(TemporaryError("a"), TemporaryError("b"), TemporaryError("c"), "done")
    assert run(fn, POLICY, clock) == ("done", 4)
    assert clock.sleeps == [1.0, 2.0, 3.0]  # rng=1: the ceiling, capped by maxBackoff


def test_full_jitter_uses_rng() -> None:
    clock = FakeClock()
    fn = script(TemporaryError("a"), TemporaryError("b"), "ok")
    assert run(fn, POLICY, clock, rng=lambda: 0.25) == ("ok", 3)
    assert clock.sleeps == [0.25, 0.5]


def test_retry_after_is_a_floor() -> None:
    clock = FakeClock()
    fn = script(TemporaryError("429", retry_after=7.5), "ok")
    assert run(fn, POLICY, clock) == ("ok", 2)
    assert clock.sleeps == [7.5]


def test_attempts_exhausted() -> None:
    clock = FakeClock()
    fn = script(*[TemporaryError(f"e{i}") for i in range(4)], "never")
    with pytest.raises(GaveUp) as info:
        run(fn, POLICY, clock)
    assert (info.value.reason, info.value.attempts) == ("exhausted", 4)
    assert "gave up after 4 attempts: e3" in str(info.value)


def test_waiting_does_not_consume_attempts() -> None:
    clock = FakeClock()
    waits = [WaitingError("running", poll_after=0.5) for _ in range(10)]
    fn = script(TemporaryError("t"), *waits, "ok")
    assert run(fn, RetryPolicy(attempts=2, initial_backoff=1.0), clock) == ("ok", 2)
    assert clock.sleeps == [1.0] + [0.5] * 10


def test_permanent_stops_at_once() -> None:
    clock = FakeClock()
    fn = script(TemporaryError("t"), PermanentError("no"), "never")
    with pytest.raises(GaveUp) as info:
        run(fn, POLICY, clock)
    assert (info.value.reason, info.value.attempts, str(info.value)) == ("permanent", 2, "no")


def test_deadline_bounds_polling_and_backoff() -> None:
    clock = FakeClock()
    fn = script(*[WaitingError("running", poll_after=1.0) for _ in range(100)])
    with pytest.raises(GaveUp) as info:
        run(fn, POLICY, clock, deadline=5.5)
    assert info.value.reason == "deadline"
    assert clock.now <= 5.5 and len(fn.calls) == 6  # type: ignore[attr-defined]

    clock = FakeClock()
    fn = script(TemporaryError("slow down", retry_after=60.0), "never")
    with pytest.raises(GaveUp) as info:
        run(fn, POLICY, clock, deadline=10.0)
    assert info.value.reason == "deadline" and clock.sleeps == []  # no sleep in vain


@given(
    failures=st.integers(1, 30),
    initial=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 100.0),
    mult=st.floats(1.0, 5.0),
    r=st.floats(0.0, 1.0),
)
def test_backoff_never_exceeds_cap(
    failures: int, initial: float, cap: float, mult: float, r: float
) -> None:
    policy = RetryPolicy(initial_backoff=initial, max_backoff=cap, multiplier=mult)
    assert 0.0 <= retry_delay(policy, failures, lambda: r) <= cap
