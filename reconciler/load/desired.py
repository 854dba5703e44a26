"""The declared state, resolved: what `reconciler.load.load` hands to diff and plan.

Pure values and pure functions. Resolution turns documents into what the rest of
the flow needs per resource: the flattened pipeline (includes spliced in, chained
stages appended), each stage's task lists with extension points composed, and
the effective params.

Effective params resolve first-match-wins in this order (documented in README):
the resource's own params, its profiles in the order listed, the pipeline's
params (an including pipeline before the ones it includes), the stage's params
(for that stage only), the `global` profile, then the pipeline inputs' defaults.

Extension-point task lists compose, never override, in this order: the `global`
profile, the pipeline, the stage itself, the resource's profiles (in order),
the resource. At each level, hooks under `"*"` come before those for the stage.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.model import Input, Pipeline, Profile, Provider, Stage, Task
from reconciler.model.kinds import (
    Hooks,
    InstanceSpec,
    MachineSpec,
    ManagedObjectSpec,
    PolicySpec,
    Resource,
    StageHooks,
    StageSpec,
)

GLOBAL_PROFILE = "global"
TASK_POINTS = (
    "pre_notify",
    "pre_process",
    "classify",
    "work",
    "post_process",
    "validate",
    "post_notify",
)
"""A stage's task lists in run order; hooks extend the four pre/post points."""


_PARAM_REFERENCE = re.compile(r"\$\{\s*params\.([A-Za-z0-9_.-]+)\s*\}")


@dataclass(frozen=True)
class ResolvedStage:
    name: str
    spec: StageSpec
    destructive: bool
    converges: tuple[str, ...]
    tasks: Mapping[str, tuple[Task, ...]]
    params: Mapping[str, Any]
    definition: str = ""
    """Hash of what the stage is, whatever resource runs it: its composed tasks (hooks
    included), its own params, what it converges, whether it is destructive."""
    references: tuple[str, ...] = ()
    """The params its tasks use as ``${params.NAME}``: their values are inputs of the stage."""

    def digest(self) -> str:
        """What running this stage on its resource means: its definition and the values
        of the params its tasks use. A different digest than when the stage last completed
        on a resource means the stage must run there again (a fixed script, a new hook,
        a changed param it uses)."""
        used = {name: self.params.get(name) for name in self.references}
        return canonical_hash({"definition": self.definition, "params": used})[:16]


_NOT_WORK = frozenset({"pre_notify", "post_notify"})
"""Notifications tell people about a stage; they do not change what it does."""
_NOT_WHAT = frozenset({"description", "timeout", "retry"})
"""How long and how often a task may try is not what it does."""


def stage_definition(
    spec: StageSpec, tasks: Mapping[str, tuple[Task, ...]]
) -> tuple[str, tuple[str, ...]]:
    """`ResolvedStage.definition` and `references` for a stage and its composed tasks.

    The definition covers the tasks that do the work (notifications, descriptions,
    timeouts and retries left out: changing them re-runs nothing), the stage's own
    params, what it converges and whether it is destructive.
    """
    dumped = {
        point: [t.model_dump(mode="json", exclude=set(_NOT_WHAT)) for t in items]
        for point, items in tasks.items()
        if point not in _NOT_WORK
    }
    definition = canonical_hash(
        {
            "tasks": dumped,
            "params": spec.params,
            "converges": spec.converges,
            "destructive": spec.destructive,
        }
    )
    return definition, tuple(sorted(set(_PARAM_REFERENCE.findall(canonical_json(dumped)))))


