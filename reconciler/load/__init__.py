"""load: the bytes of one revision -> a validated, resolved `Desired`, or every error at once.

Enters: `{path: bytes}` of a revision (from `source`, which caches phase one by blob
id). Leaves: a `LoadResult` — the `Desired` set (`desired.py`) or `Diagnostic`s
with `path:line:col`. Pure: no I/O, no clock, no globals.

    yamlpos.py          YAML with positions and hostile-input limits
    load.py             parse_file (one file) and assemble (one revision)
    explain.py          pydantic's errors in the project's words
    desired.py          resolution: pipelines flattened, stages composed, params
    resolved_checks.py  checks only the resolved resources can show

May import: `model`, `errors`, `settings`, `secrets` (never `source`, `providers`,
`execute` or anything above; tests/test_layers.py checks it).
"""
