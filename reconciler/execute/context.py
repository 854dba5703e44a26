"""The values a task runs with and returns: `TaskContext` in, `TaskResult` out.

Part of execute, between the orchestrator (which builds a context per task from
the plan, the journal and the provider) and the runners (`reconciler.execute.tasks`).
A task itself is a serializable model value (`reconciler.model.tasks`); the context
adds what only the running controller has — the resource, its effective params,
the idempotency key, the deadline, the task log and the provider callbacks.
`TaskResult` is a frozen value with a stable JSON form: what the journal stores.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from reconciler.execute.tasklog import NULL_LOG, TaskLog
from reconciler.execute.template import TemplateVars

if TYPE_CHECKING:
    import httpx

ProviderAction = Callable[[str, dict[str, Any], str], Awaitable[Mapping[str, Any]]]
"""``(action, args, idempotency_key) -> result``: start the action and poll it until done.

The caller (orchestrator + provider) supplies it. It raises `TemporaryError`,
`WaitingError` or `PermanentError` like any runner; the result's ``operationId``
(if any) is reported as the task's operation id.
"""

Observe = Callable[[], Awaitable[Mapping[str, Any]]]
"""``() -> observed fields of the resource`` (as the provider reports them), for wait-for."""

Acknowledge = Callable[[str], object]
"""Called with an operation id (e.g. a 202's Location) as soon as a remote accepted work."""

Progress = Callable[[int, str], object]
"""Called with ``(attempts so far, note)`` after a temporary failure or a changed poll note."""

CancelOperation = Callable[[], Awaitable[str | None]]
"""Called when a task's deadline passed: asks the remote to stop the operation the task
started, and says what became of it (None: the task had no operation to cancel)."""


@dataclass(frozen=True)
class TaskContext:
    """Everything a runner needs besides the task value itself.

    `deadline` is on the event loop's clock (``loop.time()``); the task's own
    ``timeout`` (its whole budget: attempts, backoff and polling) bounds it too.
    `operation_id` comes from the journal when the task was already acknowledged
    before a restart: the runner then polls that operation instead of re-issuing.
    `cancel_operation` is called once the deadline has passed (see `run_task`).
    """

    resource_key: str
    resource_kind: str
    resource_name: str
    idempotency_key: str
    params: Mapping[str, Any] = field(default_factory=dict)
    secure_params: frozenset[str] = frozenset()
    plan_hash: str = ""
    stage: str = ""
    point: str = ""
    deadline: float | None = None
    repo_dir: Path | None = None
    state_dir: Path | None = None
    """The controller's state directory (runners keeping state of their own: terraform)."""
    log: TaskLog = NULL_LOG
    operation_id: str | None = None
    on_acknowledged: Acknowledge | None = None
    on_progress: Progress | None = None
    provider_action: ProviderAction | None = None
    observe: Observe | None = None
    cancel_operation: CancelOperation | None = None
    http_client: httpx.AsyncClient | None = None

    def template_vars(self) -> TemplateVars:
        return TemplateVars(
            resource_key=self.resource_key,
            resource_kind=self.resource_kind,
            resource_name=self.resource_name,
            params=self.params,
            secure_params=self.secure_params,
            secrets_base_dir=self.repo_dir,
        )


TaskStatus = Literal["succeeded", "failed"]


@dataclass(frozen=True)
class TaskResult:
    """How a task ended. Secrets are redacted from `message` and `outputs`."""

    status: TaskStatus
    message: str
    outputs: Mapping[str, Any] = field(default_factory=dict)
    operation_id: str | None = None
    attempts: int = 1
    log_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "outputs": dict(self.outputs),
            "operationId": self.operation_id,
            "attempts": self.attempts,
            "logPath": self.log_path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskResult:
        return cls(
            status=data["status"],
            message=data.get("message", ""),
            outputs=dict(data.get("outputs") or {}),
            operation_id=data.get("operationId"),
            attempts=int(data.get("attempts", 1)),
            log_path=data.get("logPath"),
        )


@dataclass(frozen=True)
class Outcome:
    """What one successful attempt of a runner produced (internal to execute)."""

    message: str
    outputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RunState:
    """Mutable state of one task run across its attempts (internal to execute)."""

    started: float
    deadline: float
    activity: str
    operation_id: str | None = None
    failures: int = 0
    deadline_message: Callable[[float], str] | None = None

    def describe_deadline(self, elapsed: float) -> str:
        if self.deadline_message is not None:
            return self.deadline_message(elapsed)
        return f"deadline exceeded after {elapsed:.1f}s while {self.activity}"

    def acknowledge(self, ctx: TaskContext, operation_id: str) -> None:
        self.operation_id = operation_id
        ctx.log.event(f"acknowledged: operation {operation_id}")
        if ctx.on_acknowledged is not None:
            ctx.on_acknowledged(operation_id)
