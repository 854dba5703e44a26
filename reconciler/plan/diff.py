"""Diff: declared against observed, per resource — step 4 of the flow, pure.

Takes the loader's `Desired`, observation's `ObservedState` and what was last
applied per resource; returns a `Diff` of frozen values. No I/O, no clock.

Desired and observed are first *paired* (a declared resource not found is
`missing`; an owned one no longer declared is `orphaned`; one whose provider could
not say is `unknown`), then compared. Only the fields some stage of the
resource's pipeline *converges* are compared (`params.os`, `size`, `power`…):
those are the fields the controller can bring to their declared value; the rest
of the declared state is input to tasks, not observable state. Each difference
says its cause: `git` when the declared value changed since it was last applied
(or was never applied), `drift` when the declared value is what was applied and
the world moved. Ignore rules (the policy's `ignoreDifferences`, `*` for any key
or list element) drop differences; `secure` params are redacted everywhere.

Fast path: a field whose declared and observed values are equal costs one `==`;
deepdiff runs only on the fields that differ, to name the precise sub-paths. When
a resource's fingerprint equals the last applied one, no comparison with the last
applied declared state is made at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from deepdiff import DeepDiff
from deepdiff.helper import notpresent

from reconciler.observe.values import Observation, OwnedResource
from reconciler.secrets import REDACTED

if TYPE_CHECKING:
    from reconciler.load.desired import Desired, ResolvedResource
    from reconciler.model.common import Selector
    from reconciler.model.kinds import IgnoreRule
    from reconciler.observe.values import ObservedState


class Status(StrEnum):
    IN_SYNC = "in-sync"
    MISSING = "missing"
    UNPROVISIONED = "unprovisioned"
    """It exists on the provider, but its pipeline never completed."""
    ADOPTABLE = "adoptable"
    """It exists, was never provisioned here, `adopt` is set and what is observed matches."""
    CHANGED = "changed"
    DRIFTED = "drifted"
    ORPHANED = "orphaned"
    UNKNOWN = "unknown"


class Cause(StrEnum):
    GIT = "git"
    DRIFT = "drift"


@dataclass(frozen=True)
class LastApplied:
    """What reconciler brought about for a resource: the journal's record, read here.

    A resource is *provisioned* once its whole pipeline completed (every stage, with
    validate); `resolution` is `ResolvedResource.resolution()` at that time, None while
    it never completed. `fingerprint` and `declared` are its `fingerprint()` and
    `declared()` then (without `declared`, every difference of a changed resource counts
    as a Git change: the per-field cause needs the old values). `stages` holds, per
    stage, the `ResolvedStage.digest()` it had when it last completed on the resource —
    progress of an unfinished first run too, so a retry continues where it stopped.
    """

    fingerprint: str = ""
    declared: Mapping[str, Any] | None = None
    revision: str | None = None
    resolution: str | None = None
    stages: Mapping[str, str] = field(default_factory=dict)
    adopted: bool = False

    @property
    def provisioned(self) -> bool:
        """Whether its pipeline ever completed (or it was adopted)."""
        return self.resolution is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "declared": None if self.declared is None else dict(self.declared),
            "revision": self.revision,
            "resolution": self.resolution,
            "stages": dict(self.stages),
            "adopted": self.adopted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LastApplied:
        declared = data.get("declared")
        return cls(
            fingerprint=str(data.get("fingerprint") or ""),
            declared=None if declared is None else dict(declared),
            revision=data.get("revision"),
            resolution=data.get("resolution"),
            stages={str(k): str(v) for k, v in (data.get("stages") or {}).items()},
            adopted=bool(data.get("adopted", False)),
        )


@dataclass(frozen=True)
class FieldDiff:
    """One differing field: dotted path, both values (redacted), and the cause.

    `absent` says which side has no value at all: "observed" or "declared".
    """

    path: str
    declared: Any
    observed: Any
    cause: Cause
    absent: str | None = None


@dataclass(frozen=True)
class ResourceDiff:
    key: str
    kind: str
    name: str
    status: Status
    provider: str = ""
    exists: bool | None = None
    fields: tuple[FieldDiff, ...] = ()
    reason: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    unconverged: tuple[str, ...] = ()
    """Declared paths changed since last applied that no stage converges or uses."""
    changed_stages: tuple[str, ...] = ()
    """Stages not as they last completed on it (they run again)."""
    done: tuple[str, ...] = ()
    """Unprovisioned: the leading stages an earlier, unfinished run completed as declared now."""
    adopt: bool = False


@dataclass(frozen=True)
class Diff:
    """Every declared and orphaned resource's diff, by key (sorted)."""

    resources: Mapping[str, ResourceDiff]

    def with_status(self, *statuses: Status) -> list[ResourceDiff]:
        return [d for d in self.resources.values() if d.status in statuses]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for d in self.resources.values():
            out[d.status.value] += 1
        return out


