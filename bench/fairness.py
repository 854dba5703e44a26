"""Benchmark: a fast provider's machines beside a slow provider's — head-of-line fairness.

Two simulator Providers in one plan: `slow` (operations of 0.5 s, `limits.concurrency: 1`,
8 machines) and `fast` (operations of 20 ms, concurrency 5, 5 machines), through an
executor whose global limit (4) is below the slow provider's queue. The figure is
how long the fast provider's machines take to finish with the slow ones beside them,
divided by the same machines alone: near 1 when a task queued behind its own
provider's limit holds no global slot. The slow machines come first in the plan
(by name), so they reach the slots first: when tasks took the global slot before
their provider's, the fast machines waited for the slow queue (25x: 2.8 s
instead of 0.11 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.figures import Figures, report

SLOW, FAST = 8, 5
GLOBAL = 4


def documents(slow: int, fast: int) -> dict[str, str]:
    head = "apiVersion: reconciler/v1\n"
    machines = [
        f"{head}kind: Machine\nmetadata: {{name: a-slow{i}}}\n"
        "spec: {provider: slow, pipeline: node}\n"
        for i in range(slow)
    ]
    machines += [f"{head}kind: Machine\nmetadata: {{name: z-fast{i}}}\n"
                 "spec: {provider: fast, pipeline: node}\n" for i in range(fast)]  # fmt: skip
    return {
        "providers.yaml": (
            f"{head}kind: Provider\nmetadata: {{name: slow}}\n"
            'spec: {type: simulator, settings: {latency: "0.5s"}, limits: {concurrency: 1}}\n'
            f"---\n{head}kind: Provider\nmetadata: {{name: fast}}\n"
            'spec: {type: simulator, settings: {latency: "20ms"}, limits: {concurrency: 5}}\n'
        ),
        "stages.yaml": (
            f"{head}kind: Stage\nmetadata: {{name: configure}}\nspec:\n"
            "  work:\n    - {name: run, type: provider, action: configure}\n"
        ),
        "pipelines.yaml": (
            f"{head}kind: Pipeline\nmetadata: {{name: node}}\nspec:\n"
            "  steps:\n    - stage: configure\n"
        ),
        "machines.yaml": "---\n".join(machines),
    }


async def fast_finish(slow: int, state: Path) -> float:
    """Seconds from the start of execution until the last fast machine finished."""
    from reconciler.execute.engine import Executor
    from reconciler.execute.journal import Journal
    from reconciler.load.load import load_files
    from reconciler.observe.observe import observe
    from reconciler.plan.gates import plan_values
    from reconciler.providers import open_providers

    files = {k: v.encode() for k, v in documents(slow, FAST).items()}
    loaded = load_files(files, revision="bench")
    assert loaded.ok and loaded.desired is not None, loaded.diagnostics[:3]
    desired = loaded.desired
    providers, failed = open_providers(desired.providers, state_dir=state)
    assert not failed, failed
    plan = plan_values(desired, await observe(desired, providers))
    finished: dict[str, float] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "resource.finished":
            finished[event["resource"]] = time.perf_counter()

    journal = Journal.open(state)
    executor = Executor(
        journal=journal, providers=providers, desired=desired, state_dir=state,
        concurrency=GLOBAL, on_event=on_event,
    )  # fmt: skip
    started = time.perf_counter()
    result = await executor.execute(plan)
    assert not result.failed, result.failed[:3]
    journal.close()
    for provider in providers.values():
        await provider.close()
    return max(t for k, t in finished.items() if k.startswith("Machine/z-fast")) - started


def measure(slow: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(asyncio.run(fast_finish(slow, Path(tmp))))
    return statistics.median(times)


def run(repeat: int) -> Figures:
    alone = measure(0, repeat)
    beside = measure(SLOW, repeat)
    return {
        "fairness_fast_beside_slow_ratio": {
            "value": beside / alone,
            "unit": "x",
            "reference": f"{FAST} fast machines finish in {beside:.3f} s beside {SLOW} slow ones "
            f"(concurrency 1, 0.5 s each; global limit {GLOBAL}) / {alone:.3f} s alone; "
            "target <= 2 (25 when the global slot was taken first)",
        },
        "fairness_fast_alone_s": {"value": alone, "unit": "s", "reference": "-"},
        "fairness_fast_beside_slow_s": {"value": beside, "unit": "s", "reference": "-"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(run(args.repeat), args.json)


if __name__ == "__main__":
    main()
