"""observe: concurrency, limits, and a failing provider read as unknown, never as gone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from reconciler.errors import TemporaryError
from reconciler.observe.observe import RateLimiter, observe, resource_ref
from reconciler.providers.base import Observation, ObservationUnknown, OwnedResource, ResourceRef
from tests import plan_values as pv


class FakeProvider:
    """Answers from a dict; counts calls in flight."""

    def __init__(self, name, existing=(), owned=(), fail=None, omit=()):
        self.name = name
        self.existing = set(existing)
        self.owned = list(owned)
        self.fail = fail
        self.omit = set(omit)
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.listings = 0

    async def observe(self, resources: Sequence[ResourceRef]):
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        self.in_flight -= 1
        if self.fail:
            raise self.fail
        return {
            r.key: Observation(r.key, r.key in self.existing, {"params": dict(r.params)})
            for r in resources
            if r.key not in self.omit
        }

    async def list_owned(self):
        self.listings += 1
        if self.fail:
            raise self.fail
        return self.owned


def two_providers():
    a = [pv.resource(f"a{i}", provider="pa") for i in range(4)]
    b = [pv.resource(f"b{i}", provider="pb") for i in range(3)]
    return pv.desired([*a, *b], providers=("pa", "pb")), a, b


def test_one_failing_provider_leaves_the_others_known():
    d, a, b = two_providers()
    good = FakeProvider("pa", existing=[r.key for r in a])
    bad = FakeProvider("pb", fail=TemporaryError("503 from https://api"))
    seen = asyncio.run(observe(d, {"pa": good, "pb": bad}))
    assert all(isinstance(seen.observations[r.key], Observation) for r in a)
    for r in b:
        got = seen.observations[r.key]
        assert isinstance(got, ObservationUnknown)
        assert got.reason == "pb: TemporaryError: 503 from https://api"
    assert seen.unknown_providers == {"pb": "TemporaryError: 503 from https://api"}


def test_a_failing_providers_listing_finds_no_orphans():
    d, a, _ = two_providers()
    stray = OwnedResource("Machine/stray", "Machine", "stray", "default")
    good = FakeProvider("pa", existing=[r.key for r in a], owned=[stray])
    failing = FakeProvider("pb", fail=TimeoutError())
    seen = asyncio.run(observe(d, {"pa": good, "pb": failing}))
    assert list(seen.owned) == ["Machine/stray"]
    assert seen.owned["Machine/stray"].provider == "pa"
    assert seen.unknown_providers == {"pb": "provider did not answer in time"}


def test_only_the_providers_named_list_what_they_own():
    d, a, b = two_providers()
    stray = OwnedResource("Machine/stray", "Machine", "stray", "default")
    pa = FakeProvider("pa", existing=[r.key for r in a], owned=[stray])
    pb = FakeProvider("pb", existing=[r.key for r in b], owned=[stray])
    seen = asyncio.run(observe(d, {"pa": pa, "pb": pb}, list_owned={"pb"}))
    assert (pa.listings, pb.listings) == (0, 1)
    assert seen.owned["Machine/stray"].provider == "pb"
    assert seen.unknown_providers == {}  # not listing is not failing
    assert all(seen.observations[r.key].exists for r in [*a, *b])


def test_nothing_where_there_was_something_is_unknown():
    d, a, _ = two_providers()
    before = {"pa": {r.key for r in a}, "pb": set()}
    empty = FakeProvider("pa")
    seen = asyncio.run(observe(d, {"pa": empty, "pb": FakeProvider("pb")}, previous=before))
    assert all(isinstance(seen.observations[r.key], ObservationUnknown) for r in a)
    assert seen.unknown_providers["pa"] == (
        "reported none of the 4 resources it reported existing before"
    )
    assert seen.existing == {"pa": frozenset(before["pa"]), "pb": frozenset()}
    # The first time (nothing seen before), an empty answer is believed: all missing.
    first = asyncio.run(observe(d, {"pa": empty, "pb": FakeProvider("pb")}))
    assert all(first.observations[r.key].exists is False for r in a)


def test_one_survivor_is_an_answer_and_removed_resources_do_not_count():
    d, a, _ = two_providers()
    before = {"pa": {r.key for r in a} | {"Machine/pruned"}}
    one_left = FakeProvider("pa", existing=[a[0].key])
    seen = asyncio.run(observe(d, {"pa": one_left, "pb": FakeProvider("pb")}, previous=before))
    assert "pa" not in seen.unknown_providers
    assert [r.key for r in a if seen.observations[r.key].exists] == [a[0].key]
    # Everything that existed was removed from Git (and pruned): nothing to distrust.
    replaced = pv.desired([pv.resource("new", provider="pa")], providers=("pa",))
    seen = asyncio.run(observe(replaced, {"pa": FakeProvider("pa")}, previous=before))
    assert seen.unknown_providers == {}
    assert seen.observations["Machine/new"].exists is False


def test_unavailable_provider_and_unreported_keys_are_unknown():
    d, a, b = two_providers()
    partial = FakeProvider("pa", existing=[r.key for r in a], omit=[a[0].key])
    seen = asyncio.run(observe(d, {"pa": partial}, unavailable={"pb": "bad credentials"}))
    assert seen.observations[a[0].key] == ObservationUnknown(
        a[0].key, "pa: provider did not report it"
    )
    assert seen.observations[b[0].key] == ObservationUnknown(b[0].key, "pb: bad credentials")
    assert seen.unknown_providers == {"pb": "bad credentials"}


def test_batches_run_concurrently_within_the_providers_limit():
    resources = [pv.resource(f"n{i}") for i in range(20)]
    d = pv.desired(resources)
    limits = d.providers["sim"].spec.limits.model_copy(update={"concurrency": 3})
    spec = d.providers["sim"].spec.model_copy(update={"limits": limits})
    d.providers["sim"] = d.providers["sim"].model_copy(update={"spec": spec})  # type: ignore[index]
    fake = FakeProvider("sim")
    seen = asyncio.run(observe(d, {"sim": fake}, batch_size=2))
    assert fake.calls == 10
    assert fake.peak == 3
    assert len(seen.observations) == 20


def test_rate_limiter_spaces_calls():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go():
        limiter = RateLimiter(4, clock=lambda: 100.0, sleep=sleep)
        for _ in range(4):
            await limiter.acquire()

    asyncio.run(go())
    assert waits == [0.25, 0.5, 0.75]


def test_observes_the_simulator(tmp_path):
    from reconciler.providers.simulator import SimulatorProvider

    d = pv.desired([pv.resource("a"), pv.resource("b", kind="Instance", params={})])
    sim = SimulatorProvider.open(tmp_path, name="sim")
    seen = asyncio.run(observe(d, {"sim": sim}))
    assert {k: o.exists for k, o in seen.observations.items()} == {
        "Instance/b": False,
        "Machine/a": False,
    }
    assert seen.existing == {"sim": frozenset()}


def test_observe_desired_opens_and_closes_providers_through_the_registry(tmp_path):
    from reconciler.model.kinds import Provider, ProviderSpec
    from reconciler.observe.observe import observe_desired

    d = pv.desired([pv.resource("a"), pv.resource("b", provider="x")], providers=("sim",))
    broken = Provider(
        api_version="reconciler/v1",
        kind="Provider",
        metadata={"name": "x"},
        spec=ProviderSpec(type="no-such-type"),
    )
    d.providers["x"] = broken  # type: ignore[index]
    seen = asyncio.run(observe_desired(d, state_dir=tmp_path))
    assert seen.observations["Machine/a"].exists is False
    assert isinstance(seen.observations["Machine/b"], ObservationUnknown)
    assert "unknown provider type 'no-such-type'" in seen.unknown_providers["x"]


def test_observe_desired_remembers_counts_between_runs(tmp_path):
    from reconciler.observe.observe import observe_desired, read_existing
    from reconciler.providers.base import ActionRequest
    from reconciler.providers.simulator import SimulatorProvider

    d = pv.desired([pv.resource("a"), pv.resource("b")])
    sim = SimulatorProvider.open(tmp_path, name="sim")
    for key, r in d.resources.items():
        asyncio.run(sim.start(ActionRequest("discover", resource_ref(r), f"d-{key}")))
    first = asyncio.run(observe_desired(d, state_dir=tmp_path))
    assert all(o.exists for o in first.observations.values())
    assert read_existing(tmp_path) == {"sim": frozenset(d.resources)}
    for key in d.resources:
        sim.remove(key)  # the fleet "vanishes": an API answering empty by mistake
    second = asyncio.run(observe_desired(d, state_dir=tmp_path))
    assert all(isinstance(o, ObservationUnknown) for o in second.observations.values())
    assert read_existing(tmp_path) == {"sim": frozenset(d.resources)}
    fresh = asyncio.run(observe_desired(d, state_dir=tmp_path, remember=False))
    assert all(o.exists is False for o in fresh.observations.values())


def test_a_provider_answering_nonsense_is_unknown_not_a_crash():
    d, a, _ = two_providers()

    class Nonsense(FakeProvider):
        async def observe(self, resources):
            return [1, 2, 3]

        async def list_owned(self):
            return "everything"

    seen = asyncio.run(observe(d, {"pa": Nonsense("pa"), "pb": FakeProvider("pb")}))
    assert all(isinstance(seen.observations[r.key], ObservationUnknown) for r in a)
    assert seen.unknown_providers["pa"] == "TypeError: observe answered a list, not a mapping"
