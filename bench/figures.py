"""Shared by the benchmark modules: medians of repeated runs, and how figures are shown.

A figure is `{"value": float | None, "unit": str, "reference": str}` under a stable name.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Figures = dict[str, dict[str, Any]]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls: the machines are shared and noisy."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(figures: Figures, json_path: Path | None) -> None:
    """Print one line per figure; write them as JSON too when asked."""
    for name, figure in figures.items():
        value = figure["value"]
        shown = f"{value:10.3f}" if isinstance(value, int | float) else f"{value!s:>10}"
        print(f"{name:36} {shown} {figure['unit']:3} {figure['reference']}")
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