@dataclass(frozen=True)
class ResolvedResource:
    kind: str
    name: str
    key: str
    document: Resource
    path: str
    line: int
    provider: str
    pipeline: str
    stages: tuple[ResolvedStage, ...]
    params: Mapping[str, Any]
    secure_params: frozenset[str]
    depends_on: tuple[str, ...]
    labels: Mapping[str, str]
    adopt: bool = False
    """Take it over without running the pipeline when what is observed matches
    (`spec.adopt` of the resource, else of its profiles, else of the global profile)."""
    management: str = "manage"
    """`observe`: only observed and reported, never acted on (`spec.management` of the
    resource, else of its profiles, else of the global profile; the Policy's
    `observeOnly` selectors add to it, see `reconciler.plan.management`)."""
    management_from: str = ""
    """Where `management` was set (`Machine/x`, `Profile/y`; empty: the default)."""

    def declared(self) -> dict[str, Any]:
        """The canonical declared state that diff compares with what a provider observes."""
        spec = self.document.spec
        state: dict[str, Any] = {"params": dict(self.params)}
        if isinstance(spec, InstanceSpec):
            state.update(size=spec.size, image=spec.image)
            if spec.region:
                state["region"] = spec.region
            if spec.zone:
                state["zone"] = spec.zone
            if spec.state:
                state["state"] = spec.state
        elif isinstance(spec, MachineSpec):
            bmc = spec.bmc.model_dump(exclude_none=True, by_alias=True)
            if bmc:
                state["bmc"] = bmc
            if spec.rack:
                state["rack"] = spec.rack
            if spec.power:
                state["power"] = spec.power
        elif isinstance(spec, ManagedObjectSpec):
            state["type"] = spec.type
        return state

    def fingerprint(self) -> str:
        """Stable hash of everything that, when changed, may need work on this resource."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        # Cached on the value: the loader hands back the same resolved resource for an
        # unchanged document, so a long-running controller hashes it once.
        return canonical_hash(
            {
                "declared": self.declared(),
                "provider": self.provider,
                "pipeline": self.pipeline,
                "stages": [s.name for s in self.stages],
            }
        )

    def stage_digests(self) -> dict[str, str]:
        """Each stage's `ResolvedStage.digest`, by name, in pipeline order."""
        return dict(self._stage_digests)

    @functools.cached_property
    def _stage_digests(self) -> tuple[tuple[str, str], ...]:
        return tuple((s.name, s.digest()) for s in self.stages)

    def resolution(self) -> str:
        """Stable hash of everything that decides what applying it does: the fingerprint
        and every stage's digest (a fixed script, a new hook or a changed param counts)."""
        return self._resolution

    @functools.cached_property
    def _resolution(self) -> str:
        return canonical_hash({"fingerprint": self.fingerprint(), "stages": self._stage_digests})


@dataclass(frozen=True)
class Desired:
    revision: str | None
    resources: Mapping[str, ResolvedResource]
    providers: Mapping[str, Provider]
    policy: PolicySpec = field(default_factory=PolicySpec)
    pipelines: Mapping[str, Pipeline] = field(default_factory=dict)
    stages: Mapping[str, Stage] = field(default_factory=dict)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    policy_source: tuple[str, str] | None = None
    """(name, path) of the Policy document, when there is one: approvals of changes to
    the rules themselves are matched by that path."""


def subset(desired: Desired, keys: Collection[str]) -> Desired:
    """`desired` with only the resources named in `keys` (a plan of part of the fleet)."""
    wanted = keys if isinstance(keys, set | frozenset) else set(keys)
    return dataclasses.replace(
        desired, resources={k: r for k, r in desired.resources.items() if k in wanted}
    )


def with_dependencies(desired: Desired, keys: Collection[str]) -> set[str]:
    """`keys` and everything they depend on, transitively (a `--target` cycle's resources).

    ValueError names each key that is not declared (a bare name matches one kind)."""
    by_name: dict[str, list[str]] = {}
    for key in desired.resources:
        by_name.setdefault(key.split("/", 1)[1], []).append(key)
    wanted: list[str] = []
    unknown: list[str] = []
    for key in keys:
        if key in desired.resources:
            wanted.append(key)
        elif "/" not in key and len(by_name.get(key, [])) == 1:
            wanted.append(by_name[key][0])
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"not declared: {', '.join(sorted(unknown))} (give Kind/name, e.g. Machine/r01-node01)"
        )
    found: set[str] = set()
    while wanted:
        key = wanted.pop()
        if key not in found:
            found.add(key)
            wanted.extend(d for d in desired.resources[key].depends_on if d in desired.resources)
    return found


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def canonical_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


# --- resolution ------------------------------------------------------------------------


def _hooks_for(stage: str, hooks: StageHooks) -> list[Hooks]:
    return [h for h in (hooks.get("*"), hooks.get(stage)) if h is not None]


def merge_layers(layers: list[tuple[str, Mapping[str, Any]]]) -> dict[str, tuple[Any, str]]:
    """First-match-wins merge: each param's value and the origin that set it."""
    merged: dict[str, tuple[Any, str]] = {}
    for origin, params in layers:
        for key, value in params.items():
            merged.setdefault(key, (value, origin))
    return merged


