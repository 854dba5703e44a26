"""Error types, named by what the controller should do next.

Every third-party exception (pygit2, httpx, boto3, sushy, sqlite3) is translated
into one of these at the edge that called the library, nowhere else::

    ReconcilerError
    ├── InvalidInput        stop and report: the declared state is wrong (carries Diagnostics)
    ├── TemporaryError      retry later with backoff: a remote is down, a 5xx, a 429
    ├── WaitingError        not a failure: an operation is still running, poll again later
    └── PermanentError      stop this piece of work and report: retrying cannot help

`Diagnostic` is a located message about a document: ``path:line:col: message``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Diagnostic:
    """A message about one place in the declared repository (1-based line and column)."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "col": self.col, "message": self.message}


class ReconcilerError(Exception):
    """Base of every error the controller raises on purpose."""


class InvalidInput(ReconcilerError):
    """The declared state cannot be used; the last good state stays in force."""

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
        self.diagnostics = tuple(sorted(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class TemporaryError(ReconcilerError):
    """Worth retrying after a backoff; `retry_after` (seconds) is a hint from the remote."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WaitingError(ReconcilerError):
    """The work is progressing elsewhere; poll again after `poll_after` seconds."""

    def __init__(self, message: str, *, poll_after: float = 1.0) -> None:
        super().__init__(message)
        self.poll_after = poll_after


class PermanentError(ReconcilerError):
    """Retrying will not help; fail the piece of work with this reason."""
