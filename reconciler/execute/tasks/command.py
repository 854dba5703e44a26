"""The command task: a program run from an argv list, never through a shell.

Each argv item is rendered on its own (``${params.X}``), so spaces, ``;`` or
``$(…)`` in a param are plain characters of one argument. The environment is
clean and minimal (PATH, HOME, LANG, TZ of the controller), plus the task's
``env`` (secure params resolved), its ``secretEnv`` references resolved, and
``RECONCILER_IDEMPOTENCY_KEY`` / ``RECONCILER_RESOURCE``. A secure param in argv
is refused: it would show in the process list.

The process runs in its own session; on the deadline (or cancellation) its
whole process group gets SIGTERM, then SIGKILL after a short grace. stdout and
stderr go line by line into the task log. Exit 0 succeeds; exit 75 (EX_TEMPFAIL)
is a temporary failure, retried; any other exit fails with the last lines of
stderr. When stdout is one JSON object, it is the task's ``result`` output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import PermanentError, TemporaryError
from reconciler.execute.context import Outcome, RunState, TaskContext
from reconciler.execute.tasklog import TaskLog
from reconciler.execute.template import render_str
from reconciler.model.tasks import CommandTask
from reconciler.secrets import REDACTOR, resolve

EX_TEMPFAIL = 75
KILL_GRACE = 2.0
TAIL_LINES = 20
STDOUT_KEPT = 64 * 1024
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "TZ")


def base_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    return env


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    stdout_head: str
    stdout_tail: tuple[str, ...]
    stderr_tail: tuple[str, ...]


async def _pump(
    stream: asyncio.StreamReader,
    log: TaskLog,
    prefix: str,
    tail: deque[str],
    kept: list[str] | None,
) -> None:
    pending = b""
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            log.write(f"{prefix}{line}")
            tail.append(line)
            if kept is not None and size < STDOUT_KEPT:
                kept.append(line)
                size += len(raw) + 1
    if pending:
        line = pending.decode("utf-8", "replace")
        log.write(f"{prefix}{line}")
        tail.append(line)
        if kept is not None and size < STDOUT_KEPT:
            kept.append(line)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_process(
    argv: list[str], *, env: Mapping[str, str], cwd: Path | None, log: TaskLog
) -> ProcessResult:
    """Run argv to its end, output into the log; cancelling it kills the process group."""
    log.event(f"$ {REDACTOR.text(json.dumps(argv))}" + (f" (in {cwd})" if cwd else ""))
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise PermanentError(f"command not found: {REDACTOR.text(argv[0])}") from None
    except PermissionError:
        raise PermanentError(f"command not executable: {REDACTOR.text(argv[0])}") from None
    except OSError as exc:
        raise PermanentError(f"cannot start {REDACTOR.text(argv[0])}: {exc.strerror}") from None
    assert process.stdout is not None and process.stderr is not None
    out_tail: deque[str] = deque(maxlen=TAIL_LINES)
    err_tail: deque[str] = deque(maxlen=TAIL_LINES)
    kept: list[str] = []
    try:
        await asyncio.gather(
            _pump(process.stdout, log, "", out_tail, kept),
            _pump(process.stderr, log, "stderr| ", err_tail, None),
            process.wait(),
        )
    except BaseException:
        # Deadline or cancellation: the whole group goes, gently first.
        _kill_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(process.wait()), KILL_GRACE)
        _kill_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        log.event(f"killed process group {process.pid}")
        raise
    returncode = process.returncode if process.returncode is not None else -1
    log.event(f"exit status {returncode}")
    return ProcessResult(returncode, "\n".join(kept), tuple(out_tail), tuple(err_tail))


def failure_text(what: str, result: ProcessResult) -> str:
    lines = result.stderr_tail or result.stdout_tail
    detail = "\n".join(lines[-10:]).strip()
    return REDACTOR.text(
        f"{what} exited with status {result.returncode}" + (f": {detail}" if detail else "")
    )


def _stdout_result(text: str) -> dict[str, object] | None:
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def attempt(task: CommandTask, ctx: TaskContext, run: RunState) -> Outcome:
    tvars = ctx.template_vars()
    argv = [
        render_str(arg, tvars, where=f"argv[{i}]", secrets="refuse")
        for i, arg in enumerate(task.argv)
    ]
    env = base_env()
    for key, value in task.env.items():
        env[key] = render_str(value, tvars, where=f"env.{key}", secrets="resolve")
    for key, ref in task.secret_env.items():
        env[key] = resolve(ref, base_dir=ctx.repo_dir)
    env["RECONCILER_IDEMPOTENCY_KEY"] = ctx.idempotency_key
    env["RECONCILER_RESOURCE"] = ctx.resource_key
    cwd = ctx.repo_dir
    if task.cwd:
        rendered = Path(render_str(task.cwd, tvars, where="cwd", secrets="refuse"))
        cwd = (
            rendered if rendered.is_absolute() or ctx.repo_dir is None else ctx.repo_dir / rendered
        )
    run.activity = f"running {REDACTOR.text(argv[0])}"
    result = await run_process(argv, env=env, cwd=cwd, log=ctx.log)
    if result.returncode == EX_TEMPFAIL:
        raise TemporaryError(failure_text(argv[0], result))
    if result.returncode != 0:
        raise PermanentError(failure_text(argv[0], result))
    outputs: dict[str, object] = {
        "exitCode": 0,
        "stdoutTail": REDACTOR.text("\n".join(result.stdout_tail)),
    }
    parsed = _stdout_result(result.stdout_head)
    if parsed is not None:
        outputs["result"] = REDACTOR.data(parsed)
    return Outcome(f"{argv[0]} exited with status 0", outputs)