class Resolver:
    """Resolves resources against one revision's pipelines, stages and profiles.

    Pure, but memoizing: in a fleet most resources share a pipeline and profiles,
    so what depends only on those is computed once per revision, not per resource.
    """

    def __init__(
        self,
        pipelines: Mapping[str, Pipeline],
        stages: Mapping[str, Stage],
        profiles: Mapping[str, Profile],
    ) -> None:
        self.pipelines = pipelines
        self.stages = stages
        self.profiles = profiles
        self._chains: dict[str, tuple[str, ...]] = {}
        self._inputs: dict[str, dict[str, Input]] = {}
        self._orders: dict[str, tuple[str, ...]] = {}
        self._tasks: dict[tuple[str, str, tuple[str, ...]], dict[str, tuple[Task, ...]]] = {}
        self._definitions: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}

    def pipeline_chain(self, name: str) -> tuple[str, ...]:
        """The pipeline and every pipeline it includes, outermost first, each once."""
        if name not in self._chains:
            order: list[str] = []
            pending = [name]
            while pending:
                current = pending.pop(0)
                if current in order or current not in self.pipelines:
                    continue
                order.append(current)
                pending[:0] = [s.include for s in self.pipelines[current].spec.steps if s.include]
            self._chains[name] = tuple(order)
        return self._chains[name]

    def stage_order(self, name: str) -> tuple[str, ...]:
        """Stage names a pipeline runs, in order: includes spliced in place, chains appended.

        A stage that would run twice (two included pipelines share it) runs at its
        first place only. Cycles are reported by the loader before this is called.
        """
        if name in self._orders:
            return self._orders[name]
        order: list[str] = []
        expanding: set[str] = set()

        def add_stage(stage: str) -> None:
            if stage in order or stage not in self.stages:
                return
            order.append(stage)
            for follower in self.stages[stage].spec.chain:
                add_stage(follower)

        def expand(pipeline: str) -> None:
            if pipeline in expanding or pipeline not in self.pipelines:
                return
            expanding.add(pipeline)
            for step in self.pipelines[pipeline].spec.steps:
                if step.stage:
                    add_stage(step.stage)
                elif step.include:
                    expand(step.include)
            expanding.discard(pipeline)

        expand(name)
        self._orders[name] = tuple(order)
        return self._orders[name]

    def inputs(self, name: str) -> dict[str, Input]:
        """Inputs a pipeline accepts, its own first, then those of what it includes."""
        if name not in self._inputs:
            inputs: dict[str, Input] = {}
            for pipeline in self.pipeline_chain(name):
                for item in self.pipelines[pipeline].spec.inputs:
                    inputs.setdefault(item.name, item)
            self._inputs[name] = inputs
        return self._inputs[name]

    def param_layers(
        self, resource: Resource, stage: Stage | None = None
    ) -> list[tuple[str, Mapping[str, Any]]]:
        """(origin, params) from highest to lowest precedence; origin is "Kind/name"."""
        spec = resource.spec
        profiles = self.profiles
        layers: list[tuple[str, Mapping[str, Any]]] = [
            (f"{resource.kind}/{resource.metadata.name}", spec.params)
        ]
        layers += [
            (f"Profile/{p}", profiles[p].spec.params)
            for p in spec.profiles
            if p in profiles and p != GLOBAL_PROFILE
        ]
        layers += [
            (f"Pipeline/{p}", self.pipelines[p].spec.params)
            for p in self.pipeline_chain(spec.pipeline)
        ]
        if stage is not None:
            layers.append((f"Stage/{stage.metadata.name}", stage.spec.params))
        if GLOBAL_PROFILE in profiles:
            layers.append((f"Profile/{GLOBAL_PROFILE}", profiles[GLOBAL_PROFILE].spec.params))
        defaults = {
            name: item.default
            for name, item in self.inputs(spec.pipeline).items()
            if item.default is not None
        }
        layers.append((f"Pipeline/{spec.pipeline}#defaults", defaults))
        return layers

    def compose_tasks(self, stage: Stage, resource: Resource) -> dict[str, tuple[Task, ...]]:
        spec = resource.spec
        cache_key = (stage.metadata.name, spec.pipeline, tuple(spec.profiles))
        if not spec.hooks and cache_key in self._tasks:
            return self._tasks[cache_key]
        name = stage.metadata.name
        profiles = self.profiles
        outer: list[Hooks] = []
        if GLOBAL_PROFILE in profiles:
            outer += _hooks_for(name, profiles[GLOBAL_PROFILE].spec.hooks)
        for pipeline in self.pipeline_chain(spec.pipeline):
            outer += _hooks_for(name, self.pipelines[pipeline].spec.hooks)
        inner: list[Hooks] = []
        for profile in spec.profiles:
            if profile in profiles and profile != GLOBAL_PROFILE:
                inner += _hooks_for(name, profiles[profile].spec.hooks)
        inner += _hooks_for(name, spec.hooks)
        tasks: dict[str, tuple[Task, ...]] = {}
        for point in TASK_POINTS:
            own: list[Task] = list(
                getattr(stage.spec, "validate_" if point == "validate" else point)
            )
            if point in Hooks.POINTS:
                own = [
                    *(t for h in outer for t in getattr(h, point)),
                    *own,
                    *(t for h in inner for t in getattr(h, point)),
                ]
            tasks[point] = tuple(own)
        if not spec.hooks:
            self._tasks[cache_key] = tasks
        return tasks

    def definition(
        self, stage: Stage, resource: Resource, tasks: Mapping[str, tuple[Task, ...]]
    ) -> tuple[str, tuple[str, ...]]:
        """`stage_definition` of a stage's composed tasks; once per pipeline and profiles
        for the resources without hooks of their own (they share the composed tasks)."""
        spec = resource.spec
        if spec.hooks:
            return stage_definition(stage.spec, tasks)
        cache_key = (stage.metadata.name, spec.pipeline, tuple(spec.profiles))
        found = self._definitions.get(cache_key)
        if found is None:
            found = self._definitions[cache_key] = stage_definition(stage.spec, tasks)
        return found

    def adopt(self, resource: Resource) -> bool:
        """The resource's `spec.adopt`, else its profiles' (in order), else the global one's."""
        if resource.spec.adopt is not None:
            return resource.spec.adopt
        names = [*resource.spec.profiles, GLOBAL_PROFILE]
        for name in names:
            profile = self.profiles.get(name)
            if profile is not None and profile.spec.adopt is not None:
                return profile.spec.adopt
        return False

    def management(self, resource: Resource) -> tuple[str, str]:
        """The resource's `spec.management` and where it was set: the resource's own, else
        its profiles' (in order), else the global one's; `manage` by default."""
        if resource.spec.management is not None:
            return resource.spec.management, f"{resource.kind}/{resource.metadata.name}"
        for name in [*resource.spec.profiles, GLOBAL_PROFILE]:
            profile = self.profiles.get(name)
            if profile is not None and profile.spec.management is not None:
                return profile.spec.management, f"Profile/{name}"
        return "manage", ""

    def resolve(
        self,
        resource: Resource,
        *,
        path: str,
        line: int,
        depends_on: tuple[str, ...],
    ) -> ResolvedResource:
        spec = resource.spec
        params = {k: v for k, (v, _) in merge_layers(self.param_layers(resource)).items()}
        resolved_stages = []
        for stage_name in self.stage_order(spec.pipeline):
            stage = self.stages[stage_name]
            stage_params = params
            if stage.spec.params:
                layers = self.param_layers(resource, stage)
                stage_params = {k: v for k, (v, _) in merge_layers(layers).items()}
            tasks = self.compose_tasks(stage, resource)
            definition, references = self.definition(stage, resource, tasks)
            resolved_stages.append(
                ResolvedStage(
                    name=stage_name,
                    spec=stage.spec,
                    destructive=stage.spec.destructive,
                    converges=tuple(stage.spec.converges),
                    tasks=tasks,
                    params=stage_params,
                    definition=definition,
                    references=references,
                )
            )
        inputs = self.inputs(spec.pipeline)
        management, management_from = self.management(resource)
        return ResolvedResource(
            kind=resource.kind,
            name=resource.metadata.name,
            key=f"{resource.kind}/{resource.metadata.name}",
            document=resource,
            path=path,
            line=line,
            provider=spec.provider,
            pipeline=spec.pipeline,
            stages=tuple(resolved_stages),
            params=params,
            secure_params=frozenset(name for name, item in inputs.items() if item.secure),
            depends_on=depends_on,
            labels=dict(resource.metadata.labels),
            adopt=self.adopt(resource),
            management=management,
            management_from=management_from,
        )
