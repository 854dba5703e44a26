"""`reconciler demo` on a terminal, as a person sees it: the live view, not JSON lines.

A real pseudo-terminal (os.openpty) is the demo's stdin, stdout and stderr; the
demo runs from an empty folder as the README's first command. The terminal must
have shown the live view's counts while resources were running and waiting, a row
per running resource with its stage and task, the end state with every resource
done, the stand-in webhooks' one line per resource, and no structured JSON line.
Off a terminal the demo's output is JSON lines (tests/e2e/test_demo.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from reconciler.cli.demo import DEMO_SINK_PORT
from tests.conftest import ROOT
from tests.e2e.test_demo import demo_port, port_free

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")
LIVE = re.compile(r"(\d+) running · (\d+) waiting · (\d+) done · (\d+) failed")


def demo_on_terminal(cwd: Path, timeout: float = 180.0) -> tuple[int, str]:
    """`reconciler demo` on a pseudo-terminal in `cwd`: the exit code and what the
    terminal received, escapes removed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env |= {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "demo"], cwd=cwd, env=env,
                            stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    chunk = b""
                received += chunk
                if not chunk and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"timed out; the terminal showed:\n{received[-3000:]!r}")
    finally:
        os.close(master)
    code = proc.wait(timeout=30)
    return code, ANSI.sub("", received.decode("utf-8", "replace")).replace("\r", "")


def test_the_demo_shows_the_live_view_on_a_terminal(tmp_path: Path) -> None:
    with demo_port():
        deadline = time.monotonic() + 120
        while not port_free(DEMO_SINK_PORT) and time.monotonic() < deadline:
            time.sleep(0.2)
        code, screen = demo_on_terminal(tmp_path)
    assert code == 0, screen[-3000:]
    counts = [tuple(int(n) for n in m) for m in LIVE.findall(screen)]
    assert counts, screen[-3000:]
    total = sum(counts[-1])
    assert counts[-1] == (0, 0, total, 0) and total > 1, counts[-1]  # all done at the end
    assert any(running > 0 and waiting > 0 for running, waiting, _, _ in counts), counts
    # A row per running resource: its key, stage, task and the time it has been there.
    assert re.search(r"\b[A-Z][a-z]+/[a-z0-9-]+\s+[a-z0-9-]+\s+[a-z0-9-]+\s+0:\d\d", screen), (
        screen[-3000:]
    )
    assert f"resources: {total} Ready" in screen
    # The stand-in webhooks: one summary line per resource, not one per stage.
    hooks = re.findall(r"^\s*\[demo webhooks\] (\S+): ", screen, re.M)
    assert len(hooks) == total and len(set(hooks)) == total, hooks
    assert '{"' not in screen  # JSON lines are for logs, not for people
