"""The simulator's console: the outside world's hand on the simulated fleet, used by
people and tests.

Not a step of the flow: the controller observes and acts on the fleet through the
provider (`provider.py`); this is the other side of the same state, what a BMC's
console or an operator with a screwdriver would do behind the controller's back, so a
demo or an end-to-end test can make drift and see what the fleet was asked to do:

    python -m reconciler.providers.simulator drift --state-dir D Machine/x power '"off"'
    python -m reconciler.providers.simulator log --state-dir D

``drift`` changes one observed field (a dotted path; the value is JSON, or else the plain
string); ``log`` prints the action log as JSON lines, oldest first. Either exits 1
with ``error: …`` (no traceback) when the resource does not exist or the state
directory cannot be opened. It opens the state through `SimulatorProvider.open`, so it
reads and writes what the provider sees.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.providers.simulator.provider import SimulatorProvider

PROG = "python -m reconciler.providers.simulator"


def drift(state_dir: Path | str, key: str, field: str, value: Any) -> None:
    """Change a field of a simulated resource by hand (for demos and tests)."""
    sim = SimulatorProvider.open(state_dir)
    try:
        sim.drift(key, field, value)
    finally:
        asyncio.run(sim.close())


def action_log(state_dir: Path | str) -> list[dict[str, Any]]:
    """Every event of the simulator's action log, oldest first."""
    sim = SimulatorProvider.open(state_dir)
    try:
        return sim.action_log()
    finally:
        asyncio.run(sim.close())


def parse_value(text: str) -> Any:
    """A value given on the command line: JSON (``'"rhel-9"'``, ``8``, ``true``), or
    else the plain string (``off``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def json_line(entry: dict[str, Any]) -> str:
    """One log entry as a compact JSON line, keys sorted (stable for grep and diff)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)


def parser() -> argparse.ArgumentParser:
    """The console's command line: ``drift`` and ``log``."""
    top = argparse.ArgumentParser(prog=PROG)
    sub = top.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drift", help="change an observed field by hand")
    d.add_argument("--state-dir", default=".reconciler")
    d.add_argument("key", help="Kind/name")
    d.add_argument("field", help="dotted path, e.g. power or params.os")
    d.add_argument("value", help="a JSON value, or a plain string")
    log = sub.add_parser("log", help="print the action log as JSON lines")
    log.add_argument("--state-dir", default=".reconciler")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reconciler.providers.simulator drift --state-dir D Machine/x power off``"""
    args = parser().parse_args(argv)
    try:
        if args.command == "drift":
            drift(args.state_dir, args.key, args.field, parse_value(args.value))
        else:
            for entry in action_log(args.state_dir):
                print(json_line(entry))
    except (ReconcilerError, OSError) as exc:  # no such resource, a state dir we cannot open
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
