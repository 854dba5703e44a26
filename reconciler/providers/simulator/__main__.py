"""``python -m reconciler.providers.simulator``: the simulator's console (see `console.py`)."""

from __future__ import annotations

from reconciler.providers.simulator.console import main

if __name__ == "__main__":
    raise SystemExit(main())
