"""Controller settings, the same for every command: flags, `RECONCILER_*` env, a config file.

Precedence: command-line flag, then environment, then the `--config` file
(YAML), then the defaults below. Settings that are secrets hold references
(`env:NAME` / `file:PATH`), resolved by `reconciler.secrets` where they are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reconciler.model.common import Duration, SecretRef

Scope = Literal["read", "request", "sync", "admin"]
"""What an API token may do: `read` the read-only routes, `request` portal requests
(the catalog, POST and GET /api/v1/requests), `sync` cycles and provider events, `admin`
everything."""


class ApiToken(BaseModel):
    """One named API token of `api_tokens`: the token by reference and its scopes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretRef
    scopes: list[Scope] = Field(min_length=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILER_", extra="forbid", frozen=True)

    repo: str | None = Field(default=None, description="URL or local path of the declared repo")
    branch: str = "main"
    owner: str | None = Field(
        default=None,
        description="Who this controller is on what it owns (cloud tags, ownership fields); "
        "default: the repository's canonical location and the tracked branch",
    )
    ref: str | None = Field(default=None, description="Pin a tag or commit instead of the branch")
    state_dir: Path = Path(".reconciler")
    status_branch: str = Field(
        default="reconciler/status",
        description="Branch for status commits; the tracked branch itself puts them under status/",
    )
    interval: Duration = 60.0
    full_resync_interval: Duration = Field(
        default=600.0,
        description="Longest time between full cycles; in between, a cycle at a new head plans "
        "only the resources it changed. 0: every cycle is full",
    )
    listen: str = "127.0.0.1:8080"
    git_username: str | None = None
    git_password: SecretRef | None = None
    git_ssh_key: SecretRef | None = None
    git_ssh_public_key: str | None = None
    git_known_hosts: Path = Path("~/.ssh/known_hosts")
    git_insecure_skip_host_key_check: bool = False
    git_author_name: str = "reconciler"
    git_author_email: str = "reconciler@localhost"
    force_push_policy: str = Field(default="follow", pattern="^(follow|refuse)$")
    plan_branches: str | None = Field(
        default=None,
        description="Branches to plan for reviewers, globs comma-separated (e.g. request/*): "
        "each plan goes to plans/<branch>.md on the status branch",
    )
    api_token: SecretRef | None = None
    api_tokens: dict[str, ApiToken] | None = Field(
        default=None,
        description="Named API tokens: name -> {token: a reference, scopes: [read, request, "
        "sync, admin]}; the name is recorded in the audit of what the token asked for",
    )
    forge: Literal["github", "gitlab"] | None = Field(
        default=None, description="Open a pull (merge) request for each portal request"
    )
    forge_url: str | None = Field(
        default=None,
        description="The forge's API: https://api.github.com, https://gitlab.example.com/api/v4",
    )
    forge_project: str | None = Field(
        default=None, description="owner/name on GitHub; the project's id or path on GitLab"
    )
    forge_token: SecretRef | None = None
    webhook_secret: SecretRef | None = None
    api_read_open: bool = Field(
        default=False, description="Serve read-only API routes without the bearer token"
    )
    interval_jitter: Duration = Field(
        default=5.0, description="Up to this much is added to each interval, at random"
    )
    event_debounce: Duration = Field(
        default=1.0, description="A resource's events are coalesced until this long passes quietly"
    )
    event_max_delay: Duration = Field(
        default=10.0, description="An event waits at most this long, however many follow it"
    )
    event_queue_size: int = Field(
        default=10_000, ge=1, description="Resources waiting for a targeted reconcile; more shed"
    )
    operations_kept: int = Field(default=1000, ge=1, description="Operations kept in memory")
    trees_kept: int = Field(
        default=3,
        ge=1,
        description="Materialized revision trees kept in the state directory (for tasks that "
        "read repository files); a revision an unfinished plan needs is always kept",
    )
    plans_kept: int = Field(
        default=100,
        ge=0,
        description="Finished plans kept in the journal (with their tasks and task logs) "
        "beyond the retention period; plans not yet finished are always kept",
    )
    retention: Duration = Field(
        default=7 * 86400.0,
        description="Finished plans, their task logs and providers' finished operation records "
        "newer than this are kept whatever their number",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Largest request body the API reads; 413 above"
    )
    metrics_resource_series: int = Field(
        default=2000,
        ge=0,
        description="Most resources given series of their own (reconciler_resource_ready); "
        "with more declared, only the aggregate counts are exported",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL holding the journal, leader lease, task queue and controller "
        "memory (postgresql://USER@HOST/DB, no password in it); unset: SQLite in the state "
        "directory",
    )
    database_password: SecretRef | None = None
    leader_lease: Duration = Field(
        default=15.0,
        gt=0,
        description="How long the leader's lease in the database lasts without a heartbeat "
        "(renewed every third of it)",
    )
    advertise_url: str | None = Field(
        default=None,
        description="The URL of this replica's API that standbys forward POSTs to "
        "(default: http://LISTEN)",
    )
    execute: str = Field(
        default="inline",
        pattern="^(inline|workers)$",
        description="inline: the leader runs tasks itself; workers: `reconciler worker` "
        "processes claim them from the database",
    )
    claim_lease: Duration = Field(
        default=30.0,
        gt=0,
        description="How long a worker's claim on a task lasts without a heartbeat; then "
        "another worker may claim it again",
    )
    config: Path | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("listen is HOST:PORT, e.g. 127.0.0.1:8080")
        return value


def load_settings(**overrides: Any) -> Settings:
    """Settings from flags (`overrides`, None meaning "not given"), env and the config file."""
    given = {k: v for k, v in overrides.items() if v is not None}
    config_path = given.get("config") or Settings().config
    from_file: dict[str, Any] = {}
    if config_path:
        text = Path(config_path).read_text(encoding="utf-8")
        from_file = yaml.safe_load(text) or {}
        if not isinstance(from_file, dict):
            raise ValueError(f"{config_path}: a config file is a mapping of settings")
        from_file = {k.replace("-", "_"): v for k, v in from_file.items()}
    env_settings = Settings()
    env_given = {k: getattr(env_settings, k) for k in env_settings.model_fields_set}
    return Settings(**{**from_file, **env_given, **given})
