"""Benchmark: what a rollout policy costs the planner when it never binds.

A 1,000-machine fleet (`bench.generate`, no instances), provisioned at one revision in
the simulator, is updated by a second revision moving every profile to another OS. The
update is planned (observe + diff + plan, as `reconciler plan` does) with a Policy
whose rollout never holds anything back (`domain: rack`, `maxUnavailable: 100%`, no
canary, no pause) and with the same Policy without it (both allow the destructive
re-runs); the figure is the ratio, target <= 1.05. Runs alternate between the two
(ABBA); medians of `--repeat` of the process's CPU time, not wall time: the ratio of
two CPU-bound runs on a shared, loaded machine. The same ratio for the planning step
alone (the observation fixed) is reported beside it.

`--json PATH` writes the figures.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import report
from bench.generate import generate
from bench.plan_10k import converge, load, plan_once
from reconciler.observe.observe import ObservedState
from reconciler.plan.diff import LastApplied
from reconciler.plan.gates import plan_values
from reconciler.plan.plan import Plan
from reconciler.providers import open_providers

POLICY = b"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {name: default}
spec:
  maxDestructiveActions: 100000
"""
NEVER_BINDS = POLICY + b"  rollout: {domain: rack, maxUnavailable: 100%}\n"


def new_os(profiles: bytes) -> bytes:
    """Every profile moves to another OS: an update (install-os and what follows) for all."""
    moves = {b"os: ubuntu-24.04": b"os: @1", b"os: rhel-9": b"os: @2", b"os: esxi-8": b"os: @3"}
    for old, mark in moves.items():
        profiles = profiles.replace(old, mark)
    for mark, new in ((b"@1", b"rhel-9"), (b"@2", b"esxi-8"), (b"@3", b"ubuntu-24.04")):
        profiles = profiles.replace(mark, new)
    return profiles


def alternating(
    first: Callable[[], object], second: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Median CPU seconds of each (this process's: the work is CPU-bound, and other
    processes on a shared machine do not count), run in turn in ABBA order with a
    collection before each run (the garbage one leaves the other hits both)."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeat):
        order = ((first, times[0]), (second, times[1]))
        for fn, out in order if i % 2 == 0 else order[::-1]:
            gc.collect()
            start = time.process_time()
            fn()
            out.append(time.process_time() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def run(n: int, repeat: int) -> dict[str, dict[str, Any]]:
    files = generate(n, cloud_share=0.0)
    before = load(files)
    after_files = {**files, "profiles.yaml": new_os(files["profiles.yaml"])}
    plain = load({**after_files, "policy.yaml": POLICY})
    ruled = load({**after_files, "policy.yaml": NEVER_BINDS})
    with tempfile.TemporaryDirectory() as state:
        providers, failed = open_providers(before.providers, state_dir=Path(state))
        assert not failed, failed
        converge(before, providers)
        last = {  # the journal's records: provisioned as declared at the first revision
            key: LastApplied(
                r.fingerprint(), r.declared(), "bench", r.resolution(), r.stage_digests()
            )
            for key, r in before.resources.items()
        }
        first, seen = plan_once(plain, providers, last)
        assert first.summary.update == n and not first.rollouts, first.summary
        previous = dict(seen.existing)
        held = plan_once(ruled, providers, last, previous)[0]
        assert held.summary.update == n and not held.blocked, held.summary
        assert len(held.rollouts) == 1 and all(a.rollout == "policy" for a in held.actions)

        def planned(desired: Any) -> Callable[[], Plan]:
            return lambda: plan_once(desired, providers, last, previous)[0]

        with_s, without_s = alternating(planned(ruled), planned(plain), repeat)

        def values(desired: Any, observed: ObservedState) -> Callable[[], Plan]:
            return lambda: plan_values(desired, observed, last_applied=last)

        plan_with_s, plan_without_s = alternating(values(ruled, seen), values(plain, seen), repeat)
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return {
        "rollout_overhead_ratio": {
            "value": with_s / without_s,
            "unit": "x",
            "reference": f"planning a {n}-machine update (observe + diff + plan) with a rollout "
            f"that never binds ({with_s:.3f} s) / without ({without_s:.3f} s); target <= 1.05",
        },
        "rollout_overhead_plan_only_ratio": {
            "value": plan_with_s / plan_without_s,
            "unit": "x",
            "reference": f"the planning step alone, observation fixed ({plan_with_s:.3f} s / "
            f"{plan_without_s:.3f} s)",
        },
        f"rollout_update_plan_{label}_s": {"value": with_s, "unit": "s", "reference": "-"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(run(args.n, args.repeat), args.json)


if __name__ == "__main__":
    main()
