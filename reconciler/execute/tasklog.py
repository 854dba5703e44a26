"""Bounded, redacted per-task logs in the state directory, for troubleshooting.

Part of execute: every runner writes what it did into its task's log — command
output, HTTP exchanges (secret headers and values redacted), provider responses —
and the status of a failed resource points at the file:

    <state_dir>/logs/<plan-hash[:12]>/<Kind>/<name>/<stage>/[<point>-]<task>.log

A log is bounded (256 KiB by default): the first half is written to the file as
it comes (buffered, flushed at most once a second and on close); past it, only
the latest bytes are kept, written behind the head and a ``… N bytes elided …``
marker on each flush. Every line goes through `REDACTOR.text` before it is stored. A resumed
task appends to its existing log.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from reconciler.secrets import REDACTOR

DEFAULT_LIMIT = 256 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _safe(part: str) -> str:
    part = _UNSAFE.sub("_", part)
    return "_" if part in {"", ".", ".."} else part


def task_log_path(
    state_dir: Path, plan_hash: str, resource: str, stage: str, task: str, point: str | None = None
) -> Path:
    """Where a task's log lives; every component is made safe for a file name."""
    name = f"{_safe(point)}-{_safe(task)}.log" if point else f"{_safe(task)}.log"
    resource_dirs = [_safe(p) for p in resource.split("/")]
    return Path(state_dir, "logs", _safe(plan_hash[:12]), *resource_dirs, _safe(stage), name)


class TaskLog:
    """Append-only, size-bounded, redacted text log of one task (`path` None: discard)."""

    def __init__(self, path: Path | None, *, limit: int = DEFAULT_LIMIT) -> None:
        self.path = path
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._tail = bytearray()
        self._elided = 0
        self._dirty = False
        self._last_flush = time.monotonic()
        self._file: IO[bytes] | None = None
        self._head_end = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
            self._head_end = self._file.tell()

    @classmethod
    def open(
        cls,
        state_dir: Path,
        plan_hash: str,
        resource: str,
        stage: str,
        task: str,
        *,
        point: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> TaskLog:
        return cls(task_log_path(state_dir, plan_hash, resource, stage, task, point), limit=limit)

    def write(self, text: str) -> None:
        """Append text (a line break is added if missing), redacted."""
        if self._file is None:
            return
        if not text.endswith("\n"):
            text += "\n"
        data = REDACTOR.text(text).encode("utf-8", "replace")
        room = self._head_limit - self._head_end
        if room > 0 and not self._tail:
            head, data = data[:room], data[room:]
            self._file.write(head)  # buffered: flushed at most once a second, and on close
            self._head_end += len(head)
        if data:
            self._tail += data
            excess = len(self._tail) - self._tail_limit
            if excess > 0:
                del self._tail[:excess]
                self._elided += excess
        self._dirty = True
        if time.monotonic() - self._last_flush > 1.0:
            self.flush()

    def event(self, text: str) -> None:
        """A timestamped line: what the runner did (requests, polls, decisions)."""
        self.write(f"[{datetime.now(UTC).isoformat(timespec='milliseconds')}] {text}")

    def flush(self) -> None:
        if self._file is None or not self._dirty:
            return
        if self._tail:
            self._file.flush()
            self._file.truncate(self._head_end)
            if self._elided:
                self._file.write(f"\n… {self._elided} bytes elided …\n".encode())
            self._file.write(self._tail)
        self._file.flush()
        self._dirty = False
        self._last_flush = time.monotonic()

    @classmethod
    async def open_async(cls, *args: Any, **kwargs: Any) -> TaskLog:
        """`open` off the event loop: creating directories and files can take a while."""
        return await asyncio.to_thread(cls.open, *args, **kwargs)

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    async def aclose(self) -> None:
        """`close` off the event loop."""
        if self._file is not None:
            await asyncio.to_thread(self.close)

    def __enter__(self) -> TaskLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


NULL_LOG = TaskLog(None)
"""A log that keeps nothing: the default sink of a `TaskContext`."""
