"""Literal Desired values for the observe, diff and plan tests (no loader, no files)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.load.desired import Desired, ResolvedResource, ResolvedStage
from reconciler.model.common import Metadata, Selector
from reconciler.model.kinds import (
    IgnoreRule,
    Instance,
    InstanceSpec,
    Machine,
    MachineSpec,
    PolicySpec,
    Provider,
    ProviderSpec,
    StageSpec,
)
from reconciler.observe.observe import ObservedState
from reconciler.plan.diff import LastApplied
from reconciler.providers.base import Observation, ObservationUnknown, OwnedResource

HARDWARE = (
    ("discover", ("bmc",), False),
    ("inventory", ("inventory",), False),
    ("burn-in", ("params.burnIn",), False),
    ("install-os", ("params.os", "params.osVersion"), True),
    ("install-app", ("params.application",), False),
    ("register", (), False),
)
CLOUD = (
    ("create", ("size", "image", "region"), False),
    ("wait-running", (), False),
    ("install-app", ("params.application",), False),
)


def stage(name: str, converges: Iterable[str] = (), destructive: bool = False) -> ResolvedStage:
    converges = tuple(converges)
    spec = StageSpec(converges=list(converges), destructive=destructive)
    return ResolvedStage(
        name=name, spec=spec, destructive=destructive, converges=converges, tasks={}, params={}
    )


def resource(
    name: str,
    *,
    kind: str = "Machine",
    provider: str = "sim",
    params: Mapping[str, Any] | None = None,
    stages: Iterable[tuple[str, Iterable[str], bool]] | None = None,
    depends_on: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    secure: Iterable[str] = (),
    size: str = "m6i.large",
    rack: str | None = None,
) -> ResolvedResource:
    params = dict(params if params is not None else {"os": "ubuntu-24.04"})
    labels = dict(labels or {})
    meta = Metadata(name=name, labels=labels)
    if kind == "Machine":
        document: Machine | Instance = Machine(
            api_version="reconciler/v1",
            kind="Machine",
            metadata=meta,
            spec=MachineSpec(provider=provider, pipeline="p", params=params, rack=rack),
        )
        default_stages = HARDWARE
    else:
        document = Instance(
            api_version="reconciler/v1",
            kind="Instance",
            metadata=meta,
            spec=InstanceSpec(
                provider=provider,
                pipeline="p",
                params=params,
                size=size,
                image="ubuntu-24.04",
                region="eu-west-1",
            ),
        )
        default_stages = CLOUD
    return ResolvedResource(
        kind=kind,
        name=name,
        key=f"{kind}/{name}",
        document=document,
        path=f"{kind.lower()}s.yaml",
        line=1,
        provider=provider,
        pipeline="p",
        stages=tuple(stage(*s) for s in (stages if stages is not None else default_stages)),
        params=params,
        secure_params=frozenset(secure),
        depends_on=tuple(depends_on),
        labels=labels,
    )


def policy(
    *,
    prune: bool = False,
    self_heal: bool = False,
    protected: Iterable[str | Mapping[str, str]] = (),
    max_destructive: int = 10,
    ignore: Iterable[tuple[Selector, list[str]]] = (),
) -> PolicySpec:
    selectors = [
        Selector(name=p) if isinstance(p, str) else Selector(match_labels=dict(p))
        for p in protected
    ]
    return PolicySpec(
        prune=prune,
        self_heal=self_heal,
        protected=selectors,
        max_destructive_actions=max_destructive,
        ignore_differences=[IgnoreRule(selector=s, paths=p) for s, p in ignore],
    )


def provider_document(name: str = "sim", **settings: Any) -> Provider:
    return Provider(
        api_version="reconciler/v1",
        kind="Provider",
        metadata=Metadata(name=name),
        spec=ProviderSpec(type="simulator", settings=settings),
    )


def desired(
    resources: Iterable[ResolvedResource],
    *,
    policy_spec: PolicySpec | None = None,
    revision: str | None = "abc1234",
    providers: Iterable[str] = ("sim",),
) -> Desired:
    return Desired(
        revision=revision,
        resources={r.key: r for r in sorted(resources, key=lambda r: r.key)},
        providers={name: provider_document(name) for name in providers},
        policy=policy_spec or PolicySpec(),
    )


def converged(r: ResolvedResource) -> dict[str, Any]:
    """Observed fields exactly as the pipeline would leave them."""
    fields = r.declared()
    fields["inventory"] = {"disks": [{"name": "disk0"}]}
    fields["power"] = "on"
    return fields


def observed(
    d: Desired,
    *,
    fields: Mapping[str, Mapping[str, Any]] | None = None,
    absent: Iterable[str] = (),
    unknown: Iterable[str] = (),
    owned: Iterable[OwnedResource] = (),
) -> ObservedState:
    """Observation of `d`: everything converged, but for the given overrides."""
    fields = dict(fields or {})
    absent, unknown = set(absent), set(unknown)
    out: dict[str, Any] = {}
    for key, r in d.resources.items():
        if key in unknown:
            out[key] = ObservationUnknown(key, "sim: down")
        elif key in absent:
            out[key] = Observation(key, False, {})
        else:
            out[key] = Observation(key, True, fields.get(key, converged(r)))
    owned_map = {o.key: o for o in owned}
    for key, r in d.resources.items():
        if key not in absent and key not in unknown:
            owned_map.setdefault(key, OwnedResource(key, r.kind, r.name, "default"))
    return ObservedState(observations=out, owned=owned_map)


def record(r: ResolvedResource, *, revision: str | None = "r0") -> LastApplied:
    """The journal's record of `r` provisioned as it is declared now."""
    return LastApplied(
        fingerprint=r.fingerprint(),
        declared=r.declared(),
        revision=revision,
        resolution=r.resolution(),
        stages=r.stage_digests(),
    )


def provisioned(d: Desired, *keys: str) -> dict[str, LastApplied]:
    """Records of every resource of `d` (or of `keys`) provisioned as declared now."""
    return {k: record(r) for k, r in d.resources.items() if not keys or k in keys}


def orphan(name: str, kind: str = "Machine", **labels: str) -> OwnedResource:
    return OwnedResource(f"{kind}/{name}", kind, name, "default", labels, {}, "sim")
