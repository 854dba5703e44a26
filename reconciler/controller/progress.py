"""What `apply` and `demo` show while a plan runs: a live view on a terminal, JSON lines off one.

The executor's events (`plan.started`, `resource.started`, `task.started`,
`stage.done`, `task.failed`, `resource.finished`, `resource.skipped`,
`plan.finished`) are folded into a `ProgressState` (a plain value updated by
`apply`, which returns the lines worth printing once: a failure, a skip). On a
terminal, `LiveView` renders that state with rich — counts of running, waiting,
done and failed resources, the elapsed time, one row per running resource with its
stage, task and how long it has been in it — and prints each failure once, above
the view, in words. Off a terminal every event is one structured JSON line
(structlog) on stderr, as before. On Ctrl-C, `interrupted` says what was in flight,
what the journal holds, and how the next run resumes.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from reconciler.logs import configure_logging

MAX_ROWS = 12
"""Running resources shown as rows; the others are counted in one more line."""


@dataclass
class Running:
    stage: str = "-"
    task: str = "-"
    since: float = 0.0
    operation: str = ""


@dataclass
class ProgressState:
    """The executor's events so far, folded. `clock` gives monotonic seconds."""

    clock: Callable[[], float] = time.monotonic
    total: int = 0
    execution: str | None = None
    began: float | None = None
    running: dict[str, Running] = field(default_factory=dict)
    done: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    finished: bool = False
    ended: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Resources that ended: (succeeded, failed or skipped; the error or the reason)."""
    paused: dict[str, str] = field(default_factory=dict)
    """Rollouts that paused during this execution, and why."""

    @property
    def waiting(self) -> int:
        return max(0, self.total - len(self.running) - self.done - self.failed - self.skipped)

    def apply(self, event: dict[str, Any]) -> list[str]:
        """Take one event; the lines to print once because of it (failures, skips)."""
        name, key, now = event.get("event"), event.get("resource"), self.clock()
        if name == "plan.started":
            self.total += int(event.get("actions", 0))
            self.execution = event.get("execution")
            self.began = self.began or now
        elif name == "resource.started" and key:
            self.running[key] = Running(since=now, operation=str(event.get("operation", "")))
        elif name == "task.started" and key:
            row = self.running.setdefault(key, Running(since=now))
            if row.stage != event.get("stage"):
                row.stage, row.since = str(event.get("stage")), now
            row.task = str(event.get("task"))
        elif name == "task.failed" and key:
            line = (
                f"✗ {key} failed at stage {event.get('stage')}, task {event.get('task')}: "
                f"{event.get('error')}"
            )
            self.failures.append(line)
            self.ended[key] = ("failed", f"stage {event.get('stage')}: {event.get('error')}")
            return [line]
        elif name == "resource.finished" and key:
            self.running.pop(key, None)
            result = event.get("result")
            why = self.ended.get(key, ("", ""))[1] if result == "failed" else ""
            self.ended[key] = (str(result), why)
            if result == "succeeded":
                self.done += 1
            elif result == "failed":
                self.failed += 1
            else:
                self.skipped += 1
        elif name == "resource.skipped" and key:
            self.running.pop(key, None)
            self.skipped += 1
            self.ended[key] = ("skipped", str(event.get("reason", "")))
            return [f"- {key} skipped: {event.get('reason')}"]
        elif name == "rollout.paused":
            self.paused[str(event.get("rollout"))] = str(event.get("reason", ""))
        elif name == "plan.finished":
            self.finished = True
        return []

    def counts(self) -> str:
        elapsed = self.clock() - self.began if self.began is not None else 0.0
        parts = [
            f"{len(self.running)} running",
            f"{self.waiting} waiting",
            f"{self.done} done",
            f"{self.failed} failed",
        ]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return " · ".join(parts) + f" · {_duration(elapsed)} elapsed"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """The executor's event sink for `apply`: a live view on a terminal, else JSON lines."""

    def __init__(self, *, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        configure_logging(json_logs=not self.interactive)
        self.log = structlog.get_logger("reconciler")
        self.state = ProgressState()
        self._lock = threading.Lock()
        self._live: Any = None

    @property
    def shown(self) -> bool:
        """Failures were shown as they happened (the cycle summary need not repeat them)."""
        return self.interactive and self.state.total > 0

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.interactive:
            fields = dict(event)
            self.log.info(fields.pop("event"), **fields)
            return
        with self._lock:
            lines = self.state.apply(event)
        if event.get("event") == "plan.started" and self._live is None and self.state.total:
            self._start()
        for line in lines:
            self._print(line)
        if event.get("event") == "plan.finished":
            self.stop()

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        self._live = Live(
            get_renderable=self._render,
            console=console,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start()

    def _print(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, style="red" if line.startswith("✗") else None)
        else:
            print(line, file=sys.stderr)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            state = self.state
            now = state.clock()
            rows = sorted(state.running.items(), key=lambda item: item[1].since)
            header = Text(state.counts(), style="bold")
        table = Table("resource", "stage", "task", "for", box=None, pad_edge=False)
        for key, row in rows[:MAX_ROWS]:
            table.add_row(key, row.stage, row.task, _duration(now - row.since))
        parts: list[Any] = [header]
        if rows:
            parts.append(table)
        if len(rows) > MAX_ROWS:
            parts.append(Text(f"… and {len(rows) - MAX_ROWS} more running"))
        return Group(*parts)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            print(f"{self.state.counts()}", file=sys.stderr, flush=True)

    def in_flight(self) -> list[str]:
        """`Kind/name: stage S, task T` of each resource with a task running now."""
        return [
            f"{key}: stage {row.stage}, task {row.task}"
            for key, row in sorted(self.state.running.items())
        ]

    def interrupted(self, state_dir: Path) -> None:
        """Ctrl-C: what was in flight, what the journal holds, how the next run resumes."""
        self.stop()
        state = self.state
        out = sys.stderr
        print("\ninterrupted (Ctrl-C)", file=out)
        if state.running:
            print("in flight:", file=out)
            for key, row in sorted(state.running.items()):
                print(f"  {key}: stage {row.stage}, task {row.task}", file=out)
        else:
            print("in flight: nothing", file=out)
        finished, started = journaled(state_dir / "journal.sqlite", state.execution)
        print(
            f"journaled: {finished} tasks finished, {started} started and not finished "
            f"({state_dir / 'journal.sqlite'})",
            file=out,
        )
        print(
            "next: `reconciler apply` (or `run`) resumes this plan first: finished tasks "
            "are not run again, unfinished ones run again with the same idempotency key",
            file=out,
            flush=True,
        )


def journaled(journal: Path, execution: str | None) -> tuple[int, int]:
    """Tasks of `execution` in the journal: (finished, started but not finished)."""
    if execution is None or not journal.exists():
        return 0, 0
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return 0, 0
    try:
        rows = conn.execute(
            "SELECT state = 'finished', count(*) FROM tasks WHERE plan_hash = ? GROUP BY 1",
            (execution,),
        ).fetchall()
    except sqlite3.Error:
        return 0, 0
    finally:
        conn.close()
    counts = {bool(done): int(n) for done, n in rows}
    return counts.get(True, 0), counts.get(False, 0)
