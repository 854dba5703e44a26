"""The executor's ordering and isolation: dependencies, limits, fairness, failures, stops.

Each test loads real documents (`load_files`), plans them (`plan_values`) and runs
`Executor.execute` with a real journal and task logs in a temporary state directory.
Where a test must hold an operation open until it says so, or count what is in
flight, the provider is `Gated`, a test double written here (the simulator's
operations finish on a wall-clock timer, which a test of ordering cannot wait
on); the tests of change windows and deadlines use the real simulator.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.execute.engine import ExecutionResult, Executor
from reconciler.execute.journal import Journal
from reconciler.execute.windows import in_change_window, next_opening
from reconciler.load.desired import Desired
from reconciler.load.load import load_files
from reconciler.model.kinds import ChangeWindow
from reconciler.observe.observe import observe
from reconciler.plan.gates import plan_values
from reconciler.plan.plan import Plan
from reconciler.providers import open_providers
from reconciler.providers.base import (
    ActionRequest,
    Observation,
    ObservationResult,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    OwnedResource,
    Provider,
    ResourceRef,
)

HEAD = "apiVersion: reconciler/v1\n"
WAIT = 60.0  # a bound against hanging, not a speed limit (a loaded CI machine)
"""Seconds a test waits for something that must happen; only reached when it never does."""


class Gated:
    """A test double of a provider: every action starts, waits until `gate` opens (if
    the test holds it), then succeeds — or fails, for the keys in `failing`. It counts
    actions in flight and remembers the most at once."""

    def __init__(self, name: str, *, held: bool = False, failing: Sequence[str] = ()) -> None:
        self.name = name
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()
        self.failing = set(failing)
        self.started: list[tuple[str, str]] = []
        self.finished: list[str] = []
        self.in_flight = 0
        self.most = 0
        self.cancelled: list[str] = []
        self._phases: dict[str, OperationPhase] = {}

    async def observe(self, resources: Sequence[ResourceRef]) -> Mapping[str, ObservationResult]:
        return {r.key: Observation(r.key, exists=False) for r in resources}

    async def list_owned(self) -> Sequence[OwnedResource]:
        return []

    async def start(self, request: ActionRequest) -> OperationHandle:
        self.started.append((request.key, request.action))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        op = uuid.uuid4().hex
        failed = request.key in self.failing
        self._phases[op] = OperationPhase.FAILED if failed else OperationPhase.SUCCEEDED
        self.finished.append(request.key)
        return OperationHandle(self.name, op, request.idempotency_key, request.key, request.action)

    async def poll(self, handle: OperationHandle) -> OperationStatus:
        phase = self._phases[handle.operation_id]
        return OperationStatus(handle.operation_id, phase, 1.0, f"{handle.action} {phase.value}")

    async def cancel(self, handle: OperationHandle) -> bool:
        self.cancelled.append(handle.operation_id)
        return False

    async def close(self) -> None:
        return None


def documents(
    machines: Mapping[str, str],
    *,
    providers: Mapping[str, int] | None = None,
    stages: int = 1,
    depends: Mapping[str, str] | None = None,
    policy: str = "",
) -> dict[str, str]:
    """Provider documents (name -> concurrency), `stages` stages of one provider action
    each, a pipeline of them, and `machines` (name -> provider), `depends` (name -> name)."""
    providers = providers or {"sim": 50}
    files = {
        "providers.yaml": "---\n".join(
            f"{HEAD}kind: Provider\nmetadata: {{name: {name}}}\n"
            f"spec: {{type: simulator, limits: {{concurrency: {limit}}}}}\n"
            for name, limit in providers.items()
        ),
        "stages.yaml": "---\n".join(
            f"{HEAD}kind: Stage\nmetadata: {{name: s{i}}}\nspec:\n"
            f"  work:\n    - {{name: run, type: provider, action: configure, timeout: 30s}}\n"
            for i in range(1, stages + 1)
        ),
        "pipelines.yaml": (
            f"{HEAD}kind: Pipeline\nmetadata: {{name: node}}\nspec:\n  steps:\n"
            + "".join(f"    - stage: s{i}\n" for i in range(1, stages + 1))
        ),
        "machines.yaml": "---\n".join(
            f"{HEAD}kind: Machine\nmetadata: {{name: {name}}}\n"
            f"spec: {{provider: {provider}, pipeline: node"
            + (f", dependsOn: [Machine/{(depends or {})[name]}]" if name in (depends or {}) else "")
            + "}\n"
            for name, provider in machines.items()
        ),
    }
    if policy:
        files["policy.yaml"] = policy
    return files


def load(files: dict[str, str]) -> Desired:
    loaded = load_files({k: v.encode() for k, v in files.items()}, revision="test")
    assert loaded.ok and loaded.desired is not None, loaded.diagnostics[:3]
    return loaded.desired


async def plan_of(desired: Desired, providers: Mapping[str, Provider]) -> Plan:
    return plan_values(desired, await observe(desired, providers))


def executor(
    tmp_path: Path, desired: Desired, providers: Mapping[str, Provider], **kwargs: Any
) -> Executor:
    return Executor(
        journal=Journal.open(tmp_path), providers=providers, desired=desired,
        state_dir=tmp_path, **kwargs,
    )  # fmt: skip


async def until(check: Callable[[], object], what: str) -> None:
    """Let the executor run until `check()` holds (a test failure after `WAIT` seconds)."""
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.005)
    assert check(), what


def results(done: ExecutionResult) -> dict[str, tuple[str, str]]:
    return {k: (o.result, o.reason or o.error or "") for k, o in done.outcomes.items()}


def test_dependents_of_a_failed_resource_are_skipped_and_others_run(tmp_path: Path) -> None:
    desired = load(
        documents({"a": "sim", "b": "sim", "c": "sim", "d": "sim"}, depends={"b": "a", "c": "b"})
    )
    provider = Gated("sim", failing=["Machine/a"])

    async def run() -> ExecutionResult:
        providers = {"sim": provider}
        return await executor(tmp_path, desired, providers).execute(
            await plan_of(desired, providers)
        )

    done = asyncio.run(run())
    found = results(done)
    assert found["Machine/a"][0] == "failed"
    assert found["Machine/b"] == ("skipped", "dependency Machine/a did not succeed")
    assert found["Machine/c"] == ("skipped", "dependency Machine/b did not succeed")
    assert found["Machine/d"][0] == "succeeded"
    assert sorted(key for key, _ in provider.started) == ["Machine/a", "Machine/d"]


def test_a_provider_never_has_more_actions_in_flight_than_its_limit(tmp_path: Path) -> None:
    machines = {f"m{i}": "sim" for i in range(6)}
    desired = load(documents(machines, providers={"sim": 2}))
    provider = Gated("sim", held=True)

    async def run() -> ExecutionResult:
        providers = {"sim": provider}
        ex = executor(tmp_path, desired, providers, concurrency=10)
        running = asyncio.create_task(ex.execute(await plan_of(desired, providers)))
        await until(lambda: provider.in_flight == 2, "two actions in flight")
        for _ in range(20):  # every other resource has had its turn to try
            await asyncio.sleep(0)
        provider.gate.set()
        return await running

    done = asyncio.run(run())
    assert all(result == "succeeded" for result, _ in results(done).values())
    assert len(provider.finished) == 6
    assert provider.most == 2


def test_a_slow_provider_does_not_hold_back_a_fast_one(tmp_path: Path) -> None:
    # Head-of-line: the slow provider takes one action at a time and the executor two
    # in all. Its queued tasks must not sit on global slots the fast provider could use.
    machines = {f"a-slow{i}": "slow" for i in range(4)} | {f"z-fast{i}": "fast" for i in range(3)}
    desired = load(documents(machines, providers={"slow": 1, "fast": 5}))
    slow, fast = Gated("slow", held=True), Gated("fast")
    finished: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "resource.finished":
            finished.append(event["resource"])

    async def run() -> tuple[ExecutionResult, list[str]]:
        providers = {"slow": slow, "fast": fast}
        ex = executor(tmp_path, desired, providers, concurrency=2, on_event=on_event)
        running = asyncio.create_task(ex.execute(await plan_of(desired, providers)))
        fast_keys = {f"Machine/z-fast{i}" for i in range(3)}
        await until(lambda: fast_keys <= set(finished), "the fast provider's machines finish")
        done_while_slow_held = list(finished)
        slow.gate.set()
        return await running, done_while_slow_held

    done, early = asyncio.run(run())
    assert sorted(early) == [f"Machine/z-fast{i}" for i in range(3)]
    assert all(result == "succeeded" for result, _ in results(done).values())
    assert slow.most == 1


def test_an_exception_in_one_resource_fails_it_alone_and_nothing_runs_detached(
    tmp_path: Path,
) -> None:
    # Three ways something escapes a resource: the event callback raises for b, the
    # task log of c cannot be opened (a file where its folder goes), and a resource
    # depending on b is skipped. a is still running when they fail: execute() waits.
    desired = load(documents({"a": "sim", "b": "sim", "c": "sim", "d": "sim"}, depends={"d": "b"}))
    execution = "e" * 64
    blocker = tmp_path / "logs" / execution[:12] / "Machine" / "c"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    provider = Gated("sim", held=True)
    failed: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "resource.started" and event["resource"] == "Machine/b":
            raise RuntimeError("progress display crashed")
        if event["event"] == "resource.finished" and event["result"] == "failed":
            failed.append(event["resource"])

    async def run() -> tuple[ExecutionResult, bool, set[asyncio.Task[Any]]]:
        providers = {"sim": provider}
        ex = executor(tmp_path, desired, providers, on_event=on_event)
        plan = await plan_of(desired, providers)
        ex.journal.record_plan(execution, plan.revision, plan.to_json())
        running = asyncio.create_task(ex.execute(plan, execution=execution))
        await until(lambda: {"Machine/b", "Machine/c"} <= set(failed), "b and c fail")
        await until(lambda: provider.in_flight == 1, "a's action in flight")
        returned_early = running.done()
        provider.gate.set()
        done = await running
        left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        return done, returned_early, left

    done, returned_early, left = asyncio.run(run())
    assert not returned_early and not left
    outcomes = done.outcomes
    assert outcomes["Machine/a"].result == "succeeded"
    b, c = outcomes["Machine/b"], outcomes["Machine/c"]
    assert (b.result, b.reason) == ("failed", "ExecutionError")
    assert b.error == "internal error: RuntimeError: progress display crashed"
    assert (c.result, c.reason, c.failed_stage, c.failed_task) == (
        "failed", "ExecutionError", "s1", "run",
    )  # fmt: skip
    assert c.error is not None and "internal error: " in c.error
    assert outcomes["Machine/d"].reason == "dependency Machine/b did not succeed"
    # The journal knows c's task started and never finished: a resume runs it again.
    states = {row.resource: row.state for row in Journal.open(tmp_path).tasks(execution)}
    assert states == {"Machine/a": "finished", "Machine/c": "started"}


def test_a_stop_lets_the_task_in_flight_finish_and_starts_nothing_more(tmp_path: Path) -> None:
    desired = load(documents({"a": "sim", "b": "sim"}, providers={"sim": 1}, stages=3))
    provider = Gated("sim", held=True)

    async def run() -> tuple[ExecutionResult, str]:
        providers = {"sim": provider}
        ex = executor(tmp_path, desired, providers)
        running = asyncio.create_task(ex.execute(await plan_of(desired, providers)))
        await until(lambda: provider.in_flight == 1, "a's first action in flight")
        ex.request_stop("SIGTERM")
        provider.gate.set()
        done = await running
        return done, done.execution_id

    done, execution = asyncio.run(run())
    assert done.stopped == "SIGTERM"
    a, b = done.outcomes["Machine/a"], done.outcomes["Machine/b"]
    assert (a.result, a.reason, a.stages_done) == ("skipped", "stopped: SIGTERM", ("s1",))
    assert [t.result for t in a.tasks] == ["succeeded"]
    assert (b.result, b.reason, b.tasks) == ("skipped", "stopped: SIGTERM", ())
    assert provider.started == [("Machine/a", "configure")]
    rows = Journal.open(tmp_path).tasks(execution)
    assert [(r.resource, r.stage, r.state) for r in rows] == [("Machine/a", "s1", "finished")]


WINDOW_POLICY = f"""\
{HEAD}kind: Policy
metadata: {{name: default}}
spec:
  prune: true
  changeWindows:
    - {{days: [sat, sun], start: "22:00", end: "24:00", timezone: Europe/Paris}}
