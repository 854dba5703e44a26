"""Benchmark: planning N resources against the simulator — a full plan and a no-change plan.

- `full_plan`: load + observe + diff + plan of a synthetic repository against a
  fresh simulator (everything to create). Target for 10k on 2 cores: under 5 s.
  Reference in the same run: `load` alone (the loader's share of it).
- `no_change_plan`: observe + diff + plan of the same, already loaded (a cached
  repository), against a simulator where every resource is in its declared state.
  Target for 10k: under 1 s. Reference: the same with 10 % of resources drifted.
- `render`: text and JSON of the full plan.
- `*_gc_frozen`: the same with `gc.freeze()` right after loading, as a long-running
  process should do with its large, long-lived Desired set (collections then skip it).

Medians of repeated runs; `--json PATH` writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from bench.figures import median_seconds, report
from bench.generate import generate
from reconciler.load.desired import Desired
from reconciler.load.load import load_files
from reconciler.observe.observe import ObservedState, observe, resource_ref
from reconciler.plan.diff import LastApplied
from reconciler.plan.gates import plan_values
from reconciler.plan.plan import Plan
from reconciler.plan.render import render_json, render_text
from reconciler.providers import open_providers
from reconciler.providers.simulator import SimulatorProvider, inventory


def load(files: dict[str, bytes]) -> Desired:
    result = load_files(files, revision="bench")
    assert result.ok and result.desired is not None, result.diagnostics[:3]
    return result.desired


def plan_once(
    desired: Desired,
    providers: dict[str, Any],
    last_applied: dict[str, LastApplied] | None = None,
    previous: Mapping[str, Collection[str]] | None = None,
    list_owned: Collection[str] | None = None,
) -> tuple[Plan, ObservedState]:
    seen = asyncio.run(observe(desired, providers, previous=previous, list_owned=list_owned))
    return plan_values(desired, seen, last_applied=last_applied), seen


def converge(desired: Desired, providers: dict[str, Any], drift_every: int = 0) -> None:
    """Put every resource in place as an apply would have left it (one transaction each)."""
    rows: dict[str, list[Any]] = {}
    for index, r in enumerate(desired.resources.values()):
        fields = r.declared()
        if r.kind == "Machine":
            fields.update(power="on", discovered=True, inventory=inventory(r.name))
        else:
            fields.update(state="running")
        if drift_every and index % drift_every == 0:
            fields["params"] = dict(fields["params"], application="none")
        rows.setdefault(r.provider, []).append((resource_ref(r), fields))
    for name, batch in rows.items():
        simulator: SimulatorProvider = providers[name]
        simulator.seed(batch)


def run(n: int, repeat: int) -> dict[str, dict[str, Any]]:
    files = generate(n)
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as fresh_dir, tempfile.TemporaryDirectory() as synced:
        desired = load(files)
        fresh, failed = open_providers(desired.providers, state_dir=Path(fresh_dir))
        assert not failed, failed

        def full() -> Plan:
            return plan_once(load(files), fresh)[0]

        full_plan = full()
        assert full_plan.summary.create == n, full_plan.summary
        load_s = median_seconds(lambda: load(files), repeat)
        full_s = median_seconds(full, repeat)
        render_s = median_seconds(lambda: (render_text(full_plan), render_json(full_plan)), repeat)

        providers, _ = open_providers(desired.providers, state_dir=Path(synced))
        converge(desired, providers)
        last = {
            key: LastApplied(
                r.fingerprint(), r.declared(), "bench", r.resolution(), r.stage_digests()
            )
            for key, r in desired.resources.items()
        }
        plan, seen = plan_once(desired, providers, last)
        assert plan.in_sync, plan.summary
        previous = dict(seen.existing)
        no_change_s = median_seconds(lambda: plan_once(desired, providers, last, previous), repeat)
        converge(desired, providers, drift_every=10)
        drifted_plan, _ = plan_once(desired, providers, last, previous)
        expected = sum(
            1
            for i, r in enumerate(desired.resources.values())
            if i % 10 == 0 and r.params.get("application") != "none"
        )
        assert drifted_plan.summary.drifted == expected, drifted_plan.summary
        drifted_s = median_seconds(lambda: plan_once(desired, providers, last, previous), repeat)

    figures[f"load_{label}_s"] = {"value": load_s, "unit": "s", "reference": "-"}
    figures[f"full_plan_{label}_s"] = {
        "value": full_s,
        "unit": "s",
        "reference": "target < 5 s",
    }
    figures[f"full_plan_{label}_vs_load"] = {
        "value": full_s / load_s,
        "unit": "x",
        "reference": "load alone",
    }
    figures[f"no_change_plan_{label}_s"] = {
        "value": no_change_s,
        "unit": "s",
        "reference": "target < 1 s",
    }
    figures[f"drift_10pct_plan_{label}_s"] = {
        "value": drifted_s,
        "unit": "s",
        "reference": "-",
    }
    figures[f"no_change_plan_{label}_vs_drift_10pct"] = {
        "value": no_change_s / drifted_s,
        "unit": "x",
        "reference": "10 % drifted",
    }
    figures[f"render_{label}_s"] = {"value": render_s, "unit": "s", "reference": "text + json"}
    figures.update(run_frozen(files, label, repeat))
    return figures


def run_frozen(files: dict[str, bytes], label: str, repeat: int) -> dict[str, dict[str, Any]]:
    """Full and no-change plans with the loaded Desired frozen out of garbage collection."""
    with tempfile.TemporaryDirectory() as fresh_dir, tempfile.TemporaryDirectory() as synced:
        desired = load(files)
        fresh, _ = open_providers(desired.providers, state_dir=Path(fresh_dir))

        def full() -> Plan:
            loaded = load(files)
            gc.freeze()
            return plan_once(loaded, fresh)[0]

        try:
            full_s = median_seconds(full, repeat)
            providers, _ = open_providers(desired.providers, state_dir=Path(synced))
            converge(desired, providers)
            last = {
                key: LastApplied(
                    r.fingerprint(), r.declared(), "bench", r.resolution(), r.stage_digests()
                )
                for key, r in desired.resources.items()
            }
            plan, seen = plan_once(desired, providers, last)
            assert plan.in_sync, plan.summary
            previous = dict(seen.existing)
            gc.freeze()
            no_change_s = median_seconds(
                lambda: plan_once(desired, providers, last, previous), repeat
            )
        finally:
            gc.unfreeze()
    return {
        f"full_plan_{label}_gc_frozen_s": {"value": full_s, "unit": "s", "reference": "-"},
        f"no_change_plan_{label}_gc_frozen_s": {
            "value": no_change_s,
            "unit": "s",
            "reference": "-",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = run(args.n, args.repeat)
    report(figures, args.json)


if __name__ == "__main__":
    main()
