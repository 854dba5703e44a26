"""`apply` on a terminal, as a person sees it: a real pseudo-terminal (os.openpty) as the
process's stdin, stdout and stderr, and assertions on what the terminal received.

The live view (counts, a row per running resource with its stage, task and time), a
failure shown once and in words, the confirmation prompt before destructive actions
(answered on the terminal), and Ctrl-C (SIGINT) saying what was in flight, what was
journaled and how the next run resumes — which the next run then does.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import BASE_FILES
from tests.e2e.support import Fleet

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")

Step = tuple[str, Callable[[subprocess.Popen[bytes], int], None]]


def on_terminal(fleet: Fleet, *args: str, steps: list[Step] = (), timeout: float = 120.0
                ) -> tuple[int, str]:  # fmt: skip
    """Run the CLI on a pseudo-terminal; when the screen shows a step's text, do its
    action. The exit code and everything the terminal received, escapes removed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {**fleet.env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(fleet.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True)  # fmt: skip
    os.close(slave)
    received = b""
    pending = list(steps)
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
            text = ANSI.sub("", received.decode("utf-8", "replace")).replace("\r", "")
            if pending and pending[0][0] in text:
                pending.pop(0)[1](proc, master)
        else:
            proc.kill()
            raise AssertionError(f"timed out; the terminal showed:\n{received[-3000:]!r}")
    finally:
        os.close(master)
    code = proc.wait(timeout=30)
    assert not pending, f"never shown: {pending[0][0]!r}"
    return code, ANSI.sub("", received.decode("utf-8", "replace")).replace("\r", "")


def slow_fleet(tmp_path: Path, settings: str) -> Fleet:
    files = dict(BASE_FILES)
    files["providers.yaml"] = files["providers.yaml"].replace(
        "spec: {type: simulator}", f"spec: {{type: simulator, settings: {settings}}}"
    )
    return Fleet.create(tmp_path, files)


def test_the_live_view_shows_counts_and_what_each_running_resource_does(tmp_path: Path) -> None:
    fleet = slow_fleet(tmp_path, "{latency: {install-os: 2s}}")
    code, screen = on_terminal(fleet, "apply")
    assert code == 0, screen
    # m2 depends on m1: while m1 installs its OS, one runs and one waits.
    assert "1 running · 1 waiting · 0 done · 0 failed" in screen
    assert re.search(r"Machine/m1\s+install-os\s+install\s+0:0\d", screen), screen
    assert "0 running · 0 waiting · 2 done · 0 failed" in screen
    assert '{"' not in screen  # structured JSON lines are for logs, not for people
    assert "resources: 2 Ready" in screen


def test_a_failure_is_shown_once_in_words(tmp_path: Path) -> None:
    fleet = slow_fleet(tmp_path, "{failureRate: 1.0}")
    code, screen = on_terminal(fleet, "apply")
    assert code == 1, screen
    failure = "✗ Machine/m1 failed at stage install-os, task install: install-os on Machine/m1"
    assert screen.count(failure) == 1, screen
    assert "simulated failure" in screen.split(failure, 1)[1].splitlines()[0]
    assert screen.count("Machine/m2 skipped: dependency Machine/m1 did not succeed") == 1
    assert "FAILED" not in screen and '{"' not in screen
    assert "0 running · 0 waiting · 0 done · 1 failed · 1 skipped" in screen


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=A", "-c", "user.email=a@example.com", *args],
                   cwd=cwd, check=True, capture_output=True)  # fmt: skip


def status_file(fleet: Fleet, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(fleet.bare), "show", f"reconciler/status:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_destructive_actions_wait_for_a_yes_on_the_terminal(tmp_path: Path) -> None:
    files = dict(BASE_FILES)
    files["stages.yaml"] = files["stages.yaml"].replace(
        "  converges: [params.os]\n", "  converges: [params.os]\n  destructive: true\n", 1
    )
    fleet = Fleet.create(tmp_path, files)
    assert fleet.run("apply").returncode == 0  # creating is not destructive
    work = tmp_path / "work"
    git("clone", "-q", str(fleet.bare), str(work), cwd=tmp_path)
    machines = work / "machines.yaml"
    machines.write_text(machines.read_text().replace("{os: ubuntu}", "{os: rhel}", 1))
    git("commit", "-qam", "Re-image m1", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)

    def answer(text: bytes) -> Callable[[subprocess.Popen[bytes], int], None]:
        return lambda _proc, master: os.write(master, text)

    code, screen = on_terminal(fleet, "apply", steps=[("Run them", answer(b"n\n"))])
    assert code == 2, screen
    assert "- Machine/m1 update (install-os, install-app)" in screen
    assert "apply cancelled: nothing was run" in screen
    assert re.search(r"^resources: .*1 Pending", screen, re.M), screen  # m1 waits
    assert status_file(fleet, "status/Machine/m1.yaml").count("phase: Pending") == 1
    code, screen = on_terminal(fleet, "apply", steps=[("Run them", answer(b"y\n"))])
    assert code == 0, screen  # m2's drift (selfHeal off) is reported, not a failure
    assert "phase: Ready" in status_file(fleet, "status/Machine/m1.yaml")


def test_ctrl_c_says_what_was_in_flight_and_the_next_run_resumes(tmp_path: Path) -> None:
    fleet = slow_fleet(tmp_path, "{latency: {install-os: 3s}}")

    def interrupt(proc: subprocess.Popen[bytes], _master: int) -> None:
        proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C

    code, screen = on_terminal(fleet, "apply", steps=[("install-os  install", interrupt)])
    assert code == 130, screen
    # Graceful, as `run` is: what is in flight finishes and is journaled, nothing new starts.
    assert "SIGINT: no new tasks start" in screen
    assert "in flight: Machine/m1: stage install-os, task install" in screen
    assert "stopped by SIGINT: tasks in flight finished and were journaled" in screen
    assert "resumes plan" in screen
    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed an unfinished plan" in again.stdout
