"""The command runner with real subprocesses: argv not shell, env, secrets, timeout kill."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from reconciler.execute import TaskLog, run_task

from .conftest import CANARY, CANARY_ENV, assert_no_canary, make_ctx, task

REPORT = """
import json, os, sys
print(json.dumps({
    "argv": sys.argv[1:],
    "key": os.environ.get("RECONCILER_IDEMPOTENCY_KEY"),
    "resource": os.environ.get("RECONCILER_RESOURCE"),
    "os": os.environ.get("OS_NAME"),
    "secret_ok": os.environ.get("API_TOKEN", "").startswith("canary-"),
    "leaked_parent_env": "RECONCILER_TEST_PARENT_ONLY" in os.environ,
    "cwd": os.getcwd(),
}))
print("the token is", os.environ["API_TOKEN"], file=sys.stderr)
"""


def test_argv_is_not_a_shell_and_env_is_clean(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RECONCILER_TEST_PARENT_ONLY", "1")
    evil = "x; touch pwned && echo $(id)"
    t = task(
        type="command",
        argv=[sys.executable, "-c", REPORT, "a b; echo hi", "${params.evil}", "--n=${params.size}"],
        env={"OS_NAME": "${params.os}"},
        secretEnv={"API_TOKEN": f"env:{CANARY_ENV}"},
    )
    log = TaskLog.open(tmp_path / "state", "p" * 64, "Machine/m1", "s", "cmd")
    ctx = make_ctx(params={"os": "ubuntu", "size": 3, "evil": evil}, repo_dir=tmp_path, log=log)
    result = asyncio.run(run_task(t, ctx))
    log.close()
    assert result.ok, result.message
    report = result.outputs["result"]
    assert report["argv"] == ["a b; echo hi", evil, "--n=3"]
    assert report["key"] == ctx.idempotency_key
    assert report["resource"] == "Machine/m1"
    assert report["os"] == "ubuntu"
    assert report["secret_ok"] is True
    assert report["leaked_parent_env"] is False
    assert report["cwd"] == str(tmp_path)
    assert not (tmp_path / "pwned").exists()
    log_text = Path(result.log_path or "").read_text()
    assert "stderr| the token is ***" in log_text
    assert_no_canary(tmp_path / "state", result.to_json())


def test_secret_never_on_the_command_line() -> None:
    t = task(type="command", argv=["echo", "${params.token}"])
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok and "secure param 'token'" in result.message
    assert_no_canary(result.to_json())


def test_nonzero_exit_fails_with_redacted_stderr_tail() -> None:
    script = (
        "import os, sys\n"
        "for i in range(30): print('noise', i, file=sys.stderr)\n"
        "print('failed with', os.environ['T'], file=sys.stderr)\n"
        "sys.exit(3)"
    )
    t = task(
        type="command", argv=[sys.executable, "-c", script], secretEnv={"T": f"env:{CANARY_ENV}"}
    )
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok and result.attempts == 1
    assert "exited with status 3" in result.message
    assert "failed with ***" in result.message and "noise 29" in result.message
    assert "noise 0\n" not in result.message
    assert CANARY not in result.message


def test_tempfail_exit_is_retried() -> None:
    t = task(
        type="command",
        argv=[sys.executable, "-c", "import sys; sys.exit(75)"],
        retry={"attempts": 3, "initialBackoff": 0.01},
    )
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok and result.attempts == 3
    assert "gave up after 3 attempts" in result.message


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)"
    )
    t = task(type="command", argv=[sys.executable, "-c", script], timeout=1.0)
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok
    assert result.message.startswith("deadline exceeded after ")
    pids = [int(p) for p in pidfile.read_text().split()]
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids), f"still alive: {pids}"


def test_missing_program_is_permanent() -> None:
    t = task(type="command", argv=["/nonexistent/program-xyz"])
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok and result.attempts == 1
    assert "command not found" in result.message


def test_controller_environment_is_not_inherited() -> None:
    t = task(
        type="command",
        argv=[sys.executable, "-c", "import os, json; print(json.dumps(sorted(os.environ)))"],
    )
    result = asyncio.run(run_task(t, make_ctx()))
    assert result.ok
    names = set(json.loads(result.outputs["stdoutTail"]))
    assert names <= {
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "RECONCILER_IDEMPOTENCY_KEY",
        "RECONCILER_RESOURCE",
        "LC_CTYPE",
    }
    assert CANARY_ENV not in names and os.environ.get(CANARY_ENV) == CANARY
