"""Benchmark: redacting a string with 10,000 secrets known, against 10 secrets known.

The redactor (`reconciler.secrets.Redactor`) scrubs every string that leaves the
process, so its cost per string is paid hundreds of thousands of times a cycle.
`redact_10k_secrets_per_string_us` is the median cost per log-line-sized string
(200 characters, one in ten holding a secret) once 10,000 secrets were learned
one at a time, each followed by a scrub (as tasks resolve and log); the
reference is the same strings with 10 secrets known: a ratio near 1 means the
cost does not grow with the number of secrets (it was 0.42 ms per string at
10,000 before the Aho-Corasick matcher). `redact_learn_10k_s` is what learning
them cost in all.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from pathlib import Path

from bench.figures import Figures, median_seconds, report
from reconciler.secrets import Redactor


def secrets(n: int, rng: random.Random) -> list[str]:
    tricky = ('"', "\\", "%2F", "+", "/")
    return [
        f"tok-{uuid.UUID(int=rng.getrandbits(128)).hex}{tricky[i % 5] if i % 3 == 0 else ''}"
        for i in range(n)
    ]


def lines(known: list[str], count: int, rng: random.Random) -> list[str]:
    out = []
    for i in range(count):
        words = " ".join(
            rng.choice(("GET", "200", "ok", "machine", "r01-node02", "stage")) for _ in range(30)
        )
        line = (words + " ")[:160]
        if i % 10 == 0:
            line += rng.choice(known)
        out.append(line.ljust(200, "."))
    return out


def learned(values: list[str]) -> tuple[Redactor, float]:
    """A redactor that learned `values` one by one, a scrub after each; and its time."""
    redactor = Redactor()
    started = time.perf_counter()
    for i, value in enumerate(values):
        redactor.remember(f"env:SECRET_{i}", value)
        redactor.text("a task logs a line after resolving its secret")
    seconds = time.perf_counter() - started
    while redactor.levels > 1:  # the strings scrubbed since the last change merge the levels
        redactor.text("steady state")
    return redactor, seconds


def run(n: int, strings: int, repeat: int) -> Figures:
    rng = random.Random(7)
    many = secrets(n, rng)
    few = many[:10]
    big, learn_seconds = learned(many)
    small, _ = learned(few)
    sample = lines(few, strings, rng)  # the same strings for both: only the secrets known differ
    assert all(v not in big.text(line) for line in sample for v in few)
    per_big = median_seconds(lambda: [big.text(line) for line in sample], repeat) / strings
    per_small = median_seconds(lambda: [small.text(line) for line in sample], repeat) / strings
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return {
        f"redact_{label}_secrets_per_string_us": {
            "value": per_big * 1e6,
            "unit": "us",
            "reference": f"the same 200-character strings with 10 secrets known "
            f"({per_small * 1e6:.2f} us); ratio {per_big / per_small:.2f}, target <= 1.5",
        },
        "redact_10_secrets_per_string_us": {
            "value": per_small * 1e6,
            "unit": "us",
            "reference": "-",
        },
        f"redact_learn_{label}_s": {
            "value": learn_seconds,
            "unit": "s",
            "reference": f"{n} secrets learned one at a time, a scrub after each",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--strings", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(run(args.n, args.strings, args.repeat), args.json)


if __name__ == "__main__":
    main()
