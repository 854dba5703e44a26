"""Pure steps stay pure, read from the import graph (see tests/test_layers.py for the rooms).

Every `import` and `from … import` in `reconciler/` is read with `ast` (inside
functions and `TYPE_CHECKING` blocks too). Beyond the rooms' order:

- the pure steps (`plan/`, `load/`, `model/`, `report/transitions.py`) do not use the
  process-wide redactor: redaction happens where text leaves the process;
- `diff` and `transitions` import values only (not the provider registry, the
  engine or the observing step);
- the approval gate does no Git: it weighs `Evidence` values that `source/` gathers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import reconciler

ROOT = Path(reconciler.__file__).parent
PURE = ("plan", "load", "model", "report.transitions")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(imported module, names) of every import in a file, relative ones made absolute."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target, tuple(a.name for a in node.names)


def graph() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    return {
        _module(p): [(t, names) for t, names in imports(p) if t.startswith("reconciler")]
        for p in sorted(ROOT.rglob("*.py"))
    }


def _in(module: str, *packages: str) -> bool:
    return any(
        module == f"reconciler.{p}" or module.startswith(f"reconciler.{p}.") for p in packages
    )


def test_the_walk_sees_the_imports_it_checks() -> None:
    """The walk itself: relative and absolute imports, lazy ones included."""
    edges = graph()
    assert ("reconciler.observe.values", ("ObservedState",)) in edges["reconciler.plan.diff"]
    assert any(t == "reconciler.cli.commands" for t, _ in edges["reconciler.cli.cli"])  # lazy
    assert "reconciler.__main__" in edges


def test_pure_steps_do_not_use_the_process_wide_redactor() -> None:
    found = sorted(
        source
        for source, edges in graph().items()
        for target, names in edges
        if _in(source, *PURE) and target == "reconciler.secrets" and "REDACTOR" in names
    )
    assert not found, f"redact where text leaves the process, not in: {found}"


def test_diff_and_transitions_import_values_only() -> None:
    """`diff` does not reach the provider registry, `transitions` not the engine."""
    edges = graph()
    for module in ("reconciler.plan.diff", "reconciler.report.transitions"):
        targets = {t for t, _ in edges[module]}
        assert not {t for t in targets if _in(t, "providers")}, module
        assert "reconciler.execute.engine" not in targets, module
        assert "reconciler.observe.observe" not in targets, module


def test_the_approval_gate_does_no_git() -> None:
    """The gate weighs Evidence values; Git and ssh-keygen are source/'s."""
    edges = graph()
    for module in ("reconciler.plan.gates", "reconciler.plan.approvals"):
        targets = {t for t, _ in edges[module]}
        assert not {t for t in targets if _in(t, "source", "controller")}, module
    gate_imports = {t for t, _ in imports(ROOT / "plan" / "gates.py")}
    assert not gate_imports & {"pygit2", "subprocess"}
