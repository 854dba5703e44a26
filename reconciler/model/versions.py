"""Which `apiVersion`s the controller reads, and how older ones convert to the current one.

Part of the model. The controller works on one *hub* version internally
(`reconciler/v1` today). A later `reconciler/v2` adds its own classes and a
converter to the hub here; nothing downstream of the loader changes.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from reconciler.model.kinds import (
    API_VERSION,
    Instance,
    Machine,
    ManagedObject,
    Pipeline,
    Policy,
    Profile,
    Provider,
    Stage,
)

HUB_VERSION = API_VERSION

KINDS: dict[str, dict[str, type[BaseModel]]] = {
    "reconciler/v1": {
        "Provider": Provider,
        "Machine": Machine,
        "Instance": Instance,
        "Resource": ManagedObject,
        "Pipeline": Pipeline,
        "Stage": Stage,
        "Profile": Profile,
        "Policy": Policy,
    },
}
"""Document classes by apiVersion, then kind."""

CONVERTERS: dict[str, Callable[[BaseModel], BaseModel]] = {}
"""apiVersion -> function turning a document of that version into the hub version."""

SUPPORTED_VERSIONS = tuple(KINDS)


def document_class(api_version: str, kind: str) -> type[BaseModel]:
    """The class for (apiVersion, kind); ValueError names what is supported."""
    kinds = KINDS.get(api_version)
    if kinds is None:
        raise ValueError(
            f"unsupported apiVersion {api_version!r}; supported: {', '.join(SUPPORTED_VERSIONS)}"
        )
    cls = kinds.get(kind)
    if cls is None:
        raise ValueError(f"unknown kind {kind!r} for {api_version}; known: {', '.join(kinds)}")
    return cls


def to_hub(document: BaseModel, api_version: str) -> BaseModel:
    if api_version == HUB_VERSION:
        return document
    return CONVERTERS[api_version](document)
