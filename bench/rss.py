"""Benchmark: peak memory of one plan of N resources, as a controller cycle holds it.

One pass in a fresh process: the files of a synthetic repository, load, observe
against a fresh simulator, diff and plan. (`bench.plan_10k` repeats loads to time
them, so its process peak is not what a controller needs.) Figure:
`peak_rss_10k_mb`, target at most 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
from pathlib import Path

from bench.figures import report
from bench.generate import generate
from reconciler.load.load import load_files
from reconciler.observe.observe import observe_desired
from reconciler.plan.gates import plan_values


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int) -> dict[str, dict[str, object]]:
    baseline = peak_mb()
    files = generate(n)
    result = load_files(files)
    assert result.ok, result.diagnostics[:3]
    with tempfile.TemporaryDirectory() as state:
        observed = asyncio.run(observe_desired(result.desired, state_dir=Path(state)))
        plan = plan_values(result.desired, observed)
    assert plan.summary.create == n, plan.summary
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return {
        f"peak_rss_{label}_mb": {
            "value": peak_mb(),
            "unit": "MB",
            "reference": f"target <= 300 at 10k; interpreter and imports alone: {baseline:.0f} MB",
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = run(args.n)
    report(figures, args.json)


if __name__ == "__main__":
    main()
