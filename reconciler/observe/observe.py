"""Observe: ask every provider, concurrently, what exists — step 3 of the flow.

Sits between load (the Desired set) and diff. One provider's failure never stops
the others, and never reads as "gone": resources of a provider that errors, times
out, or suddenly reports nothing where it reported resources before are
`ObservationUnknown`, and its ownership listing is left out (so nothing of it can
be found orphaned). Each provider's declared limits hold: at most
`limits.concurrency` calls in flight, at most `limits.ratePerSecond` calls started
per second.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.observe.values import ObservedState as ObservedState
from reconciler.providers import open_providers
from reconciler.providers.base import (
    Discovered,
    Observation,
    ObservationResult,
    ObservationUnknown,
    OwnedResource,
    Provider,
    ResourceRef,
)
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    from reconciler.load.desired import Desired, ResolvedResource

DEFAULT_BATCH = 500
DEFAULT_TIMEOUT = 120.0


def resource_ref(resource: ResolvedResource) -> ResourceRef:
    """The plain value a provider sees of a resolved resource."""
    return ResourceRef(
        kind=resource.kind,
        name=resource.name,
        key=resource.key,
        declared=resource.declared(),
        params=resource.params,  # resolved values are not mutated downstream: no copies
        labels=resource.labels,
    )


class RateLimiter:
    """At most `rate` starts per second, spaced evenly (None: unlimited)."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    async def acquire(self) -> None:
        if not self._interval:
            return
        now = self._clock() if self._clock else asyncio.get_running_loop().time()
        wait = self._next - now
        self._next = max(now, self._next) + self._interval
        if wait > 0:
            await self._sleep(wait)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "provider did not answer in time"
    return REDACTOR.text(f"{type(exc).__name__}: {exc}")


async def _observe_provider(
    name: str,
    provider: Provider,
    refs: Sequence[ResourceRef],
    *,
    concurrency: int,
    rate: float | None,
    batch_size: int,
    timeout: float,
    list_owned: bool = True,
) -> tuple[dict[str, ObservationResult], list[OwnedResource] | None, str | None]:
    """Observations of one provider's resources, its owned list (None: unknown, or not
    asked for), and why."""
    gate = asyncio.Semaphore(concurrency)
    limiter = RateLimiter(rate)

    async def call(coro_factory: Any) -> Any:
        async with gate:
            await limiter.acquire()
            return await asyncio.wait_for(coro_factory(), timeout)

    async def nothing_listed() -> None:
        return None

    batches = [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]
    results = await asyncio.gather(
        *(call(lambda b=batch: provider.observe(b)) for batch in batches),
        call(provider.list_owned) if list_owned else nothing_listed(),
        return_exceptions=True,
    )
    observations: dict[str, ObservationResult] = {}
    problem: str | None = None
    for batch, answer in zip(batches, results[:-1], strict=True):
        result = answer
        if not isinstance(answer, BaseException | Mapping):
            result = TypeError(f"observe answered a {type(answer).__name__}, not a mapping")
        if isinstance(result, BaseException):
            problem = _reason(result)
            for ref in batch:
                observations[ref.key] = ObservationUnknown(ref.key, f"{name}: {problem}")
            continue
        for ref in batch:
            got = result.get(ref.key)
            if isinstance(got, Observation | ObservationUnknown):
                observations[ref.key] = got
            else:
                observations[ref.key] = ObservationUnknown(
                    ref.key, f"{name}: provider did not report it"
                )
    listed = results[-1]
    owned: list[OwnedResource] | None
    if not list_owned:
        owned = None
    elif isinstance(listed, BaseException):
        owned = None
        problem = problem or f"listing owned resources failed: {_reason(listed)}"
    elif isinstance(listed, list | tuple):
        owned = [o for o in listed if isinstance(o, OwnedResource)]
        if len(owned) != len(listed):
            owned, problem = None, problem or "listing owned resources answered non-resources"
    else:
        owned = None
        problem = problem or f"listing owned resources answered a {type(listed).__name__}"
    return observations, owned, problem