# --- paths ----------------------------------------------------------------------

FAILED_STAGE = "failed"
"""A stage's digest in a record once it failed there: not done, whatever it did before."""

_MISSING = object()
MISSING = _MISSING
"""What `get_path` answers for a path with no value."""


def get_path(data: Any, parts: Sequence[str]) -> Any:
    """The value at a dotted path (list elements by index), or the module's `_MISSING`."""
    node = data
    for part in parts:
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def covers(converged: str, path: str) -> bool:
    """Whether a stage converging `converged` brings `path` to its declared value."""
    return path == converged or path.startswith(converged + ".") or converged.startswith(path + ".")


def converged_paths(resource: ResolvedResource) -> tuple[str, ...]:
    """The paths compared for a resource: every stage's converges, ancestors first wins."""
    return _minimal_paths(tuple(stage.converges for stage in resource.stages))


def _minimal_paths(converges: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    paths = sorted({p for stage in converges for p in stage})
    kept: list[str] = []
    for path in paths:
        if not any(path.startswith(k + ".") for k in kept):
            kept.append(path)
    return tuple(kept)


def selector_matches(selector: Selector, kind: str, name: str, labels: Mapping[str, str]) -> bool:
    """`Kind/name` or a bare name, and every matchLabels pair; an empty selector matches all."""
    if selector.name is not None and selector.name not in (f"{kind}/{name}", name):
        return False
    return all(labels.get(k) == v for k, v in selector.match_labels.items())


def _ignore_patterns(
    rules: Iterable[IgnoreRule], kind: str, name: str, labels: Mapping[str, str]
) -> list[list[str]]:
    patterns = []
    for rule in rules:
        if selector_matches(rule.selector, kind, name, labels):
            for path in rule.paths:
                parts = path.split(".")
                if parts[0] == "observed" and len(parts) > 1:
                    parts = parts[1:]
                patterns.append(parts)
    return patterns


def _ignored(parts: Sequence[str], patterns: Sequence[Sequence[str]]) -> bool:
    return any(
        len(pattern) <= len(parts) and all(p == "*" or p == parts[i] for i, p in enumerate(pattern))
        for pattern in patterns
    )


def _redact(parts: Sequence[str], value: Any, secure: frozenset[str]) -> Any:
    if value is _MISSING:
        return None
    if secure and parts and parts[0] == "params":
        if len(parts) > 1 and parts[1] in secure:
            return REDACTED
        if len(parts) == 1 and isinstance(value, Mapping):
            value = {k: REDACTED if k in secure else v for k, v in value.items()}
    return value  # known secret values are redacted where text leaves the process


def _differences(declared: Any, observed: Any, base: list[str]) -> list[tuple[list[str], Any, Any]]:
    """(path parts, declared, observed) for every leaf that differs under `base`;
    a side that has no value there is `_MISSING`."""
    if observed is _MISSING or not (
        isinstance(declared, Mapping | list) and isinstance(observed, Mapping | list)
    ):
        return [(base, declared, observed)]
    tree = DeepDiff(declared, observed, view="tree", verbose_level=2)
    out = []
    for items in tree.values():
        for item in items:
            rel = [str(p) for p in item.path(output_format="list")]
            t1 = _MISSING if item.t1 is notpresent else item.t1
            t2 = _MISSING if item.t2 is notpresent else item.t2
            out.append((base + rel, t1, t2))
    out.sort(key=lambda d: d[0])
    return out


# --- the diff -------------------------------------------------------------------


def _compared_paths(
    resource: ResolvedResource,
    paths_cache: dict[tuple[tuple[str, ...], ...], tuple[str, ...]] | None,
) -> tuple[str, ...]:
    if paths_cache is None:
        return converged_paths(resource)
    shape = tuple(stage.converges for stage in resource.stages)
    return paths_cache.get(shape) or paths_cache.setdefault(shape, _minimal_paths(shape))


def _field_diffs(
    resource: ResolvedResource,
    observation: Observation,
    last: LastApplied | None,
    paths: Sequence[str],
    ignore: Sequence[IgnoreRule],
) -> list[FieldDiff]:
    """Every converged path whose observed value differs from the declared one, with its
    cause (`git` unless the declared value is what was last applied)."""
    declared = resource.declared()
    fingerprint_unchanged: bool | None = None  # computed only when something differs
    secure = frozenset(resource.secure_params)
    patterns: list[list[str]] | None = None
    fields: list[FieldDiff] = []
    for path in paths:
        parts = path.split(".")
        want = get_path(declared, parts)
        if want is _MISSING:
            continue
        seen = get_path(observation.fields, parts)
        if want == seen:
            continue
        if patterns is None:
            patterns = _ignore_patterns(ignore, resource.kind, resource.name, resource.labels)
        for sub, d_value, o_value in _differences(want, seen, parts):
            if _ignored(sub, patterns):
                continue
            if fingerprint_unchanged is None:
                fingerprint_unchanged = (
                    last is not None and last.fingerprint == resource.fingerprint()
                )
            applied = fingerprint_unchanged or (
                last is not None
                and last.declared is not None
                and get_path(last.declared, sub) == get_path(declared, sub)
            )
            absent = None
            if o_value is _MISSING:
                absent = "observed"
            elif d_value is _MISSING:
                absent = "declared"
            fields.append(
                FieldDiff(
                    ".".join(sub),
                    _redact(sub, d_value, secure),
                    _redact(sub, o_value, secure),
                    Cause.DRIFT if applied else Cause.GIT,
                    absent,
                )
            )
    return fields


def still_differing(
    resource: ResolvedResource,
    converges: Sequence[str],
    observed: Mapping[str, Any],
    ignore: Sequence[IgnoreRule] = (),
) -> list[str]:
    """After a stage ran: each declared field it converges that is not observed as
    declared, as `path: declared X, observed Y` (secure values redacted)."""
    observation = Observation(resource.key, True, observed)
    return [
        f"{f.path}: declared {_show(f.declared)}, observed "
        + ("nothing" if f.absent == "observed" else _show(f.observed))
        for f in _field_diffs(
            resource, observation, None, _minimal_paths((tuple(converges),)), ignore
        )
    ]


def _show(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def done_stages(resource: ResolvedResource, last: LastApplied | None) -> tuple[str, ...]:
    """The leading stages that completed on the resource as they are declared now: an
    unfinished first run continues after them."""
    if last is None:
        return ()
    done: list[str] = []
    for name, digest in resource.stage_digests().items():
        if last.stages.get(name) != digest:
            break
        done.append(name)
    return tuple(done)


def changed_stages(resource: ResolvedResource, last: LastApplied) -> tuple[str, ...]:
    """Stages of a provisioned resource that are not what last completed on it (a new
    stage, fixed tasks, a new hook, a changed param they use). None when the record holds
    no stage digests (written by an older version): nothing can be said."""
    if not last.stages:
        return ()
    if last.resolution == resource.resolution() and FAILED_STAGE not in last.stages.values():
        return ()
    return tuple(
        name for name, digest in resource.stage_digests().items() if last.stages.get(name) != digest
    )


def _unconverged(
    resource: ResolvedResource, last: LastApplied | None, paths: Sequence[str]
) -> tuple[str, ...]:
    """Declared paths changed since last applied that no stage converges or uses."""
    declared = resource.declared()
    if last is None or last.declared is None or last.declared == declared:
        return ()
    used = {f"params.{name}" for stage in resource.stages for name in stage.references}
    changed = _differences(dict(last.declared), declared, [])
    return tuple(
        sorted(
            {
                ".".join(sub)
                for sub, _, _ in changed
                if sub
                and not any(covers(p, ".".join(sub)) for p in paths)
                and not any(covers(p, ".".join(sub)) for p in used)
            }
        )
    )


def diff_resource(
    resource: ResolvedResource,
    observation: Any,
    last: LastApplied | None,
    ignore: Sequence[IgnoreRule] = (),
    paths_cache: dict[tuple[tuple[str, ...], ...], tuple[str, ...]] | None = None,
) -> ResourceDiff:
    """One declared resource against its observation and its record (module docstring)."""
    base: dict[str, Any] = {
        "key": resource.key,
        "kind": resource.kind,
        "name": resource.name,
        "provider": resource.provider,
        "labels": resource.labels,
    }
    if not isinstance(observation, Observation):
        reason = getattr(observation, "reason", None) or "not observed"
        return ResourceDiff(status=Status.UNKNOWN, reason=reason, **base)
    provisioned = last is not None and last.provisioned
    if not observation.exists:
        if not provisioned:
            return ResourceDiff(
                status=Status.MISSING, exists=False, reason="not found by the provider", **base
            )
        assert last is not None
        at = f" (last applied at revision {last.revision})" if last.revision else ""
        return ResourceDiff(
            status=Status.DRIFTED, exists=False, reason=f"deleted outside Git{at}", **base
        )

    paths = _compared_paths(resource, paths_cache)
    if not provisioned:
        # It exists (every bare-metal machine does, on its BMC) but its pipeline never
        # completed: existence is not provisioning.
        fields = _field_diffs(resource, observation, None, paths, ignore)
        if resource.adopt:
            return ResourceDiff(
                status=Status.UNPROVISIONED if fields else Status.ADOPTABLE,
                exists=True,
                fields=tuple(fields),
                reason="exists, never provisioned by reconciler; adopt is set",
                adopt=True,
                **base,
            )
        return ResourceDiff(
            status=Status.UNPROVISIONED,
            exists=True,
            fields=tuple(fields),
            reason="exists on the provider, but its pipeline never completed",
            done=done_stages(resource, last),
            **base,
        )

    assert last is not None
    fields = _field_diffs(resource, observation, last, paths, ignore)
    stages = changed_stages(resource, last)
    unconverged = _unconverged(resource, last, paths)
    if not fields and not stages:
        return ResourceDiff(status=Status.IN_SYNC, exists=True, unconverged=unconverged, **base)
    git = stages or any(f.cause is Cause.GIT for f in fields)
    return ResourceDiff(
        status=Status.CHANGED if git else Status.DRIFTED,
        exists=True,
        fields=tuple(fields),
        unconverged=unconverged,
        changed_stages=stages,
        **base,
    )


def diff_orphan(owned: OwnedResource) -> ResourceDiff:
    return ResourceDiff(
        key=owned.key,
        kind=owned.kind,
        name=owned.name,
        status=Status.ORPHANED,
        provider=owned.provider,
        exists=True,
        reason="owned by reconciler, no longer declared",
        labels=dict(owned.labels),
    )


def diff(
    desired: Desired,
    observed: ObservedState,
    *,
    last_applied: Mapping[str, LastApplied] | None = None,
) -> Diff:
    """Every declared resource paired with its observation, plus every orphan."""
    last_applied = last_applied or {}
    ignore = tuple(desired.policy.ignore_differences)
    out: dict[str, ResourceDiff] = {}
    paths_cache: dict[tuple[tuple[str, ...], ...], tuple[str, ...]] = {}
    for key, resource in desired.resources.items():
        out[key] = diff_resource(
            resource, observed.observations.get(key), last_applied.get(key), ignore, paths_cache
        )
    for key, owned in observed.owned.items():
        if key not in desired.resources:
            out[key] = diff_orphan(owned)
    return Diff(dict(sorted(out.items())))
