"""The lease: one controller per state directory (without a shared database).

Beside the journal (`journal.py`), chosen by
`reconciler.controller.leader.acquire_lease` when there is no
`RECONCILER_DATABASE_URL` (with one, the leader lease in the database,
`reconciler.controller.leader`, takes its place).

`Lease.acquire` takes an exclusive, non-blocking ``flock`` on ``<state_dir>/lease``
and writes who holds it (holder, pid, hostname, start time) into that file. A second process gets
`LeaseHeld` naming the holder. The kernel drops the lock when its process dies,
so a stale file from a dead process blocks nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.execute.journal import _now


class LeaseHeld(ReconcilerError):
    """Another controller holds this state directory."""

    def __init__(self, state_dir: Path, holder: dict[str, Any] | str) -> None:
        self.holder = holder
        if isinstance(holder, dict):
            who = (
                f"{holder.get('holder', '?')} (pid {holder.get('pid', '?')} on "
                f"{holder.get('hostname', '?')}, since {holder.get('started', '?')})"
            )
        else:
            who = holder or "an unknown process"
        super().__init__(f"state directory {state_dir} is in use by {who}")


class Lease:
    """An exclusive hold on a state directory for the life of this process (or `release`)."""

    FILENAME = "lease"

    def __init__(self, path: Path, fd: int, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path, holder: str = "reconciler") -> Lease:
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / cls.FILENAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            try:
                info: dict[str, Any] | str = json.loads(text)
            except json.JSONDecodeError:
                info = text.strip()
            raise LeaseHeld(state_dir, info) from None
        info = {
            "holder": holder,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started": _now(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        return cls(path, fd, info)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