async def observe(
    desired: Desired,
    providers: Mapping[str, Provider],
    *,
    previous: Mapping[str, Collection[str]] | None = None,
    unavailable: Mapping[str, str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    timeout: float = DEFAULT_TIMEOUT,
    list_owned: Collection[str] | None = None,
) -> ObservedState:
    """Observe every declared resource and list every provider's owned resources
    (only those of the providers named in `list_owned`, when given: a listing is a
    walk over everything a provider holds, which a plan of a few resources can skip).

    `providers` are open instances by Provider name (`reconciler.providers.open_providers`);
    `unavailable` names providers that could not be opened, with why. `previous` is
    the last `ObservedState.existing`: a provider that now reports none of the
    still-declared resources it reported existing before is treated as unknown (an
    API answering empty by mistake must not read as "everything is gone"). Resources
    removed from Git or decommissioned do not count, so pruning never trips it.
    """
    previous = previous or {}
    unknown: dict[str, str] = dict(unavailable or {})
    by_provider, observations = _refs_by_provider(desired, providers, unknown)
    names = sorted(by_provider)
    jobs = []
    for name in names:
        concurrency, rate = _limits(desired, name)
        jobs.append(
            _observe_provider(
                name,
                providers[name],
                by_provider[name],
                concurrency=concurrency,
                rate=rate,
                batch_size=batch_size,
                timeout=timeout,
                list_owned=list_owned is None or name in list_owned,
            )
        )
    outcomes = await asyncio.gather(*jobs)

    owned: dict[str, OwnedResource] = {}
    existing: dict[str, frozenset[str]] = {}
    for name, (seen, listed, problem) in zip(names, outcomes, strict=True):
        now = _reported_existing(seen)
        seen, problem = _believed(name, seen, problem, previous.get(name, ()))
        if problem is not None:
            unknown[name] = problem
            listed = None  # an untrusted provider's listing finds no orphans
        if listed is not None:
            owned.update(
                (o.key, o if o.provider == name else replace(o, provider=name)) for o in listed
            )
        observations.update(seen)
        # Keep the last trusted answer while a provider is unknown.
        existing[name] = now if problem is None else frozenset(previous.get(name, ()))
    return ObservedState(
        observations=dict(sorted(observations.items())),
        owned=dict(sorted(owned.items())),
        unknown_providers=dict(sorted(unknown.items())),
        existing=existing,
    )


def _refs_by_provider(
    desired: Desired, providers: Mapping[str, Provider], unknown: Mapping[str, str]
) -> tuple[dict[str, list[ResourceRef]], dict[str, ObservationResult]]:
    """The declared resources of each open provider, and the observations already known:
    a resource whose provider is not open is unknown, with why (from `unknown`)."""
    by_provider: dict[str, list[ResourceRef]] = {name: [] for name in providers}
    observations: dict[str, ObservationResult] = {}
    for key, resource in desired.resources.items():
        if resource.provider in providers:
            by_provider[resource.provider].append(resource_ref(resource))
        else:
            why = unknown.get(resource.provider, "provider is not available")
            observations[key] = ObservationUnknown(key, f"{resource.provider}: {why}")
    return by_provider, observations


def _limits(desired: Desired, name: str) -> tuple[int, float | None]:
    """A provider's declared limits: calls in flight, calls started per second (None:
    unlimited); 10 and unlimited when it declares none."""
    document = desired.providers.get(name)
    limits = document.spec.limits if document is not None else None
    return (limits.concurrency, limits.rate_per_second) if limits else (10, None)


def _reported_existing(seen: Mapping[str, ObservationResult]) -> frozenset[str]:
    """The keys a provider's answer says exist."""
    return frozenset(k for k, o in seen.items() if isinstance(o, Observation) and o.exists)


def _believed(
    name: str,
    seen: dict[str, ObservationResult],
    problem: str | None,
    before: Collection[str],
) -> tuple[dict[str, ObservationResult], str | None]:
    """A provider's observations as they are believed, and why it is unknown (None: it
    is trusted). `before` are the keys it reported existing last time."""
    before_seen = frozenset(before) & seen.keys()
    answered = any(isinstance(o, Observation) for o in seen.values())
    if problem is None and before_seen and answered and not _reported_existing(seen) & before_seen:
        # "Absent" answers are not believed; a resource it could not observe at all
        # keeps the provider's own reason (a BMC's 401 stays a 401).
        problem = f"reported none of the {len(before_seen)} resources it reported existing before"
        seen = {
            k: ObservationUnknown(k, f"{name}: {problem}") if isinstance(o, Observation) else o
            for k, o in seen.items()
        }
    elif problem is None and not answered and seen:
        first = next(iter(seen.values()))
        problem = getattr(first, "reason", "no answer").removeprefix(f"{name}: ")
    return seen, problem


SEEN_FILE = "observed-existing.json"
"""In the state directory: per provider, the keys it reported existing last time."""


def read_existing(state_dir: Path) -> dict[str, frozenset[str]]:
    """What `observe_desired` remembered, or nothing (missing or unreadable file).

    Deleting the file accepts a provider's empty answer as the truth.
    """
    try:
        data = json.loads((Path(state_dir) / SEEN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): frozenset(map(str, v)) for k, v in data.items() if isinstance(v, list)}


def write_existing(state_dir: Path, existing: Mapping[str, Collection[str]]) -> None:
    path = Path(state_dir) / SEEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data = {name: sorted(keys) for name, keys in sorted(existing.items())}
    tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(path)


async def observe_desired(
    desired: Desired,
    *,
    state_dir: Path,
    repository: str = "default",
    previous: Mapping[str, Collection[str]] | None = None,
    remember: bool = True,
) -> ObservedState:
    """Open every declared provider through the registry, observe, close them again.

    The one call `reconciler plan` and `apply` need; a provider that cannot be opened
    makes its resources unknown. With `remember` (and no explicit `previous`), what
    each provider reported existing is kept in the state directory between runs, so
    a provider that suddenly reports nothing is unknown, not "all gone".
    """
    if previous is None and remember:
        previous = read_existing(state_dir)
    providers, failed = open_providers(
        desired.providers, state_dir=Path(state_dir), repository=repository
    )
    try:
        seen = await observe(
            desired,
            providers,
            previous=previous,
            unavailable={name: REDACTOR.text(why) for name, why in failed.items()},
        )
    finally:
        for provider in providers.values():
            await provider.close()
    if remember:
        write_existing(state_dir, {**(previous or {}), **seen.existing})
    return seen


async def discover(
    desired: Desired,
    providers: Mapping[str, Provider],
    *,
    only: Collection[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[list[Discovered], dict[str, str]]:
    """Ask each provider (of `only`, when given) that can for what it sees undeclared
    (`Discovers`), concurrently; a provider that fails or times out is named with why,
    and the others still answer. Read-only: nothing discovered is ever acted on."""
    by_provider: dict[str, list[ResourceRef]] = {name: [] for name in providers}
    for resource in desired.resources.values():
        if resource.provider in by_provider:
            by_provider[resource.provider].append(resource_ref(resource))
    names = [n for n in sorted(providers) if only is None or n in only]

    async def one(name: str) -> Sequence[Discovered]:
        call = getattr(providers[name], "discover", None)
        if call is None:
            return []
        return await asyncio.wait_for(call(by_provider[name]), timeout)

    answers = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
    found: list[Discovered] = []
    errors: dict[str, str] = {}
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer
            errors[name] = REDACTOR.text(_reason(answer))
            continue
        found += [d if d.provider else replace(d, provider=name) for d in answer]
    return found, errors
