"""Templating of task fields: ``${params.NAME}`` and ``${resource.name|kind|key}``.

Part of execute: a runner renders its task's string fields just before it uses
them, never through a shell. Substitution is textual and recursive over lists and
dict values (args, body, headers, argv, extraVars); dict keys are left alone.

- A string that is exactly one ``${...}`` takes the variable's value with its type
  (a number stays a number in a JSON body); inside longer text a value is inserted
  as text (JSON for lists and dicts).
- ``$${`` is a literal ``${``.
- An unknown variable is a `PermanentError` naming it and the field.
- Secure params hold references (``env:X``, ``file:P``). They are resolved here,
  at the edge that uses them, only when the caller allows it (``secrets="resolve"``):
  `reconciler.secrets.resolve` registers each value with the redactor, so logs,
  journal rows and results never show it. Fields that would leak a secret (argv, a
  notification message, an Ansible limit) render with ``secrets="refuse"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reconciler.errors import PermanentError
from reconciler.secrets import resolve

_VARIABLE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"^(params\.[A-Za-z0-9_.-]+|resource\.(name|kind|key))$")

SecretMode = Literal["resolve", "refuse"]


@dataclass(frozen=True)
class TemplateVars:
    """What a template may refer to: the resource and its effective params."""

    resource_key: str
    resource_kind: str
    resource_name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    secure_params: frozenset[str] = frozenset()
    secrets_base_dir: Path | None = None

    def lookup(self, name: str, *, where: str, secrets: SecretMode) -> Any:
        if not _NAME.match(name):
            raise PermanentError(f"{where}: unknown template variable ${{{name}}}")
        scope, _, rest = name.partition(".")
        if scope == "resource":
            return {"key": self.resource_key, "kind": self.resource_kind}.get(
                rest, self.resource_name
            )
        if rest not in self.params:
            raise PermanentError(f"{where}: template variable ${{{name}}} is not set")
        value = self.params[rest]
        if rest in self.secure_params:
            if secrets == "refuse":
                raise PermanentError(
                    f"{where}: secure param {rest!r} may not be used here "
                    "(it would be exposed); pass it through env, secretEnv or a body"
                )
            return resolve(str(value), base_dir=self.secrets_base_dir)
        return value

    def resolved_params(self) -> dict[str, Any]:
        """Every param, secure ones resolved: for an edge that hands them all over."""
        return {
            name: (
                resolve(str(value), base_dir=self.secrets_base_dir)
                if name in self.secure_params
                else value
            )
            for name, value in self.params.items()
        }


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def render_text(text: str, tvars: TemplateVars, *, where: str, secrets: SecretMode) -> Any:
    """One string rendered; keeps the variable's type when the string is just ``${...}``."""
    if "$" not in text:
        return text
    whole = _VARIABLE.fullmatch(text)
    if whole and whole.group(1) is not None:
        return tvars.lookup(whole.group(1).strip(), where=where, secrets=secrets)

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "${"
        return _as_text(tvars.lookup(match.group(1).strip(), where=where, secrets=secrets))

    return _VARIABLE.sub(substitute, text)


def render(value: Any, tvars: TemplateVars, *, where: str, secrets: SecretMode = "resolve") -> Any:
    """A copy of JSON-like `value` with every string rendered (recursively)."""
    if isinstance(value, str):
        return render_text(value, tvars, where=where, secrets=secrets)
    if isinstance(value, Mapping):
        return {
            k: render(v, tvars, where=f"{where}.{k}", secrets=secrets) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            render(v, tvars, where=f"{where}[{i}]", secrets=secrets) for i, v in enumerate(value)
        ]
    return value


def render_str(value: str, tvars: TemplateVars, *, where: str, secrets: SecretMode) -> str:
    """A string field rendered, always as text (argv items, URLs, header values)."""
    return _as_text(render_text(value, tvars, where=where, secrets=secrets))


def referenced_params(value: Any) -> set[str]:
    """Names of the params `value`'s strings refer to as ``${params.NAME}``, recursively
    over lists and dict values like `render` (for checks made before anything runs)."""
    if isinstance(value, str):
        return {
            name.strip().removeprefix("params.")
            for name in (m.group(1) for m in _VARIABLE.finditer(value))
            if name is not None and name.strip().startswith("params.")
        }
    if isinstance(value, Mapping):
        return {n for v in value.values() for n in referenced_params(v)}
    if isinstance(value, list | tuple):
        return {n for v in value for n in referenced_params(v)}
    return set()
