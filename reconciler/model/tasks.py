"""Task types: the units of work a stage runs, a discriminated union on `type`.

Part of the model. A task is a serializable value: the executor (in-process
today, a distributed engine later) runs it from this description alone. String
fields may refer to the resource's effective params as ``${params.NAME}``; the
executor substitutes them, never through a shell.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, HttpUrl, field_validator, model_validator

from reconciler.model.common import (
    Duration,
    RetryPolicy,
    SecretRef,
    Strict,
    by_reference,
    inline_secret_error,
    is_secret_looking,
    refuse_inline_secrets,
)

AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
TASK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class TaskBase(Strict):
    name: str = Field(pattern=TASK_NAME_PATTERN, description="Unique within its task list")
    timeout: Duration = Field(default=300.0, description="Deadline of one attempt")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    description: str = ""


class ProviderActionTask(TaskBase):
    """Asks the resource's provider to do something: power, boot device, create, delete…"""

    type: Literal["provider"]
    action: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: Duration = 1800.0

    @field_validator("args")
    @classmethod
    def _no_inline_secret_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        return refuse_inline_secrets(args)


class HttpAuth(Strict):
    bearer: SecretRef | None = None
    username: str | None = None
    password: SecretRef | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> HttpAuth:
        if self.bearer and (self.username or self.password):
            raise ValueError("give either bearer or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        return self


class PollSpec(Strict):
    """How to follow a long-running operation: a 202 with Location, or a status field."""

    interval: Duration = 2.0
    status_field: str = Field(default="status", description="Dotted path in the JSON body")
    success: list[str] = Field(default_factory=lambda: ["succeeded", "done", "completed"])
    failure: list[str] = Field(default_factory=lambda: ["failed", "error"])


class HttpTask(TaskBase):
    """An HTTP call; `202 Accepted` with a Location is polled to completion."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    auth: HttpAuth | None = None
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    poll: PollSpec = Field(default_factory=PollSpec)

    @field_validator("headers")
    @classmethod
    def _no_inline_credential_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        inline: list[tuple[str | int, ...]] = [
            (key,)
            for key, value in headers.items()
            if (key.lower() in AUTH_HEADERS or is_secret_looking(key)) and not by_reference(value)
        ]
        if inline:
            raise inline_secret_error(inline, ", or use auth.bearer")
        return headers

    @field_validator("body")
    @classmethod
    def _no_inline_secret_body(cls, body: Any) -> Any:
        return refuse_inline_secrets(body)


class CommandTask(TaskBase):
    """Runs a program from an argv list, never a shell string; secrets via environment."""

    type: Literal["command"]
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, SecretRef] = Field(default_factory=dict)
    cwd: str | None = None

    @field_validator("env")
    @classmethod
    def _no_inline_secret_env(cls, env: dict[str, str]) -> dict[str, str]:
        inline: list[tuple[str | int, ...]] = [
            (key,)
            for key, value in env.items()
            if is_secret_looking(key) and not by_reference(value)
        ]
        if inline:
            raise inline_secret_error(inline, " in secretEnv")
        return env


class AnsibleTask(TaskBase):
    """Runs an Ansible playbook from the repository against the resource."""

    type: Literal["ansible"]
    playbook: str = Field(description="Path in the repository")
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    limit: str | None = None
    timeout: Duration = 3600.0


class Condition(Strict):
    """A test on one observed field (dotted path): equals one of, or exists."""

    field: str
    equals: list[Any] | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if (self.equals is None) == (self.exists is None):
            raise ValueError("give exactly one of equals or exists")
        return self


class WaitForTask(TaskBase):
    """Polls the resource's observed state until a condition holds, or the deadline."""

    type: Literal["wait-for"]
    condition: Condition
    interval: Duration = 5.0


class NotifyTask(TaskBase):
    """Sends a webhook: a JSON POST signed with HMAC-SHA256 when a secret is given."""

    type: Literal["notify"]
    url: HttpUrl
    secret: SecretRef | None = None
    message: str = ""
    timeout: Duration = 30.0


class TerraformTask(TaskBase):
    """Runs a Terraform module of the repository: init, plan, apply (or destroy).

    One state per resource and `state` (default: the stage's name), kept by the
    controller; `destroy` runs on decommission by itself. Variables come from
    `variables` (``${params.NAME}`` templates); one whose value uses a secure param,
    or is a reference, goes through the environment (``TF_VAR_name``), never a file.
    """

    type: Literal["terraform"]
    module: str | None = Field(
        default=None, description="Folder of the root module in the repository (for apply)"
    )
    variables: dict[str, Any] = Field(default_factory=dict)
    secret_env: dict[str, SecretRef] = Field(
        default_factory=dict, description="Environment for providers' credentials, by reference"
    )
    action: Literal["apply", "destroy"] = "apply"
    state: str | None = Field(
        default=None,
        pattern=TASK_NAME_PATTERN,
        description="The state's name within the resource; default: the stage's name",
    )
    timeout: Duration = 3600.0

    @field_validator("variables")
    @classmethod
    def _no_inline_secret_variables(cls, variables: dict[str, Any]) -> dict[str, Any]:
        return refuse_inline_secrets(variables)

    @model_validator(mode="after")
    def _module_to_apply(self) -> TerraformTask:
        if self.action == "apply" and not self.module:
            raise ValueError("a terraform task that applies names its module")
        return self


Task = Annotated[
    ProviderActionTask
    | HttpTask
    | CommandTask
    | AnsibleTask
    | WaitForTask
    | NotifyTask
    | TerraformTask,
    Field(discriminator="type"),
]

TASK_TYPES = ("provider", "http", "command", "ansible", "wait-for", "notify", "terraform")
