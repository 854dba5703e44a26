"""The simulator provider against its SQLite state: operations, idempotency, persistence, drift.

Its console (`python -m reconciler.providers.simulator`) is tested in test_console.py.
"""

from __future__ import annotations

import asyncio

import pytest

from reconciler.errors import PermanentError
from reconciler.providers.base import (
    ActionRequest,
    OperationHandle,
    OperationPhase,
    Provider,
    ResourceRef,
)
from reconciler.providers.simulator import SimulatorProvider, inventory


class Clock:
    """A clock the test moves by hand: no sleeping, no timing assertions."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


MACHINE = ResourceRef(
    kind="Machine",
    name="r01-node01",
    key="Machine/r01-node01",
    declared={"params": {"os": "ubuntu-24.04"}, "bmc": {"address": "10.1.0.11"}, "rack": "r01"},
    params={"os": "ubuntu-24.04", "application": "kubernetes-node"},
    labels={"role": "worker"},
)
INSTANCE = ResourceRef(
    kind="Instance",
    name="edge-a",
    key="Instance/edge-a",
    declared={"params": {}, "size": "m6i.large", "image": "ubuntu-24.04", "region": "eu-west-1"},
)


def run(coro):
    return asyncio.run(coro)


def request(ref: ResourceRef, action: str, key: str, **args) -> ActionRequest:
    return ActionRequest(action=action, resource=ref, idempotency_key=key, args=args)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sim(tmp_path, clock):
    provider = SimulatorProvider.open(tmp_path, name="sim", clock=clock, latency={"default": 5})
    yield provider
    run(provider.close())


def test_is_a_provider(sim):
    assert isinstance(sim, Provider)


def test_fresh_simulator_observes_nothing(sim):
    seen = run(sim.observe([MACHINE, INSTANCE]))
    assert {k: o.exists for k, o in seen.items()} == {MACHINE.key: False, INSTANCE.key: False}
    assert run(sim.list_owned()) == []


def test_operation_completes_after_its_latency_and_sets_observed_fields(sim, clock):
    handle = run(sim.start(request(MACHINE, "install-os", "k1", os="rhel-9", version="9.4")))
    assert run(sim.poll(handle)).phase is OperationPhase.RUNNING
    clock.now += 2
    assert 0 < run(sim.poll(handle)).progress < 1
    assert "os" not in run(sim.observe([MACHINE]))[MACHINE.key].fields["params"]
    clock.now += 3
    status = run(sim.poll(handle))
    assert (status.phase, status.progress) == (OperationPhase.SUCCEEDED, 1.0)
    fields = run(sim.observe([MACHINE]))[MACHINE.key].fields
    assert fields["params"] == {"os": "rhel-9", "osVersion": "9.4"}
    assert fields["inventory"] == inventory("r01-node01")
    assert fields["bmc"] == {"address": "10.1.0.11"}


def test_same_idempotency_key_never_executes_twice(sim, clock):
    first = run(sim.start(request(MACHINE, "power-on", "same")))
    again = run(sim.start(request(MACHINE, "power-on", "same")))
    clock.now += 10
    third = run(sim.start(request(MACHINE, "power-on", "same")))
    assert first == again == third
    started = [e for e in sim.action_log() if e["event"] == "started"]
    assert [e["idempotency_key"] for e in started] == ["same"]
    with pytest.raises(PermanentError, match="was used for power-on"):
        run(sim.start(request(MACHINE, "power-off", "same")))


def test_state_and_operations_survive_a_restart(tmp_path, clock):
    sim = SimulatorProvider.open(tmp_path, name="sim", clock=clock, latency=5)
    handle = run(sim.start(request(INSTANCE, "create", "c1")))
    assert run(sim.observe([INSTANCE]))[INSTANCE.key].fields["state"] == "pending"
    run(sim.close())
    clock.now += 6
    reopened = SimulatorProvider.open(tmp_path, name="sim", clock=clock, latency=5)
    assert run(reopened.poll(handle)).phase is OperationPhase.SUCCEEDED
    fields = run(reopened.observe([INSTANCE]))[INSTANCE.key].fields
    assert (fields["state"], fields["size"]) == ("running", "m6i.large")
    assert len([e for e in reopened.action_log() if e["event"] == "started"]) == 1
    run(reopened.close())


def test_failed_create_leaves_nothing_behind(tmp_path, clock):
    sim = SimulatorProvider.open(tmp_path, clock=clock, latency=1, failureRate=1.0)
    handle = run(sim.start(request(INSTANCE, "create", "c1")))
    clock.now += 2
    status = run(sim.poll(handle))
    assert (status.phase, status.message) == (OperationPhase.FAILED, "simulated failure")
    assert run(sim.observe([INSTANCE]))[INSTANCE.key].exists is False
    run(sim.close())


def test_failures_are_decided_per_idempotency_key_with_the_seed(tmp_path, clock):
    def outcomes(seed):
        sim = SimulatorProvider.open(tmp_path / str(seed), clock=clock, failureRate=0.5, seed=seed)
        handles = [run(sim.start(request(MACHINE, "power-on", f"k{i}"))) for i in range(40)]
        phases = [run(sim.poll(h)).phase for h in handles]
        run(sim.close())
        return phases

    first = outcomes(7)
    assert first == outcomes(7)
    assert OperationPhase.FAILED in first and OperationPhase.SUCCEEDED in first


def test_instance_actions_need_the_instance_and_unknown_actions_are_refused(sim):
    with pytest.raises(PermanentError, match="does not exist"):
        run(sim.start(request(INSTANCE, "install-app", "k")))
    with pytest.raises(PermanentError, match="unknown action"):
        run(sim.start(request(MACHINE, "levitate", "k2")))
    assert sim.action_log() == []


def test_cancel_a_running_create_removes_it(sim, clock):
    handle = run(sim.start(request(INSTANCE, "create", "c")))
    assert run(sim.cancel(handle)) is True
    assert run(sim.cancel(handle)) is True
    assert run(sim.poll(handle)).phase is OperationPhase.CANCELLED
    assert run(sim.observe([INSTANCE]))[INSTANCE.key].exists is False
    done = run(sim.start(request(MACHINE, "power-on", "p")))
    clock.now += 10
    assert run(sim.cancel(done)) is False


def test_poll_of_an_unknown_operation_is_permanent(sim):
    with pytest.raises(PermanentError):
        run(sim.poll(OperationHandle("sim", "op-nope", "x", MACHINE.key, "power-on")))


def test_delete_removes_and_list_owned_shows_ownership(sim, clock):
    run(sim.start(request(MACHINE, "discover", "d")))
    run(sim.start(request(INSTANCE, "create", "c")))
    clock.now += 10
    owned = run(sim.list_owned())
    assert [(o.key, o.repository, dict(o.labels)) for o in owned] == [
        (INSTANCE.key, "default", {}),
        (MACHINE.key, "default", {"role": "worker"}),
    ]
    run(sim.start(request(INSTANCE, "delete", "del")))
    clock.now += 10
    assert [o.key for o in run(sim.list_owned())] == [MACHINE.key]


def test_other_repositories_resources_are_not_ours(tmp_path, clock):
    ours = SimulatorProvider.open(tmp_path, name="sim", clock=clock, repository="a")
    theirs = SimulatorProvider.open(tmp_path, name="sim", clock=clock, repository="b")
    run(theirs.start(request(MACHINE, "discover", "d")))
    assert run(ours.list_owned()) == []
    assert [o.key for o in run(theirs.list_owned())] == [MACHINE.key]


def test_classify_rules_and_args_set(sim, clock):
    rules = [{"when": "inventory.nics >= 1", "set": {"role": "storage"}}]
    run(sim.start(request(MACHINE, "classify", "c", rules=rules)))
    run(sim.start(request(MACHINE, "configure", "k", set={"params.tier": "gold"}, zone="z1")))
    clock.now += 10
    params = run(sim.observe([MACHINE]))[MACHINE.key].fields["params"]
    assert params == {"role": "storage", "tier": "gold", "zone": "z1"}


def test_drift_by_hand_changes_what_observe_reports_and_is_logged(sim):
    run(sim.start(request(MACHINE, "power-on", "p")))
    sim.drift(MACHINE.key, "params.os", "windows-server-2022")
    assert run(sim.observe([MACHINE]))[MACHINE.key].fields["params"]["os"] == "windows-server-2022"
    assert [e["event"] for e in sim.action_log()] == ["started", "drift"]
    with pytest.raises(PermanentError, match="Machine/none does not exist"):
        sim.drift("Machine/none", "power", "off")


def test_racing_starts_from_separate_connections_execute_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    sims = [SimulatorProvider.open(tmp_path, name="sim", latency=60) for _ in range(4)]

    def start(i: int):
        return run(sims[i % 4].start(request(MACHINE, "install-os", f"race-{i % 3}")))

    with ThreadPoolExecutor(max_workers=8) as pool:
        handles = list(pool.map(start, range(48)))
    assert len({h.operation_id for h in handles}) == 3
    started = [e["idempotency_key"] for e in sims[0].action_log() if e["event"] == "started"]
    assert sorted(started) == ["race-0", "race-1", "race-2"]
    for sim in sims:
        run(sim.close())


def test_resolved_secrets_are_not_stored(sim, clock):
    from reconciler.secrets import REDACTOR

    REDACTOR.add("sim-canary-52f1")
    run(sim.start(request(MACHINE, "configure", "s", password="sim-canary-52f1")))
    clock.now += 10
    run(sim.observe([MACHINE]))
    assert b"sim-canary-52f1" not in sim.path.read_bytes()
    wal = sim.path.with_name(sim.path.name + "-wal")
    assert not wal.exists() or b"sim-canary-52f1" not in wal.read_bytes()
    assert run(sim.observe([MACHINE]))[MACHINE.key].fields["params"]["password"] == "***"


def test_a_repeated_start_is_logged_as_repeated_not_started(sim):
    run(sim.start(request(MACHINE, "power-on", "same")))
    run(sim.start(request(MACHINE, "power-on", "same")))
    events = [(e["event"], e["idempotency_key"]) for e in sim.action_log()]
    assert events == [("started", "same"), ("repeated", "same")]
