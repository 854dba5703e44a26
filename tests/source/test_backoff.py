"""Backoff and retry: pure, no servers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import PermanentError, TemporaryError
from reconciler.source import Backoff, retry


@given(attempt=st.integers(min_value=1, max_value=200), seed=st.integers(0, 2**32))
def test_delay_is_bounded_and_jittered(attempt: int, seed: int) -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=60.0, jitter=0.5)
    raw = min(60.0, 2.0 ** (attempt - 1))
    delay = backoff.delay(attempt, random.Random(seed))
    assert raw * 0.5 <= delay <= raw <= 60.0


def test_retry_retries_temporary_errors_only() -> None:
    slept: list[float] = []
    calls = iter([TemporaryError("down"), TemporaryError("down", retry_after=7.0), "ok"])

    def call() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    rng = random.Random(1)
    assert retry(call, attempts=3, backoff=Backoff(base=2.0), sleep=slept.append, rng=rng) == "ok"
    assert len(slept) == 2 and 1.0 <= slept[0] <= 2.0 and slept[1] == 7.0

    def refused() -> None:
        raise PermanentError("authentication refused")

    slept.clear()
    with pytest.raises(PermanentError):
        retry(refused, attempts=5, sleep=slept.append)
    assert slept == []

    def always_down() -> None:
        raise TemporaryError("down")

    with pytest.raises(TemporaryError):
        retry(always_down, attempts=3, sleep=slept.append)
    assert len(slept) == 2
