"""Checks only the resolved resources can show: composed task names, converged fields.

Part of load, after resolution (`reconciler.load.desired`): pure, values in and
`(document, location, message)` findings out, which the loader turns into
`path:line:col` diagnostics.

- Hooks from several levels (the global profile, pipelines, the stage, profiles,
  the resource) compose into one stage; two tasks of the composed stage with one
  name would share a task log and be told apart by position only: an error naming
  both places.
- A stage's `converges` entry is a promise that the field is observed and brought to
  its declared value; a provider that does not observe that field for the kind
  (`observed_fields`) could never tell whether it holds: an error at the entry,
  naming the provider and what it does observe. A resource whose provider does not
  manage its kind at all is an error at its `spec.provider`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.load.desired import GLOBAL_PROFILE, ResolvedResource
from reconciler.model.kinds import Hooks, Provider

Loc = tuple[str | int, ...]
ObservedFields = Callable[[Provider], Mapping[str, frozenset[str]] | None]
"""Per resource kind, the fields a Provider document's type observes; None: not declared
(anything goes)."""

_ALIAS = {
    "pre_notify": "pre-notify",
    "pre_process": "pre-process",
    "post_process": "post-process",
    "post_notify": "post-notify",
    "classify": "classify",
    "work": "work",
    "validate": "validate",
}


class Document(Protocol):
    """What the loader knows of a document: where it is, and its model."""

    @property
    def path(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def document(self) -> Any: ...


@dataclass(frozen=True)
class Finding:
    doc: Any
    loc: Loc
    message: str
    also: tuple[Any, Loc] | None = None
    """A second place the message names (the other task of a duplicate name)."""


def _hook_sources(
    stage: str, owner: Document | None, hooks: Mapping[str, Hooks]
) -> Iterable[tuple[Document, Loc, str, Any]]:
    if owner is None:
        return
    for key in ("*", stage):
        found = hooks.get(key)
        if found is None:
            continue
        for point in Hooks.POINTS:
            for i, task in enumerate(getattr(found, point)):
                yield owner, ("spec", "hooks", key, _ALIAS[point], i), point, task


def composed_sources(
    stage: str,
    resource: Document,
    pipeline_chain: Sequence[str],
    docs: Mapping[tuple[str, str], Document],
) -> list[tuple[Document, Loc, str, Any]]:
    """Every task of the composed stage with where it was declared, in composed order."""
    out: list[tuple[Document, Loc, str, Any]] = []
    spec = resource.document.spec
    global_profile = docs.get(("Profile", GLOBAL_PROFILE))
    if global_profile is not None and global_profile.document is not None:
        out += _hook_sources(stage, global_profile, global_profile.document.spec.hooks)
    for name in pipeline_chain:
        pipeline = docs.get(("Pipeline", name))
        if pipeline is not None and pipeline.document is not None:
            out += _hook_sources(stage, pipeline, pipeline.document.spec.hooks)
    stage_doc = docs.get(("Stage", stage))
    if stage_doc is not None and stage_doc.document is not None:
        for point, alias in _ALIAS.items():
            field = "validate_" if point == "validate" else point
            for i, task in enumerate(getattr(stage_doc.document.spec, field)):
                out.append((stage_doc, ("spec", alias, i), point, task))
    for name in spec.profiles:
        profile = docs.get(("Profile", name))
        if name != GLOBAL_PROFILE and profile is not None and profile.document is not None:
            out += _hook_sources(stage, profile, profile.document.spec.hooks)
    out += _hook_sources(stage, resource, spec.hooks)
    return out


def duplicate_task_names(
    resolved: ResolvedResource,
    resource: Document,
    pipeline_chain: Sequence[str],
    docs: Mapping[tuple[str, str], Document],
) -> list[Finding]:
    """Two composed tasks of one stage with one name: at the second, naming the first."""
    findings = []
    for stage in resolved.stages:
        first: dict[str, tuple[Document, Loc]] = {}
        for doc, loc, _point, task in composed_sources(stage.name, resource, pipeline_chain, docs):
            if task.name not in first:
                first[task.name] = (doc, loc)
                continue
            findings.append(
                Finding(
                    doc,
                    (*loc, "name"),
                    f"task name {task.name!r} appears twice in stage {stage.name} as composed "
                    f"for {resolved.key}",
                    also=(first[task.name][0], (*first[task.name][1], "name")),
                )
            )
    return findings


def _covered(entry: str, observed: frozenset[str]) -> bool:
    return any(
        entry == f or entry.startswith(f + ".") or f.startswith(entry + ".") for f in observed
    )


def unobserved_converges(
    resolved: ResolvedResource,
    provider: Provider,
    observed: Mapping[str, frozenset[str]],
    stage_docs: Mapping[str, Document],
    resource: Document,
) -> list[Finding]:
    """Converged fields the resource's provider cannot observe (see module docstring)."""
    name, kind = provider.metadata.name, resolved.kind
    what = f"provider {name} ({provider.spec.type})"
    fields = observed.get(kind)
    if fields is None:
        return [
            Finding(
                resource,
                ("spec", "provider"),
                f"{what} does not manage {kind} resources; it manages "
                f"{', '.join(sorted(observed)) or 'nothing'}",
            )
        ]
    findings = []
    for stage in resolved.stages:
        doc = stage_docs.get(stage.name)
        for i, entry in enumerate(stage.converges):
            if doc is None or _covered(entry, fields):
                continue
            findings.append(
                Finding(
                    doc,
                    ("spec", "converges", i),
                    f"converges {entry!r}, which {what} does not observe for {kind} "
                    f"(used by {resolved.key}): nothing could tell whether it holds; "
                    f"it observes {', '.join(sorted(fields))}",
                )
            )
    return findings
