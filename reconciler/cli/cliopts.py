"""Which settings each command reads, and the help text that says so (env var, default).

Beside `cli.py`: pure tables and functions over `Settings`' fields, so a
command's `--help` lists the environment variable and default of every setting
it reads, the flags each command accepts are the ones it uses, and a flag given
to a command that ignores it is an error naming the commands that read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reconciler.settings import Settings

FLAGS: tuple[str, ...] = (
    "repo",
    "branch",
    "state_dir",
    "status_branch",
    "interval",
    "listen",
    "database_url",
    "config",
)
"""Settings that have a command-line flag (`--state-dir` for `state_dir`); every other
setting is read from its `RECONCILER_*` variable or the config file only."""

MEANING: Mapping[str, str] = {
    "repo": "the declared repository: URL or local path",
    "branch": "the tracked branch",
    "ref": "pin a tag or commit instead of the branch",
    "state_dir": "mirror, journal, simulator state",
    "status_branch": "where status is committed",
    "interval": "time between cycles of run",
    "full_resync_interval": "longest time between full cycles (0: always full)",
    "listen": "HOST:PORT of the HTTP API of run",
    "git_username": "HTTPS user name",
    "git_password": "HTTPS password or token (a reference: env:NAME or file:PATH)",
    "git_ssh_key": "SSH private key (a reference)",
    "git_ssh_public_key": "the public half of the SSH key, when libgit2 needs it (a path)",
    "git_known_hosts": "SSH host keys; an unknown host is refused",
    "git_insecure_skip_host_key_check": "accept any SSH host key (explicit, logged)",
    "git_author_name": "author name of status commits",
    "git_author_email": "author e-mail of status commits",
    "force_push_policy": "on a rewritten branch: follow the new head, or refuse it",
    "plan_branches": "globs of branches whose plans go to plans/<branch>.md",
    "api_token": "bearer token with every scope (admin; a reference)",
    "api_tokens": "named API tokens with scopes: name -> {token: a reference, scopes: [...]}",
    "forge": "github or gitlab: open a pull request for each portal request",
    "forge_url": "the forge's API URL (https://api.github.com, …/api/v4 on GitLab)",
    "forge_project": "the repository on the forge: owner/name, or a GitLab project id or path",
    "forge_token": "the forge's API token (a reference)",
    "webhook_secret": "HMAC secret for Git webhooks (a reference)",
    "api_read_open": "serve read-only API routes without the token",
    "interval_jitter": "random delay added to each scheduled cycle",
    "event_debounce": "a resource's provider events: quiet period",
    "event_max_delay": "a resource's provider events: the longest wait",
    "event_queue_size": "resources queued for targeted reconciles before events are shed",
    "operations_kept": "sync operations remembered for the API",
    "metrics_resource_series": "most per-resource metric series; above, aggregates only",
    "owner": "who this controller is on what it owns (default: the repository's location)",
    "trees_kept": "read-only revision trees kept for tasks that read repository files",
    "max_body_bytes": "largest HTTP request body the API reads (413 above)",
    "plans_kept": "finished plans kept in the journal (with their tasks and task logs)",
    "retention": "finished plans, task logs and operation records younger than this are kept",
    "database_url": "PostgreSQL for the journal, leader lease, task queue and controller memory "
    "(postgresql://USER@HOST/DB; unset: SQLite in the state directory)",
    "database_password": "the database password (a reference: env:NAME or file:PATH)",
    "leader_lease": "the leader's lease in the database, renewed every third of it",
    "advertise_url": "the URL of this replica's API that standbys forward POSTs to",
    "execute": "inline (the leader runs tasks) or workers (reconciler worker claims them)",
    "claim_lease": "a worker's claim on a task, renewed by heartbeat; then it may be re-claimed",
    "config": "a YAML file holding any setting",
}

_SOURCE = (
    "repo",
    "branch",
    "owner",
    "ref",
    "state_dir",
    "status_branch",
    "force_push_policy",
    "git_username",
    "git_password",
    "git_ssh_key",
    "git_ssh_public_key",
    "git_known_hosts",
    "git_insecure_skip_host_key_check",
    "config",
)
_DATABASE = ("database_url", "database_password", "leader_lease")
_WRITE = (
    "git_author_name",
    "git_author_email",
    "plan_branches",
    "trees_kept",
    "plans_kept",
    "retention",
)

READS: Mapping[str, tuple[str, ...]] = {
    "validate": (),
    "schema": (),
    "init": (),
    "plan": (*_SOURCE, "database_url", "database_password"),
    "status": _SOURCE,
    "audit": _SOURCE,
    "discover": _SOURCE,
    "apply": (*_SOURCE, *_WRITE, *_DATABASE, "execute", "claim_lease"),
    "demo": ("branch", "state_dir", "status_branch", *_WRITE, "config"),
    "run": tuple(name for name in Settings.model_fields if name in MEANING),
    "worker": ("state_dir", "database_url", "database_password", "claim_lease", "config"),
    "migrate-state": ("state_dir", "database_url", "database_password", "config"),
}
"""The settings each command reads (and so the flags it accepts)."""


def env_name(setting: str) -> str:
    return f"RECONCILER_{setting.upper()}"


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def default_text(setting: str) -> str:
    """The default as a person would type it: `60s`, `.reconciler`, `none`, `false`."""
    value: Any = Settings.model_fields[setting].default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}s"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def option_help(setting: str) -> str:
    """A flag's help: what it means, its environment variable and its default."""
    meaning = MEANING[setting]
    where = f"env {env_name(setting)}; default: {default_text(setting)}"
    return f"{meaning[0].upper()}{meaning[1:]} ({where})"


def epilog(command: str) -> str | None:
    """The settings a command reads without a flag of their own, one paragraph each."""
    unflagged = [s for s in READS[command] if s not in FLAGS]
    if not unflagged:
        return None
    lines = ["Also read from the environment (or the --config file):"]
    lines += [f"{env_name(s)} (default: {default_text(s)}): {MEANING[s]}" for s in unflagged]
    return "\n\n".join(lines)


def readers(setting: str) -> list[str]:
    return [command for command, reads in READS.items() if setting in reads]


def ignored(command: str, given: Iterable[str]) -> list[str]:
    """The flags in `given` that `command` does not read: each an error message."""
    errors = []
    for setting in given:
        if setting not in READS[command]:
            used_by = ", ".join(readers(setting)) or "no command"
            errors.append(
                f"{flag_name(setting)} is not used by {command} (it is read by: {used_by})"
            )
    return errors
