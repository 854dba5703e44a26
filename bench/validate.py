"""Benchmark: validating N resources against the floor of just parsing the same files.

The floor is PyYAML's C loader on the same bytes (what any YAML-reading tool
pays at least). Medians of repeated runs; the figure that matters is the ratio,
measured in the same run: `validate_10k_vs_parse_floor` (target: within 3x).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from bench.figures import median_seconds, report
from bench.generate import generate
from reconciler.load.load import load_files


def parse_floor(files: dict[str, bytes]) -> None:
    for data in files.values():
        list(yaml.load_all(data, Loader=yaml.CSafeLoader))


def run(n: int, repeat: int) -> dict[str, dict[str, float | str]]:
    files = generate(n)
    result = load_files(files)
    assert result.ok, result.diagnostics[:3]
    floor = median_seconds(lambda: parse_floor(files), repeat)
    full = median_seconds(lambda: load_files(files), repeat)
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return {
        f"parse_floor_{label}_s": {"value": floor, "unit": "s", "reference": "-"},
        f"validate_{label}_s": {"value": full, "unit": "s", "reference": "parse floor"},
        f"validate_{label}_vs_parse_floor": {
            "value": full / floor,
            "unit": "x",
            "reference": "parse floor (target <= 3)",
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
