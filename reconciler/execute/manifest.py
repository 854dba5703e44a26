"""A task as a serializable value: what a worker needs to run it, and nothing else.

Part of execute, between the engine (which builds a manifest per task when
`RECONCILER_EXECUTE=workers`) and `reconciler.execute.worker` (which runs it). A manifest holds
the task (its model value), the resource as the provider sees it (`ResourceRef`: params
with secure ones still as references), the stage's params and which are secure, the
provider's name and spec, the deadline, the execution and the idempotency key, and
the plan's revision with where it is. A worker needs neither the controller's Git
nor the loader (a task reading repository files gets the revision's tree from the
worker's own mirror); secrets are resolved on the worker that runs
the task (its own environment or files), never stored in the database.

`provider_callbacks` is the one place a task's provider calls are made from a
journal's point of view (acknowledged operations polled, never issued again), shared
by the engine's inline path and the worker.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from reconciler.model.kinds import Provider as ProviderDocument
from reconciler.model.tasks import Task
from reconciler.providers.base import ActionRequest, OperationHandle, Provider, ResourceRef
from reconciler.providers.operations import cancel_operation, observe_one, run_action

if TYPE_CHECKING:
    from reconciler.execute.store import TaskJournal

_TASK = TypeAdapter(Task)
FORMAT = "reconciler.task/v1"


@dataclass(frozen=True)
class TaskManifest:
    """One task of one execution, as the queue holds it (`to_json` / `from_json`)."""

    idempotency_key: str
    execution: str
    resource: ResourceRef
    stage: str
    point: str
    task: Task
    provider: str
    provider_spec: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    secure_params: frozenset[str] = frozenset()
    deadline: float | None = None
    """Wall-clock seconds (epoch) past which the task must not run; None: its timeout only."""
    repository: str = "default"
    """The owner identity providers record on what they create."""
    revision: str | None = None
    """The plan's revision: a task reading repository files runs in its tree."""
    repository_url: str | None = None
    """Where that revision is (no password in it); a worker's own `--repo` wins."""

    def needs_tree(self) -> bool:
        """Whether the task reads the revision's files: a playbook, a Terraform module, a
        command (its `cwd`, relative paths), or a relative `file:` secret reference."""
        if self.task.type in ("ansible", "terraform", "command"):
            return True
        values = [_TASK.dump_python(self.task, mode="json"), dict(self.params)]
        return any(_relative_file_ref(v) for v in values)

    @property
    def site(self) -> str | None:
        site = self.provider_spec.get("site")
        return str(site) if site else None

    @property
    def provider_limit(self) -> int:
        limits = self.provider_spec.get("limits") or {}
        return int(limits.get("concurrency") or 10)

    def provider_document(self) -> ProviderDocument:
        return ProviderDocument.model_validate(
            {
                "apiVersion": "reconciler/v1",
                "kind": "Provider",
                "metadata": {"name": self.provider},
                "spec": dict(self.provider_spec),
            }
        )

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "idempotencyKey": self.idempotency_key,
            "execution": self.execution,
            "resource": {
                "kind": self.resource.kind,
                "name": self.resource.name,
                "key": self.resource.key,
                "declared": dict(self.resource.declared),
                "params": dict(self.resource.params),
                "labels": dict(self.resource.labels),
            },
            "stage": self.stage,
            "point": self.point,
            "task": _TASK.dump_python(self.task, mode="json", by_alias=True),
            "provider": self.provider,
            "providerSpec": dict(self.provider_spec),
            "params": dict(self.params),
            "secureParams": sorted(self.secure_params),
            "deadline": self.deadline,
            "repository": self.repository,
            "revision": self.revision,
            "repositoryUrl": self.repository_url,
        }
        return json.dumps(data, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> TaskManifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a task manifest of {FORMAT}: {data.get('format')!r}")
        ref = data["resource"]
        return cls(
            idempotency_key=data["idempotencyKey"],
            execution=data["execution"],
            resource=ResourceRef(
                kind=ref["kind"],
                name=ref["name"],
                key=ref["key"],
                declared=ref.get("declared") or {},
                params=ref.get("params") or {},
                labels=ref.get("labels") or {},
            ),
            stage=data["stage"],
            point=data["point"],
            task=_TASK.validate_python(data["task"]),
            provider=data["provider"],
            provider_spec=data["providerSpec"],
            params=data.get("params") or {},
            secure_params=frozenset(data.get("secureParams") or ()),
            deadline=data.get("deadline"),
            repository=data.get("repository") or "default",
            revision=data.get("revision"),
            repository_url=data.get("repositoryUrl"),
        )


def _relative_file_ref(value: Any) -> bool:
    """A `file:` reference relative to the repository anywhere inside `value`."""
    if isinstance(value, str):
        return value.startswith("file:") and not value[5:].startswith(("/", "~"))
    if isinstance(value, Mapping):
        return any(_relative_file_ref(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_relative_file_ref(v) for v in value)
    return False


ProviderCall = Callable[[str, dict[str, Any], str], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class ProviderCallbacks:
    """A task's way to its provider: act (crash-safe), cancel on deadline, observe."""

    action: ProviderCall
    cancel: Callable[[], Awaitable[str | None]]
    observe: Callable[[], Awaitable[Mapping[str, Any]]]


def provider_callbacks(
    provider: Provider, ref: ResourceRef, journal: TaskJournal
) -> ProviderCallbacks:
    """The provider calls of one task: an operation the provider acknowledged before a
    crash (or a temporary error) is polled, never issued again; one not yet acknowledged
    is issued again under the same key; past the deadline, the started one is cancelled."""
    started: list[OperationHandle] = []

    async def action(name: str, args: Mapping[str, Any], idem: str) -> Mapping[str, Any]:
        request = ActionRequest(action=name, resource=ref, idempotency_key=idem, args=args)

        def acknowledged(op: str) -> None:
            started[:] = [OperationHandle(provider.name, op, idem, ref.key, name)]
            journal.mark_acknowledged(idem, op)

        return await run_action(
            provider,
            request,
            operation_id=journal.acknowledged_operation(idem),
            on_acknowledged=acknowledged,
        )

    async def cancel() -> str | None:
        return await cancel_operation(provider, started[-1]) if started else None

    async def observe() -> Mapping[str, Any]:
        return await observe_one(provider, ref)

    return ProviderCallbacks(action, cancel, observe)


__all__ = ["ProviderCallbacks", "TaskManifest", "provider_callbacks"]
