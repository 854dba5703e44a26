"""The import rules of ARCHITECTURE.md ("Imports run downwards only"), read from the code.

Every `import` and `from … import` under `reconciler/` (inside functions and
`TYPE_CHECKING` blocks too) is an edge from one room of the house to another.
Each room may import only the rooms below it, with no exception: an upward import
fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reconciler"

TOP = {"errors", "settings", "secrets", "logs"}
ROOMS = {"model", "source", "load", "observe", "plan", "execute", "report", "providers"}
ROOMS |= {"controller", "cli"} | TOP

# What each room may import besides itself (rooms not listed here import nothing of ours).
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "model": {"errors"},
    "settings": {"errors", "model", "secrets"},
    "secrets": {"errors", "model"},
    "logs": {"secrets"},
    "load": {"model"} | TOP,
    "providers": {"model"} | TOP,
    "observe": {"model", "load", "providers"} | TOP,
    "plan": {"model", "load", "observe"} | TOP,
    "source": {"model", "load", "plan", "report", "providers"} | TOP,
    "execute": {"model", "load", "observe", "plan", "providers"} | TOP,
    "report": {"model", "source", "load", "observe", "plan", "execute"} | TOP,
    "controller": ROOMS - {"cli", "controller"},
    "cli": ROOMS - {"cli"},
}

# Value modules of a step (frozen values only, no I/O): what a provider returns and what an
# execution yields are known below the step that makes them.
VALUES = {"observe.values", "execute.results"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST) -> set[str]:
    """The project's modules a module imports, without the `reconciler.` prefix."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "reconciler":
                names = [f"reconciler.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        found |= {
            name.removeprefix("reconciler.") for name in names if name.startswith("reconciler.")
        }
    return found


def edges() -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        importer = module_name(path)
        out |= {(importer, target) for target in imported(ast.parse(path.read_bytes()))}
    return out


def room(module: str) -> str:
    return module.split(".")[0]


def breaks_a_rule(importer: str, target: str) -> bool:
    here, there = room(importer), room(target)
    if here in {"", "__main__", "__version__"} or here == there or there == "__version__":
        return False
    if target in VALUES and here not in {"model", "errors"}:
        return False
    return there not in MAY_IMPORT.get(here, set())


def test_every_module_lives_in_a_room() -> None:
    loose = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if room(module_name(path)) not in ROOMS | {"", "__main__"}
    }
    assert loose == set()


def test_imports_run_downwards_only() -> None:
    broken = {edge for edge in edges() if breaks_a_rule(*edge)}
    assert broken == set(), "a room imports one above it"


def test_the_rule_catches_an_upward_import() -> None:
    tree = ast.parse("from reconciler.controller.server import create_app\nimport reconciler.cli")
    targets = imported(tree)
    assert targets == {"controller.server", "cli"}
    assert all(breaks_a_rule("plan.diff", target) for target in targets)
    assert not breaks_a_rule("cli.commands", "controller.server")
