"""Secret references (`env:NAME`, `file:PATH`): resolution at the edge, redaction everywhere.

Secrets live outside the repository and outside settings values; only references
travel. `resolve` is called by the edge that needs the value (a Git transport, a
provider, a task), and every resolved value is registered with the process-wide
`REDACTOR`, which log processors, plans, status writers and error messages use
to replace it with `***`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.model.common import is_secret_ref

REDACTED = "***"


class SecretUnavailable(PermanentError):
    """A reference points at nothing: the env var is unset or the file unreadable."""


class Redactor:
    """Remembers secret values seen in this process and scrubs them from text and data."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._scrubbed: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self.generation = 0
        """Grows with every secret added: text redacted before may hold the new one."""

    def add(self, value: str) -> None:
        # Very short values would redact ordinary text ("a", "1"): still hidden where
        # they are printed as whole values, but not scrubbed from inside other text.
        if value:
            with self._lock:
                self._values.add(value)
                # Longest first (a secret that contains another goes whole), sorted here
                # once rather than for every string scrubbed: a cycle scrubs 100,000s.
                self._scrubbed = tuple(
                    v for v in sorted(self._values, key=len, reverse=True) if len(v) >= 4
                )
                self.generation += 1

    def text(self, text: str) -> str:
        for value in self._scrubbed:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def data(self, data: Any) -> Any:
        """A copy of JSON-like data with every secret value (and inside strings) scrubbed."""
        if isinstance(data, str):
            return REDACTED if data in self._values else self.text(data)
        if isinstance(data, dict):
            return {k: self.data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.data(v) for v in data]
        return data


REDACTOR = Redactor()


def resolve(ref: str, *, base_dir: Path | None = None) -> str:
    """The secret a reference points at; registered for redaction before it is returned."""
    if not is_secret_ref(ref):
        raise SecretUnavailable("not a secret reference (expected env:NAME or file:PATH)")
    scheme, _, target = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(target)
        if value is None:
            raise SecretUnavailable(f"secret reference {ref}: environment variable is not set")
    else:
        path = Path(target).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretUnavailable(f"secret reference {ref}: {exc.strerror or exc}") from None
    REDACTOR.add(value)
    return value


def redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: no log line carries a resolved secret."""
    return REDACTOR.data(event_dict)
