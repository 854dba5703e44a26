"""What observation yields: the plain values a provider answers with.

Values only (no I/O, nothing of the project imported): the provider seam
(`reconciler.providers.base`) re-exports them for providers, while the pure steps
downstream (`reconciler.plan.diff`, `reconciler.report.transitions`,
`reconciler.report.discovery`) import them, and the `ObservedState` of one
observation, from here, so they never import the provider registry. `Discovered` is
what discovery finds that nobody declares (the discovery inbox).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Discovered",
    "Observation",
    "ObservationResult",
    "ObservationUnknown",
    "ObservedState",
    "OwnedResource",
    "plain",
]


def plain(value: Any) -> Any:
    """A JSON-ready deep copy (mappings to dicts, sequences to lists)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Observation:
    """What the provider saw of one resource.

    `exists` False means the provider looked and the resource is not there (a create
    is needed). `fields` use the same shape as the declared state (`params.os`,
    `size`, `power`…) so they can be compared path by path, plus what only
    observation knows (`inventory`, `state`).
    """

    key: str
    exists: bool
    fields: Mapping[str, Any] = field(default_factory=dict)

    known = True

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "exists": self.exists, "fields": plain(self.fields)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observation:
        return cls(key=data["key"], exists=bool(data["exists"]), fields=dict(data["fields"]))


@dataclass(frozen=True)
class ObservationUnknown:
    """The provider could not say (it failed, timed out, or answered implausibly).

    Never read as "gone": nothing is created, changed or destroyed on its strength.
    """

    key: str
    reason: str

    known = False
    exists = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "unknown": True, "reason": self.reason}


ObservationResult = Observation | ObservationUnknown


@dataclass(frozen=True)
class OwnedResource:
    """A resource the provider holds with our ownership tags (managed-by, repository, key).

    `provider` is the Provider name that listed it (the engine fills it in if empty).
    """

    key: str
    kind: str
    name: str
    repository: str
    labels: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    provider: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "name": self.name,
            "repository": self.repository,
            "labels": dict(self.labels),
            "fields": plain(self.fields),
            "provider": self.provider,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OwnedResource:
        return cls(
            key=data["key"],
            kind=data["kind"],
            name=data["name"],
            repository=data["repository"],
            labels=dict(data.get("labels", {})),
            fields=dict(data.get("fields", {})),
            provider=data.get("provider", ""),
        )


@dataclass(frozen=True, repr=False)
class ObservedState:
    """What observation found, ready for `reconciler.plan.diff`.

    `observations` has one entry per declared key; `owned` holds what providers
    report as ours (only from providers whose listing succeeded); `unknown_providers`
    says which providers could not be trusted and why; `existing` holds, per
    provider, the keys of the declared resources seen to exist — pass it back as
    `previous` next time.
    """

    observations: Mapping[str, ObservationResult]
    owned: Mapping[str, OwnedResource] = field(default_factory=dict)
    unknown_providers: Mapping[str, str] = field(default_factory=dict)
    existing: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Short on purpose: Python 3.11's asyncio.run reprs the main task's result when
        # it restores the SIGINT handler, and a 10,000-entry repr costs a quarter second.
        return (
            f"ObservedState({len(self.observations)} observations, {len(self.owned)} owned, "
            f"unknown providers: {sorted(self.unknown_providers)})"
        )


@dataclass(frozen=True)
class Discovered:
    """Something a provider sees that no declared resource is and nobody owns.

    `kind` is the document kind that would declare it (Machine, Instance, Resource);
    `name` the provider's own name for it (a system's Name, an instance's Name tag),
    maybe empty; `identity` what a document needs to find it again (a Machine's `bmc`
    fields, an instance's id and region, an object's id and type); `facts` what was
    observed (power, inventory, size…), for people deciding whether to enroll it.
    """

    kind: str
    name: str
    identity: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    provider: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "identity": plain(self.identity),
            "facts": plain(self.facts),
            "provider": self.provider,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Discovered:
        return cls(
            kind=data["kind"],
            name=data.get("name", ""),
            identity=dict(data.get("identity", {})),
            facts=dict(data.get("facts", {})),
            provider=data.get("provider", ""),
        )
