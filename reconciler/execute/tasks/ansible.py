"""The ansible task: ``ansible-playbook`` from the repository against the resource.

Runs through the command machinery (argv, clean environment, process-group kill
on the deadline, output into the task log). For each run a private temporary
directory (0700, removed afterwards) holds:

- ``inventory.json``: the resource as the only host, named after it, with
  ``ansible_connection=local`` unless the params give a host (``ansible_host``,
  ``ansibleHost`` or ``host``; then also ``ansible_user``/``ansibleUser``,
  ``ansible_port``/``ansiblePort``);
- ``vars.json`` (mode 0600): the effective params, secure ones resolved, then the
  task's ``extraVars`` (rendered), plus ``reconciler_resource`` and
  ``reconciler_idempotency_key``; passed as ``-e @vars.json`` so no value is on the
  command line;
- ``ANSIBLE_HOME``, ``ANSIBLE_LOCAL_TEMP``, ``ANSIBLE_REMOTE_TEMP``.

Exit 0 succeeds; exit 4 (hosts unreachable) is temporary; anything else fails
with the failed task named (``TASK [...]`` followed by ``fatal:``/``failed:``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError, TemporaryError
from reconciler.execute.context import Outcome, RunState, TaskContext
from reconciler.execute.tasks.command import base_env, failure_text, run_process
from reconciler.execute.template import render, render_str
from reconciler.model.tasks import AnsibleTask
from reconciler.secrets import REDACTOR

RC_UNREACHABLE = 4
DETAIL_LIMIT = 300
"""Characters of one failed task's message kept in the error (redacted before the cut)."""
_TASK_HEADER = re.compile(r"^TASK \[(?P<name>.*)\]")
_FAILED = re.compile(r"^(fatal|failed): \[(?P<host>[^\]]*)\]")
_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(\w+=\d+\s*)+)$")


def ansible_playbook() -> str:
    """``ansible-playbook`` next to this Python first (a venv), then on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise PermanentError("ansible-playbook is not installed (pip install ansible-core)")
    return found


def _first(params: dict[str, Any], *names: str) -> Any:
    return next((params[n] for n in names if params.get(n) not in (None, "")), None)


def inventory(host_name: str, params: dict[str, Any]) -> dict[str, Any]:
    host = _first(params, "ansible_host", "ansibleHost", "host")
    if host is None:
        variables: dict[str, Any] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
        }
    else:
        variables = {"ansible_host": host}
        user = _first(params, "ansible_user", "ansibleUser")
        port = _first(params, "ansible_port", "ansiblePort")
        if user is not None:
            variables["ansible_user"] = user
        if port is not None:
            variables["ansible_port"] = port
    return {"all": {"hosts": {host_name: variables}}}


def failed_tasks(lines: list[str]) -> list[str]:
    """``task 'X' on host: message`` for each failure in ansible's default output."""
    found: list[str] = []
    current = "?"
    for line in lines:
        if match := _TASK_HEADER.match(line):
            current = match["name"]
        elif match := _FAILED.match(line):
            detail = line[match.end() :].strip(" :=>")
            found.append(
                f"task {current!r} on {match['host']}: {REDACTOR.truncate(detail, DETAIL_LIMIT)}"
            )
    return list(dict.fromkeys(found))


def recap(lines: list[str]) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in lines:
        if line.startswith("PLAY RECAP"):
            in_recap = True
        elif in_recap and (match := _RECAP.match(line.strip())):
            counts = dict(part.split("=") for part in match["counts"].split())
            stats[match["host"]] = {k: int(v) for k, v in counts.items()}
    return stats


def playbook_path(ctx: TaskContext, playbook: str) -> Path:
    if ctx.repo_dir is None:
        raise PermanentError("ansible task needs the repository checkout (repo_dir)")
    repo = ctx.repo_dir.resolve()
    path = (repo / playbook).resolve()
    if not path.is_relative_to(repo):
        raise PermanentError(f"playbook {playbook!r} is outside the repository")
    if not path.is_file():
        raise PermanentError(f"playbook {playbook!r} not found in the repository")
    return path


async def attempt(task: AnsibleTask, ctx: TaskContext, run: RunState) -> Outcome:
    tvars = ctx.template_vars()
    path = playbook_path(ctx, render_str(task.playbook, tvars, where="playbook", secrets="refuse"))
    params = tvars.resolved_params()
    extra = {
        **params,
        **render(task.extra_vars, tvars, where="extraVars", secrets="resolve"),
        "reconciler_resource": ctx.resource_key,
        "reconciler_idempotency_key": ctx.idempotency_key,
    }
    with tempfile.TemporaryDirectory(prefix="reconciler-ansible-") as tmp:
        workdir = Path(tmp)
        inventory_file = workdir / "inventory.json"
        inventory_file.write_text(json.dumps(inventory(ctx.resource_name, params)))
        vars_file = workdir / "vars.json"
        fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(extra, handle, default=str)
        env = base_env()
        env.update(
            ANSIBLE_HOME=str(workdir / "home"),
            ANSIBLE_LOCAL_TEMP=str(workdir / "local-tmp"),
            ANSIBLE_REMOTE_TEMP=str(workdir / "remote-tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_HOST_KEY_CHECKING="True",
            RECONCILER_IDEMPOTENCY_KEY=ctx.idempotency_key,
            RECONCILER_RESOURCE=ctx.resource_key,
        )
        argv = [ansible_playbook(), "-i", str(inventory_file), "-e", f"@{vars_file}"]
        if task.limit:
            argv += ["--limit", render_str(task.limit, tvars, where="limit", secrets="refuse")]
        argv.append(str(path))
        run.activity = f"running ansible-playbook {task.playbook}"
        result = await run_process(argv, env=env, cwd=path.parent, log=ctx.log)
    lines = result.stdout_head.splitlines() + list(result.stdout_tail)
    if result.returncode != 0:
        failures = failed_tasks(lines)
        text = (
            REDACTOR.text(
                f"ansible-playbook exited with status {result.returncode}: " + "; ".join(failures)
            )
            if failures
            else failure_text("ansible-playbook", result)
        )
        if result.returncode == RC_UNREACHABLE:
            raise TemporaryError(text)
        raise PermanentError(text)
    return Outcome(
        f"playbook {task.playbook} succeeded",
        {"exitCode": 0, "recap": recap(list(result.stdout_tail))},
    )
