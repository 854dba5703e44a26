"""observe: ask every provider, concurrently, what exists.

Enters: the `Desired` set (`load`) and the providers it declares. Leaves: an
`ObservedState` of values (`Observation`, `ObservationUnknown`, owned listings),
the guard against a provider that suddenly sees nothing included.

    observe.py   observe(): limits per provider, failures read as unknown, never gone

May import: `load`, `providers`, `model`, `errors`, `settings`, `secrets`.
"""
