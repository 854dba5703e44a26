"""The import rules of ARCHITECTURE.md ("Data flow and layout"), read from the import graph.

Every `import` and `from … import` in `reconciler/` is read with `ast` (inside
functions and `TYPE_CHECKING` blocks too: a lazy or type-only import is still a
dependency a reader must know about). The rules:

- `plan/` and `load/` import nothing from `source/`, `providers/`, `execute/`,
  `controller/` or `cli/`;
- `model/` imports nothing of the project but `errors` (and itself);
- nothing below `controller/` and `cli/` imports them;
- the pure steps (`plan/`, `load/`, `model/`, `report/transitions.py`) do not use the
  process-wide redactor: redaction happens where text leaves the process.

What does not hold yet is listed in `ALLOWED` with the reason: the list may only
shrink (an entry that no longer occurs fails the test, so it is removed with the fix).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import reconciler

ROOT = Path(reconciler.__file__).parent

STEP_FREE = ("source", "providers", "execute", "controller", "cli")
"""What `plan/` and `load/` never import."""
TOP = ("controller", "cli")
PURE = ("plan", "load", "model", "report.transitions")

ALLOWED: dict[tuple[str, str], str] = {
    ("reconciler.load.secret_check", "reconciler.execute.template"): (
        "the ${params.NAME} template grammar lives with the runners; it belongs in a value "
        "module both can import"
    ),
    ("reconciler.model.schema", "reconciler.plan.plan"): (
        "`reconciler schema` also writes plan.json; the generator belongs at the CLI edge"
    ),
    ("reconciler.model.schema", "reconciler.report.status"): (
        "`reconciler schema` also writes status.json; the generator belongs at the CLI edge"
    ),
    ("reconciler.execute.store", "reconciler.controller.notify"): (
        "the notification ledger's protocol is defined in controller/notify.py"
    ),
    ("reconciler.execute.ledger_pg", "reconciler.controller.notify"): (
        "the notification ledger's protocol is defined in controller/notify.py"
    ),
    ("reconciler.execute.store", "reconciler.controller.leader"): (
        "the leader lease is opened by the store factory (the lease moves out of the "
        "journal in issue 18 part 4)"
    ),
    ("reconciler.execute.worker", "reconciler.controller.server"): (
        "the worker borrows the server's _configure_logging (renamed and moved in issue 18 part 4)"
    ),
}


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


def violations() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for source, edges in graph().items():
        for target, names in edges:
            if _in(source, "plan", "load") and _in(target, *STEP_FREE):
                found[(source, target)] = "plan/ and load/ import no step with side effects"
            if _in(source, "model") and not _in(target, "model", "errors"):
                found[(source, target)] = "model/ imports nothing but errors"
            if not _in(source, *TOP) and source != "reconciler.__main__" and _in(target, *TOP):
                found[(source, target)] = "nothing below imports controller/ or cli/"
            if _in(source, *PURE) and target == "reconciler.secrets" and "REDACTOR" in names:
                found[(source, "REDACTOR")] = "pure steps do not use the process-wide redactor"
    return found


def test_the_walk_sees_the_imports_it_checks() -> None:
    """The walk itself: relative and absolute imports, lazy ones included."""
    edges = graph()
    assert ("reconciler.observe.values", ("ObservedState",)) in edges["reconciler.plan.diff"]
    assert any(t == "reconciler.cli.commands" for t, _ in edges["reconciler.cli.cli"])  # lazy
    assert "reconciler.__main__" in edges


def test_imports_run_downwards_only() -> None:
    found = violations()
    new = {edge: why for edge, why in found.items() if edge not in ALLOWED}
    assert not new, "import rules broken:\n" + "\n".join(
        f"  {a} -> {b}: {why}" for (a, b), why in sorted(new.items())
    )


def test_the_allowlist_only_shrinks() -> None:
    stale = sorted(set(ALLOWED) - set(violations()))
    assert not stale, f"these imports no longer occur: remove them from ALLOWED: {stale}"


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
