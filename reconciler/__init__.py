"""reconciler: a GitOps controller for infrastructure.

The flow, one package per step, in the order data moves (see ARCHITECTURE.md,
"Data flow and layout"; each package's docstring is the map of that room):

    source/ (Git) -> load/ (validate, resolve) -> observe/ (providers) -> plan/ (diff,
    scope, approvals, plan) -> execute/ -> report/ (status, the status commit)

`model/` is the format, `providers/` the seam to infrastructure, `controller/`
chains the steps into cycles behind an HTTP API, `cli/` is the command line;
`errors`, `settings`, `secrets` cut across. Imports run downwards only
(tests/test_layers.py).
"""

__version__ = "0.1.0"