"""


def test_a_destructive_action_waits_for_its_change_window(tmp_path: Path) -> None:
    # m1 is provisioned, then removed from Git with prune on: its decommission is
    # destructive and runs only on a weekend evening in Paris.
    before = load(documents({"m0": "sim", "m1": "sim"}))
    after = load(documents({"m0": "sim"}, policy=WINDOW_POLICY))
    friday = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)  # 23:30 on a Friday in Paris
    saturday = datetime(2026, 11, 28, 21, 30, tzinfo=UTC)  # 22:30 on a Saturday in Paris

    async def run() -> tuple[ExecutionResult, ExecutionResult, bool]:
        providers, failed = open_providers(before.providers, state_dir=tmp_path)
        assert not failed
        ex = executor(tmp_path, before, providers)
        assert not (await ex.execute(await plan_of(before, providers))).failed
        closed = executor(tmp_path, after, providers, clock=lambda: friday)
        waited = await closed.execute(await plan_of(after, providers))
        opened = executor(tmp_path, after, providers, clock=lambda: saturday)
        ran = await opened.execute(await plan_of(after, providers))
        gone = (await observe(before, providers)).observations["Machine/m1"].exists is False
        return waited, ran, gone

    waited, ran, gone = asyncio.run(run())
    assert results(waited)["Machine/m1"] == (
        "skipped",
        "destructive action waits for a change window",
    )
    assert results(ran)["Machine/m1"][0] == "succeeded"
    assert ran.outcomes["Machine/m1"].stages_done == ("decommission",)
    assert gone


def test_change_windows_in_their_own_time_zone() -> None:
    window = ChangeWindow(days=["sat"], start="22:00", end="24:00", timezone="Europe/Paris")
    assert in_change_window([], datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    assert in_change_window([window], datetime(2026, 11, 28, 21, 0, tzinfo=UTC))  # 22:00
    assert in_change_window([window], datetime(2026, 11, 28, 22, 59, tzinfo=UTC))  # 23:59
    assert not in_change_window([window], datetime(2026, 11, 28, 20, 59, tzinfo=UTC))  # 21:59
    assert not in_change_window([window], datetime(2026, 11, 28, 23, 0, tzinfo=UTC))  # Sun 0:00
    assert not in_change_window([window], datetime(2026, 11, 27, 21, 30, tzinfo=UTC))  # Friday


DEADLINE_FILES = {
    "providers.yaml": (
        f"{HEAD}kind: Provider\nmetadata: {{name: sim}}\n"
        'spec: {type: simulator, settings: {latency: "30s"}}\n'
    ),
    "stages.yaml": (
        f"{HEAD}kind: Stage\nmetadata: {{name: os}}\nspec:\n"
        "  work:\n    - {name: install, type: provider, action: install-os, timeout: 0.3s}\n"
    ),
    "pipelines.yaml": (
        f"{HEAD}kind: Pipeline\nmetadata: {{name: node}}\nspec:\n  steps:\n    - stage: os\n"
    ),
    "machines.yaml": (
        f"{HEAD}kind: Machine\nmetadata: {{name: m0}}\nspec: {{provider: sim, pipeline: node}}\n"
    ),
}


def test_a_task_past_its_deadline_cancels_its_operation_through_the_provider(
    tmp_path: Path,
) -> None:
    from reconciler.providers.simulator import SimulatorProvider

    desired = load(DEADLINE_FILES)

    async def run() -> ExecutionResult:
        providers, failed = open_providers(desired.providers, state_dir=tmp_path)
        assert not failed
        return await executor(tmp_path, desired, providers).execute(
            await plan_of(desired, providers)
        )

    done = asyncio.run(run())
    outcome = done.outcomes["Machine/m0"]
    assert outcome.result == "failed" and outcome.error is not None
    assert "deadline exceeded" in outcome.error
    assert "cancelled through provider sim" in outcome.error
    events = [e["event"] for e in SimulatorProvider.open(tmp_path, name="sim").action_log()]
    assert events == ["started", "cancelled"]
    assert outcome.log is not None
    text = Path(outcome.log).read_text()
    assert "deadline reached: operation " in text and "cancelled through provider sim" in text


def test_a_provider_that_cannot_cancel_is_said_to_let_it_complete(tmp_path: Path) -> None:
    desired = load(DEADLINE_FILES)

    class Endless(Gated):
        async def poll(self, handle: OperationHandle) -> OperationStatus:
            return OperationStatus(handle.operation_id, OperationPhase.RUNNING, 0.1)

    provider = Endless("sim")

    async def run() -> ExecutionResult:
        providers = {"sim": provider}
        return await executor(tmp_path, desired, providers).execute(
            await plan_of(desired, providers)
        )

    outcome = asyncio.run(run()).outcomes["Machine/m0"]
    assert len(provider.cancelled) == 1
    assert outcome.error is not None
    assert "provider sim cannot cancel operation" in outcome.error
    assert "it may still complete" in Path(str(outcome.log)).read_text()


def test_the_next_window_opening_in_its_own_time_zone() -> None:
    window = ChangeWindow(days=["sat"], start="22:00", end="24:00", timezone="Europe/Paris")
    friday = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert next_opening([window], friday) == datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    inside = datetime(2026, 11, 28, 21, 30, tzinfo=UTC)  # open now: the next is a week on
    assert next_opening([window], inside) == datetime(2026, 12, 5, 21, 0, tzinfo=UTC)
    weekdays = ChangeWindow(days=["mon", "tue"], start="02:00", end="04:00")
    assert next_opening([window, weekdays], friday) == datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    sunday = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    assert next_opening([window, weekdays], sunday) == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert next_opening([], friday) is None
