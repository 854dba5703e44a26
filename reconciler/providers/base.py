"""The provider seam: one small async protocol and the plain values that cross it.

Sits between the engine (observe, execute) and an infrastructure API (the
simulator, Redfish, EC2, a REST API). Like an HTTP transport, the seam is a
handful of calls on plain frozen values: a provider never sees the loader's or
the planner's internals, and the engine never sees a provider's library types.
Library exceptions are translated into `reconciler.errors` at the provider's
edge, nowhere else:

- `TemporaryError`: the API is unreachable, throttled or 5xx — nothing changed,
  the same call (with the same idempotency key) may be retried after a backoff;
- `WaitingError`: not a failure, poll again later;
- `PermanentError`: this call can never succeed as asked (unknown action, bad
  arguments, no such operation).

Every value here has `to_dict()` / `from_dict()` giving a stable JSON form, so the
executor can journal them and a distributed engine can ship them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# The values providers answer with live in observe/ (re-exported here for providers).
from reconciler.observe.values import Discovered as Discovered
from reconciler.observe.values import Observation as Observation
from reconciler.observe.values import ObservationResult as ObservationResult
from reconciler.observe.values import ObservationUnknown as ObservationUnknown
from reconciler.observe.values import OwnedResource as OwnedResource
from reconciler.observe.values import plain as _plain

if TYPE_CHECKING:
    from reconciler.model.kinds import ProviderSpec

MANAGED_BY = "reconciler"
"""Value of the `managed-by` ownership tag on everything a provider creates for us."""


@dataclass(frozen=True)
class ResourceRef:
    """A declared resource as a provider sees it: identity, declared fields, params.

    `declared` is the resource's canonical declared state (`ResolvedResource.declared()`:
    `params` plus kind-specific fields such as `size`, `image`, `bmc`); `params` are the
    effective params, secure ones still as references.
    """

    kind: str
    name: str
    key: str
    declared: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "key": self.key,
            "declared": _plain(self.declared),
            "params": _plain(self.params),
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceRef:
        return cls(
            kind=data["kind"],
            name=data["name"],
            key=data["key"],
            declared=dict(data.get("declared", {})),
            params=dict(data.get("params", {})),
            labels=dict(data.get("labels", {})),
        )


@dataclass(frozen=True)
class ActionRequest:
    """One provider action of a stage task: `power-on`, `install-os`, `create`, `delete`…

    `idempotency_key` is stable across retries and restarts of the same task of the
    same plan; `resource` carries the declared state (needed by `create`).
    """

    action: str
    resource: ResourceRef
    idempotency_key: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.resource.key

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "resource": self.resource.to_dict(),
            "idempotency_key": self.idempotency_key,
            "args": _plain(self.args),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionRequest:
        return cls(
            action=data["action"],
            resource=ResourceRef.from_dict(data["resource"]),
            idempotency_key=data["idempotency_key"],
            args=dict(data.get("args", {})),
        )


@dataclass(frozen=True)
class OperationHandle:
    """The provider's acknowledgement of a started action: enough to poll or cancel it.

    The executor journals it; a restarted process polls the same handle.
    """

    provider: str
    operation_id: str
    idempotency_key: str
    key: str
    action: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "operation_id": self.operation_id,
            "idempotency_key": self.idempotency_key,
            "key": self.key,
            "action": self.action,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperationHandle:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class OperationPhase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (OperationPhase.SUCCEEDED, OperationPhase.FAILED, OperationPhase.CANCELLED)


@dataclass(frozen=True)
class OperationStatus:
    """Where a long-running operation is: phase, progress in [0, 1], a message, a result."""

    operation_id: str
    phase: OperationPhase
    progress: float = 0.0
    message: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation_id": self.operation_id,
            "phase": self.phase.value,
            "progress": self.progress,
            "message": self.message,
            "result": _plain(self.result),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperationStatus:
        return cls(
            operation_id=data["operation_id"],
            phase=OperationPhase(data["phase"]),
            progress=float(data.get("progress", 0.0)),
            message=data.get("message", ""),
            result=dict(data.get("result", {})),
        )


@dataclass(frozen=True)
class ProviderContext:
    """What a provider is built from: its declared document and where it may keep state.

    `repository` identifies the declared repository in ownership tags, so two
    controllers sharing an account never prune each other's resources.
    """

    name: str
    spec: ProviderSpec
    state_dir: Path
    repository: str = "default"


@runtime_checkable
class Provider(Protocol):
    """A connection to one infrastructure API. All calls are coroutines.

    Implementations must be safe to call concurrently (the engine bounds the
    concurrency with the provider's declared limits).
    """

    name: str

    async def observe(self, resources: Sequence[ResourceRef]) -> Mapping[str, ObservationResult]:
        """Observe a batch of declared resources; read-only and idempotent.

        The returned `fields` are read-only for the caller (a provider may share them
        with its cache).

        Returns one entry per requested key. A resource the API positively reports
        absent is `Observation(exists=False)`; one it cannot say anything about is
        `ObservationUnknown`. Raise `TemporaryError` when the API as a whole cannot be
        reached: the engine then marks the whole batch unknown — never absent.
        """
        ...

    async def list_owned(self) -> Sequence[OwnedResource]:
        """Everything carrying our ownership tags for this repository (to find orphans).

        Read-only. Must be complete or raise: a partial list would make the planner
        decommission what it did not see.
        """
        ...

    async def start(self, request: ActionRequest) -> OperationHandle:
        """Start an action and return once the API has acknowledged it (fast).

        Idempotent by `request.idempotency_key`: starting with a key already used
        returns the existing operation and never executes the action a second time.
        If `start` raises, nothing was started: a `TemporaryError` may be retried with
        the same key; a `PermanentError` (unknown action, bad args) may not.
        A `create` that ends failed leaves no resource behind; a `delete` that ends
        failed leaves the resource existing.
        """
        ...

    async def poll(self, handle: OperationHandle) -> OperationStatus:
        """The operation's current status; read-only, safe to call any number of times.

        Raises `PermanentError` for an operation the provider does not know.
        """
        ...

    async def cancel(self, handle: OperationHandle) -> bool:
        """Ask the API to stop the operation; True if it will not complete, False if it
        cannot be cancelled (already done, or the API has no cancel). Idempotent.
        """
        ...

    async def close(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...


@runtime_checkable
class Discovers(Protocol):
    """The optional call of a provider that can list what it sees (the discovery inbox).

    A provider without `discover` simply discovers nothing.
    """

    async def discover(self, declared: Sequence[ResourceRef]) -> Sequence[Discovered]:
        """Everything the API shows that none of `declared` (this provider's declared
        resources) is, and that carries no owner's mark — neither ours (an undeclared
        resource of ours is an orphan, the plan's business) nor another controller's
        or tool's. Read-only; never acts. Raise a `ReconcilerError` when the listing
        cannot be had: the inbox then says why instead of showing a partial list.
        """
        ...
