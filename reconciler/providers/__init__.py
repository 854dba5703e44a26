"""Providers: the seam to infrastructure APIs, and the registry that finds implementations.

Sits at the observe and execute edges of the flow. A provider type (the
`spec.type` of a Provider document) names a factory taking a `ProviderContext`.
Factories come from the package entry point group ``reconciler.providers`` — so a
third-party package ships its own — and from the built-ins below, which an entry
point of the same name overrides.

Enters: observe and start/poll/cancel calls with plain values. Leaves:
observations and operation states as values (`base.py`). May import `model`,
`errors`, `settings`, `secrets`: a provider never imports the controller, the
executor or the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import PermanentError
from reconciler.providers.base import (
    MANAGED_BY,
    ActionRequest,
    Observation,
    ObservationResult,
    ObservationUnknown,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    OwnedResource,
    Provider,
    ProviderContext,
    ResourceRef,
)

if TYPE_CHECKING:
    from reconciler.model.kinds import Provider as ProviderDocument

ENTRY_POINT_GROUP = "reconciler.providers"

BUILTINS: dict[str, str] = {
    "simulator": "reconciler.providers.simulator:SimulatorProvider",
}
"""Provider types shipped with reconciler, as ``module:attribute``."""

ProviderFactory = Callable[[ProviderContext], Provider]


def _load(target: str) -> ProviderFactory:
    module, _, attribute = target.partition(":")
    factory: ProviderFactory = getattr(import_module(module), attribute)
    return factory


def provider_types() -> dict[str, str]:
    """Every known provider type -> its ``module:attribute``, entry points over built-ins."""
    found = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return dict(sorted(found.items()))


def factory_for(provider_type: str) -> ProviderFactory:
    """The factory of a provider type; PermanentError naming the known ones otherwise."""
    types = provider_types()
    target = types.get(provider_type)
    if target is None:
        raise PermanentError(
            f"unknown provider type {provider_type!r}; known: {', '.join(types) or 'none'}"
        )
    try:
        return _load(target)
    except (ImportError, AttributeError) as exc:
        raise PermanentError(
            f"provider type {provider_type!r} ({target}) failed to load: {exc}"
        ) from exc


def observed_fields(document: ProviderDocument) -> Mapping[str, frozenset[str]] | None:
    """Per resource kind, the fields the document's provider type observes (a type's
    optional `observed_fields(spec)` classmethod); None when it does not say, or the
    type is unknown (opening it reports that)."""
    try:
        factory = factory_for(document.spec.type)
    except PermanentError:
        return None
    declared = getattr(factory, "observed_fields", None)
    if declared is None:
        return None
    try:
        found = declared(document.spec)
    except Exception:  # a third-party provider's: never break validation on it
        return None
    return None if found is None else {str(k): frozenset(v) for k, v in found.items()}


def open_provider(
    document: ProviderDocument, *, state_dir: Path, repository: str = "default"
) -> Provider:
    """An instance for one Provider document."""
    from reconciler.providers.instrument import instrumented

    context = ProviderContext(document.metadata.name, document.spec, Path(state_dir), repository)
    return instrumented(factory_for(document.spec.type)(context), document.metadata.name)


def open_providers(
    documents: Mapping[str, ProviderDocument], *, state_dir: Path, repository: str = "default"
) -> tuple[dict[str, Provider], dict[str, str]]:
    """Instances for every Provider document, and the reason for each one that failed.

    A provider that cannot be opened does not stop the others: its resources are
    observed as unknown.
    """
    opened: dict[str, Provider] = {}
    failed: dict[str, str] = {}
    for name, document in sorted(documents.items()):
        try:
            opened[name] = open_provider(document, state_dir=state_dir, repository=repository)
        except Exception as exc:  # a third-party factory may raise anything
            failed[name] = f"{type(exc).__name__}: {exc}"
    return opened, failed


__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "MANAGED_BY",
    "ActionRequest",
    "Observation",
    "ObservationResult",
    "ObservationUnknown",
    "OperationHandle",
    "OperationPhase",
    "OperationStatus",
    "OwnedResource",
    "Provider",
    "ProviderContext",
    "ProviderFactory",
    "ResourceRef",
    "factory_for",
    "observed_fields",
    "open_provider",
    "open_providers",
    "provider_types",
]
