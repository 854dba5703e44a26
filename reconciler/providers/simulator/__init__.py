"""The simulator: a fleet kept in SQLite in the state directory, the embedded default.

Two sides of one state (``<state_dir>/simulator.db``), one module each:

- `provider.py`: the provider the controller observes and acts on (`SimulatorProvider`,
  the ``simulator`` provider type), an edge of the flow like any other provider;
- `console.py`: the outside world's hand on the simulated fleet, used by people and
  tests to play the BMC and operator side (change a field by hand, read what the fleet
  was asked to do); ``python -m reconciler.providers.simulator`` runs it (`__main__.py`).

The provider never imports the console, and neither does this package: loading the
provider type (``reconciler.providers.simulator:SimulatorProvider``) loads the provider
only. The provider's public names are re-exported here.
"""

from __future__ import annotations

from reconciler.providers.simulator.provider import (
    ACTIONS,
    DB_NAME,
    DELETES,
    SimulatorProvider,
    inventory,
)

__all__ = ["ACTIONS", "DB_NAME", "DELETES", "SimulatorProvider", "inventory"]
