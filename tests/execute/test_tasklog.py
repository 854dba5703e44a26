"""Task logs: path layout, redaction, head + tail bound with an elision marker."""

from __future__ import annotations

from pathlib import Path

from reconciler.execute.tasklog import TaskLog, task_log_path
from reconciler.secrets import REDACTOR


def test_path_layout_is_safe(tmp_path: Path) -> None:
    path = task_log_path(tmp_path, "abcdef0123456789", "Machine/m1", "install-os", "run", "work")
    assert path == tmp_path / "logs/abcdef012345/Machine/m1/install-os/work-run.log"
    evil = task_log_path(tmp_path, "../..", "../x", "..", "a/b")
    assert evil.resolve().is_relative_to(tmp_path.resolve())


def test_bounded_keeps_head_and_tail(tmp_path: Path) -> None:
    with TaskLog.open(tmp_path, "f" * 64, "Machine/m1", "s", "t", limit=1000) as log:
        for i in range(1000):
            log.write(f"line {i:04d}")
        path = log.path
    assert path is not None
    text = path.read_text()
    assert text.startswith("line 0000\n")
    assert text.endswith("line 0999\n")
    assert "bytes elided" in text
    assert len(text.encode()) < 1100


def test_redacts_and_appends_on_resume(tmp_path: Path) -> None:
    REDACTOR.add("hunter2-secret-value")
    with TaskLog.open(tmp_path, "a" * 64, "Machine/m1", "s", "t") as log:
        log.write("password is hunter2-secret-value")
    with TaskLog.open(tmp_path, "a" * 64, "Machine/m1", "s", "t") as log:
        log.event("resumed")
        path = log.path
    assert path is not None
    text = path.read_text()
    assert "hunter2" not in text
    assert "password is ***" in text and "resumed" in text
