"""Provider calls, timed: latency and errors by provider and operation, for metrics.

Sits between the registry (`open_provider`) and whoever calls a provider. A
`reconciler run` worker sets a sink for its own context (`provider_calls`); providers
opened in that context are wrapped so that each call of the Provider protocol
(observe, list_owned, start, poll, cancel, discover) reports (provider, operation, seconds,
failed) to it. With no sink (apply, plan, tests, the benchmark) providers are not
wrapped at all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

CallSink = Callable[[str, str, float, bool], None]
"""(provider name, operation, seconds, failed)."""

OPERATIONS = ("observe", "list_owned", "start", "poll", "cancel", "discover")

_sink: ContextVar[CallSink | None] = ContextVar("reconciler_provider_calls", default=None)


@contextlib.contextmanager
def provider_calls(sink: CallSink) -> Iterator[None]:
    """Providers opened inside report their calls to `sink`."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


class _Timed:
    """A provider whose protocol calls are timed; everything else is the provider's."""

    def __init__(self, provider: Any, name: str, sink: CallSink) -> None:
        self._provider = provider
        self._name = name
        self._sink = sink

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._provider, attribute)
        if attribute not in OPERATIONS:
            return value

        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.monotonic()
            failed = True
            try:
                answer = await value(*args, **kwargs)
                failed = False
                return answer
            finally:  # a timeout (cancellation) counts as an error too
                self._sink(self._name, attribute, time.monotonic() - began, failed)

        return timed


def instrumented(provider: Any, name: str) -> Any:
    """`provider` wrapped when a sink is set in this context, else itself."""
    sink = _sink.get()
    return provider if sink is None else _Timed(provider, name, sink)
