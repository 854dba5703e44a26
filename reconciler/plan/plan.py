"""Plan: what to do about a diff, in which order — step 5 of the flow, pure.

Takes the loader's `Desired` and the `Diff`; returns a frozen `Plan` with a
stable JSON form and content hash, the executor's input. No I/O, no clock.

- A resource is provisioned only once its pipeline completed (the journal's record,
  `diff.LastApplied`), never because a provider reports it: one that is missing, or
  that exists but was never provisioned (every bare-metal machine exists on its BMC),
  runs its pipeline (`create`), continuing after the stages an unfinished earlier run
  completed as declared now. With `adopt`, an existing one whose converged fields are
  observed as declared is taken over without running anything (`adopt`); one that
  differs waits, blocked, naming the fields.
- A changed or drifted field runs the first stage whose `converges` covers it and
  every stage after it (`update`); so does a stage that is not what last completed on
  the resource (its tasks, hooks or the params they use changed). Drift is corrected
  only when the policy's `selfHeal` is on, otherwise it is reported (`report-drift`,
  nothing runs). Re-creating a provisioned resource that disappeared is destructive.
- An orphan is decommissioned only when `prune` is on (`report-orphan` otherwise).
- A resource whose observation is unknown gets no action (`unknown`, blocked).
- A resource whose last apply failed runs again from the stage that failed
  (`update`), even when its fields look in sync.
- `dependsOn` gives waves: a resource's wave comes after every wave holding one
  of its dependencies; decommissions come last; within a wave, by key.
- Destructive actions (a decommission, or re-running a `destructive` stage on an
  existing resource) are refused — kept in the plan, `blocked` with the reason —
  on a protected resource not in `approved`, whenever any observation is
  unknown, and all of them when there are more than `maxDestructiveActions`.
- With `Policy.approvals.required`, actions waiting for an approval are blocked
  with `needs approval from …` (see `reconciler.plan.approvals`).
- Every action says why: the field, its cause (Git or drift), the revision.
- An observed-only resource (`management: observe`, the Policy's `observeOnly`, see
  `reconciler.plan.management`) gets no action, whatever selfHeal and prune say: it is
  listed in `observedOnly` with what differs and what a managed resource would get.
  A dependent of one waits until it is observed as declared.

Change windows need a clock: the executor applies them to destructive actions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from reconciler.plan.diff import (
    Cause,
    Diff,
    FieldDiff,
    ResourceDiff,
    Status,
    covers,
    selector_matches,
)
from reconciler.plan.management import ObservedState, observe_only, observed_state
from reconciler.plan.rollouts import describe, plan_rollouts, rollout_spec

if TYPE_CHECKING:
    from reconciler.load.desired import Desired, ResolvedResource, ResolvedStage
    from reconciler.model.kinds import PolicySpec

PLAN_FORMAT: Literal["reconciler.plan.plan/v1"] = "reconciler.plan.plan/v1"


class Operation(StrEnum):
    CREATE = "create"
    """Provision: run its pipeline (from the first stage not yet done as declared)."""
    UPDATE = "update"
    ADOPT = "adopt"
    """Take over what exists without running the pipeline (`adopt: true`, observed matches)."""
    DECOMMISSION = "decommission"
    REPORT_DRIFT = "report-drift"
    REPORT_ORPHAN = "report-orphan"
    UNKNOWN = "unknown"

    @property
    def executes(self) -> bool:
        """Whether the executor acts on it (when not blocked); adopting records it as ours."""
        return self in (
            Operation.CREATE,
            Operation.UPDATE,
            Operation.ADOPT,
            Operation.DECOMMISSION,
        )


class _Value(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class Change(_Value):
    """One field that differs: declared and observed values (secure ones as ***)."""

    path: str
    declared: Any = None
    observed: Any = None
    cause: Literal["git", "drift"]
    absent: Literal["observed", "declared"] | None = None


class PlannedAction(_Value):
    """What happens to one resource, and why. `blocked` set: refused, nothing runs."""

    key: str
    kind: str
    name: str
    provider: str
    operation: Operation
    stages: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    changes: tuple[Change, ...] = ()
    destructive: bool = False
    wave: int = 1
    blocked: str | None = None
    depends_on: tuple[str, ...] = ()
    fingerprint: str | None = None
    """The declared fingerprint the action brings about (record it as last applied)."""
    exists: bool | None = None
    """Whether the provider reported it existing when planned (a create of something that
    exists provisions it: the provider's create is idempotent on what is there)."""
    rollout: str | None = None
    """The rollout holding it back (`reconciler.plan.rollouts`), and its batch there."""
    batch: str | None = None
    undoes: str | None = None
    """The commit this action reverts for the resource (`reconciler.plan.undo`)."""

    @property
    def runnable(self) -> bool:
        return self.operation.executes and self.blocked is None


class Wave(_Value):
    number: int
    actions: tuple[PlannedAction, ...]


class Summary(_Value):
    create: int = 0
    update: int = 0
    adopt: int = 0
    destroy: int = 0
    drifted: int = 0
    orphaned: int = 0
    unknown: int = 0
    blocked: int = 0
    destructive: int = 0
    in_sync: int = 0
    observed_only: int = 0
    """Observed-only resources (never acted on); `observedOnly` lists them."""


class ObservedOnly(_Value):
    """An observed-only resource: what observation found, and what is not done about it.

    `would` (with `stages`, `destructive`) is the action a managed resource would get
    here: shown so the step from observing to managing holds no surprise."""

    key: str
    kind: str
    name: str
    provider: str
    why: str
    state: ObservedState
    reasons: tuple[str, ...] = ()
    changes: tuple[Change, ...] = ()
    would: Operation | None = None
    stages: tuple[str, ...] = ()
    destructive: bool = False


class UndoAction(_Value):
    """An action that reverts an earlier change for its resource (`reconciler.plan.undo`):
    the commit undone, the revision whose state comes back, and what re-running its
    stages cannot undo (data on disks a destructive stage wiped)."""

    key: str
    commit: str
    subject: str = ""
    author: str | None = None
    restores: str | None = None
    stages: tuple[str, ...] = ()
    cannot_undo: tuple[str, ...] = ()
    blocked: str | None = None


class RolloutPlan(_Value):
    """A rollout as the executor enforces it (`reconciler.plan.rollouts.RolloutRules`)."""

    id: str
    canary: tuple[str, ...] = ()
    domains: dict[str, str] = {}
    limits: dict[str, int] = {}
    pause_after: int | None = None


class PlanPolicy(_Value):
    prune: bool
    self_heal: bool
    max_destructive_actions: int


class Plan(_Value):
    """The plan value: waves of actions, a summary, notes, and the hash of it all.

    `content_hash` is the sha256 of the canonical JSON of every other field: the
    same inputs give the same hash, so the executor derives idempotency keys from it.
    """

    format: Literal["reconciler.plan.plan/v1"] = PLAN_FORMAT
    revision: str | None
    policy: PlanPolicy
    waves: tuple[Wave, ...] = ()
    summary: Summary
    notes: tuple[str, ...] = ()
    unknown_providers: tuple[str, ...] = ()
    """Providers whose answer could not be trusted: the plan may be incomplete."""
    rollouts: tuple[RolloutPlan, ...] = ()
    observed_only: tuple[ObservedOnly, ...] = ()
    """Resources only observed and reported (`reconciler.plan.management`), by key."""
    undo: tuple[UndoAction, ...] = ()
    """Actions that revert an earlier change (shown first), by key."""
    content_hash: str = ""

    @property
    def actions(self) -> tuple[PlannedAction, ...]:
        return tuple(a for w in self.waves for a in w.actions)

    @property
    def blocked(self) -> tuple[PlannedAction, ...]:
        return tuple(a for a in self.actions if a.blocked is not None)

    @property
    def in_sync(self) -> bool:
        """Nothing to do, every provider answered, every observed-only resource observed
        as declared."""
        return (
            not self.waves
            and not self.unknown_providers
            and all(o.state == "in-sync" for o in self.observed_only)
        )

    @property
    def exit_code(self) -> int:
        """`reconciler plan`'s exit status: 0 in sync, 2 anything pending or reported."""
        return 0 if self.in_sync else 2

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self, *, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys); `indent` for people, the same content."""
        if indent is None:
            return _canonical(self.to_data())
        return json.dumps(self.to_data(), sort_keys=True, indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Read a plan back; ValueError if its content does not match its hash."""
        plan = cls.model_validate_json(text)
        if plan.content_hash != _hash_of(plan):
            raise ValueError("plan content does not match its content hash")
        return plan

    def rebuilt(self, **update: Any) -> Plan:
        """This plan with some fields replaced (notes, waves…), hashed again."""
        plan = self.model_copy(update=update)
        return plan.model_copy(update={"content_hash": _hash_of(plan)})

    @classmethod
    def build(
        cls,
        *,
        revision: str | None,
        policy: PlanPolicy,
        waves: Iterable[Wave],
        summary: Summary,
        notes: Iterable[str] = (),
        unknown_providers: Iterable[str] = (),
        rollouts: Iterable[RolloutPlan] = (),
        observed_only: Iterable[ObservedOnly] = (),
        undo: Iterable[UndoAction] = (),
    ) -> Plan:
        plan = cls(
            revision=revision,
            policy=policy,
            waves=tuple(waves),
            summary=summary,
            notes=tuple(notes),
            unknown_providers=tuple(sorted(unknown_providers)),
            rollouts=tuple(rollouts),
            observed_only=tuple(observed_only),
            undo=tuple(undo),
        )
        return plan.model_copy(update={"content_hash": _hash_of(plan)})


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _hash_of(plan: Plan) -> str:
    data = plan.to_data()
    data.pop("contentHash", None)
    return hashlib.sha256(_canonical(data).encode()).hexdigest()


# --- planning -------------------------------------------------------------------


def _change(f: FieldDiff) -> Change:
    return Change(
        path=f.path,
        declared=f.declared,
        observed=f.observed,
        cause=f.cause.value,
        absent=f.absent,  # type: ignore[arg-type]
    )


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _describe(f: FieldDiff, revision: str | None) -> str:
    observed = "not observed" if f.absent == "observed" else f"observed {_show(f.observed)}"
    declared = "not declared" if f.absent == "declared" else f"declared {_show(f.declared)}"
    if f.cause is Cause.GIT:
        at = f" at revision {revision}" if revision else ""
        return f"{f.path} changed in Git{at}: {declared}, {observed}"
    return f"{f.path} drifted outside Git: {declared}, {observed}"


def _first_stage(resource: ResolvedResource, path: str) -> int:
    for index, stage in enumerate(resource.stages):
        if any(covers(c, path) for c in stage.converges):
            return index
    return len(resource.stages)


def _declared_at(resource: ResolvedResource, revision: str | None) -> str:
    at = f" at revision {revision}" if revision else ""
    return f"declared in {resource.path}:{resource.line}{at}"


def _destructive_stages(stages: Iterable[ResolvedStage]) -> list[str]:
    return [s.name for s in stages if s.destructive]


def _plan_unprovisioned(
    d: ResourceDiff, resource: ResolvedResource, common: dict[str, Any], revision: str | None
) -> dict[str, Any]:
    """It exists but was never provisioned here: its pipeline runs (or adoption)."""
    if d.adopt:
        if d.status is Status.ADOPTABLE:
            return dict(
                operation=Operation.ADOPT,
                reasons=(
                    f"exists on provider {d.provider} and every converged field is observed "
                    "as declared; adopt is set: taken over without running its pipeline",
                ),
                exists=True,
                **common,
            )
        waits = "adoption waits: " + "; ".join(_describe(f, revision) for f in d.fields)
        return dict(
            operation=Operation.ADOPT,
            reasons=(waits,),
            changes=tuple(_change(f) for f in d.fields),
            blocked=waits,
            exists=True,
            **common,
        )
    names = [s.name for s in resource.stages]
    start = len(d.done) if d.done and len(d.done) < len(names) else 0
    reasons = [
        f"exists on provider {d.provider} but was never provisioned by reconciler (existence "
        f"is not provisioning): its pipeline runs; {_declared_at(resource, revision)}"
    ]
    if start:
        reasons.append(
            f"stages {', '.join(d.done)} completed as declared in an earlier run; "
            f"continues at {names[start]}"
        )
    return dict(
        operation=Operation.CREATE,
        stages=tuple(names[start:]),
        reasons=tuple(reasons),
        changes=tuple(_change(f) for f in d.fields),
        exists=True,
        **common,
    )


def _plan_absent(
    d: ResourceDiff,
    resource: ResolvedResource,
    policy: PolicySpec,
    common: dict[str, Any],
    revision: str | None,
) -> dict[str, Any]:
    """Missing: the whole pipeline. Deleted outside Git after it was provisioned: re-created
    only with selfHeal, and that is destructive (a machine that physically exists is wiped
    by installing it again)."""
    all_stages = tuple(s.name for s in resource.stages)
    if d.status is Status.MISSING:
        return dict(
            operation=Operation.CREATE,
            stages=all_stages,
            reasons=(f"not found by provider {d.provider}; {_declared_at(resource, revision)}",),
            exists=False,
            **common,
        )
    if policy.self_heal:
        return dict(
            operation=Operation.CREATE,
            stages=all_stages,
            reasons=(
                f"{d.reason}; selfHeal is on, re-created (destructive: it was provisioned before)",
            ),
            destructive=True,
            exists=False,
            **common,
        )
    return dict(
        operation=Operation.REPORT_DRIFT,
        reasons=(f"{d.reason}; selfHeal is off, reported only",),
        exists=False,
        **common,
    )


def _plan_orphan(d: ResourceDiff, policy: PolicySpec, common: dict[str, Any]) -> dict[str, Any]:
    why = "owned by reconciler, no longer declared in Git"
    if policy.prune:
        return dict(
            operation=Operation.DECOMMISSION,
            reasons=(f"{why}; prune is on",),
            destructive=True,
            **common,
        )
    return dict(
        operation=Operation.REPORT_ORPHAN, reasons=(f"{why}; prune is off, kept",), **common
    )


def _plan_differences(
    d: ResourceDiff,
    resource: ResolvedResource,
    policy: PolicySpec,
    common: dict[str, Any],
    revision: str | None,
) -> dict[str, Any]:
    """A provisioned resource that differs: changed in Git (fields or stages), or drifted."""
    starts = {f.path: _first_stage(resource, f.path) for f in d.fields}
    names = [s.name for s in resource.stages]
    stage_starts = [names.index(n) for n in d.changed_stages if n in names]
    acting = [f for f in d.fields if f.cause is Cause.GIT or policy.self_heal]
    changes = tuple(_change(f) for f in d.fields)
    if not acting and not stage_starts:
        first = min(starts.values())
        stage = resource.stages[first].name if first < len(resource.stages) else "?"
        harmful = _destructive_stages(resource.stages[first:])
        warning = f", destructive: {', '.join(harmful)}" if harmful else ""
        reasons = (
            *(_describe(f, revision) for f in d.fields),
            f"selfHeal is off: reported only (correcting it would re-run from stage "
            f"{stage}{warning})",
        )
        return dict(operation=Operation.REPORT_DRIFT, reasons=reasons, changes=changes, **common)
    start = min([starts[f.path] for f in acting] + stage_starts)
    stages = resource.stages[start:]
    reasons_list = []
    for f in d.fields:
        text = _describe(f, revision)
        if f.cause is Cause.DRIFT:
            if policy.self_heal:
                text += "; selfHeal is on, corrected"
            elif starts[f.path] >= start:
                text += "; re-converged by the update"
            else:
                text += "; selfHeal is off, reported only"
        where = resource.stages[starts[f.path]].name if starts[f.path] < len(names) else "?"
        reasons_list.append(f"{text} (stage {where})")
    if d.changed_stages:
        at = f" at revision {revision}" if revision else ""
        reasons_list.append(
            f"stage(s) {', '.join(d.changed_stages)} changed in Git{at} (tasks, hooks, or "
            "params they use) since they last completed"
        )
    destructive_stages = _destructive_stages(stages)
    if destructive_stages:
        reasons_list.append(
            f"re-runs destructive stage(s) {', '.join(destructive_stages)} on an existing resource"
        )
    return dict(
        operation=Operation.UPDATE,
        stages=tuple(s.name for s in stages),
        reasons=tuple(reasons_list),
        changes=changes,
        destructive=bool(destructive_stages),
        exists=True,
        **common,
    )


def _plan_resource(
    d: ResourceDiff,
    resource: ResolvedResource | None,
    policy: PolicySpec,
    revision: str | None,
) -> dict[str, Any] | None:
    """The fields of the resource's action (a dict: guardrails and waves are added later)."""
    if d.status is Status.IN_SYNC:
        return None
    common: dict[str, Any] = {"key": d.key, "kind": d.kind, "name": d.name, "provider": d.provider}
    if resource is not None:
        common["depends_on"] = tuple(resource.depends_on)
        common["fingerprint"] = resource.fingerprint()
    if d.status is Status.UNKNOWN:
        return dict(
            operation=Operation.UNKNOWN,
            reasons=(f"observation unknown: {d.reason}",),
            blocked=f"observation unknown: {d.reason}",
            **common,
        )
    if d.status is Status.ORPHANED:
        return _plan_orphan(d, policy, common)
    assert resource is not None
    if d.status in (Status.UNPROVISIONED, Status.ADOPTABLE):
        return _plan_unprovisioned(d, resource, common, revision)
    if not d.exists:
        return _plan_absent(d, resource, policy, common, revision)
    return _plan_differences(d, resource, policy, common, revision)


def _retry_failed(
    draft: dict[str, Any] | None,
    d: ResourceDiff,
    resource: ResolvedResource | None,
    failed_stage: str | None,
) -> dict[str, Any] | None:
    """A resource whose last apply failed at a stage runs again from that stage.

    Its diff alone may not say so: a task failing after the stage's converging
    work (a registration, a notification, a validation) leaves the fields in sync.
    Creates already run everything; drift that is only reported stays reported.
    """
    names = [s.name for s in resource.stages] if resource is not None else []
    if resource is None or failed_stage not in names:
        return draft
    index = names.index(failed_stage)
    reason = f"stage {failed_stage} failed in the last apply: it runs again"
    if draft is None and d.status is Status.IN_SYNC:
        stages = resource.stages[index:]
        harmful = [s.name for s in stages if s.destructive]
        reasons = [reason]
        if harmful:
            reasons.append(
                f"re-runs destructive stage(s) {', '.join(harmful)} on an existing resource"
            )
        return dict(
            key=d.key,
            kind=d.kind,
            name=d.name,
            provider=d.provider,
            depends_on=tuple(resource.depends_on),
            fingerprint=resource.fingerprint(),
            operation=Operation.UPDATE,
            stages=tuple(s.name for s in stages),
            reasons=tuple(reasons),
            destructive=bool(harmful),
        )
    if draft is not None and draft["operation"] is Operation.UPDATE:
        start = min(index, names.index(draft["stages"][0]) if draft["stages"] else index)
        stages = resource.stages[start:]
        return dict(
            draft,
            stages=tuple(s.name for s in stages),
            reasons=(*draft["reasons"], reason),
            destructive=any(s.destructive for s in stages),
        )
    return draft


def _levels(desired: Desired) -> dict[str, int]:
    """Dependency depth of every declared resource (0: depends on nothing declared)."""
    deps = {
        key: [d for d in r.depends_on if d in desired.resources and d != key]
        for key, r in desired.resources.items()
    }
    dependents: dict[str, list[str]] = {key: [] for key in deps}
    waiting = {key: len(v) for key, v in deps.items()}
    for key, v in deps.items():
        for dep in v:
            dependents[dep].append(key)
    level = {key: 0 for key in deps}
    ready = sorted(k for k, n in waiting.items() if n == 0)
    done = 0
    while ready:
        key = ready.pop()
        done += 1
        for child in dependents[key]:
            level[child] = max(level[child], level[key] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if done != len(deps):
        cycle = sorted(k for k, n in waiting.items() if n > 0)
        raise ValueError(f"dependsOn cycle among: {', '.join(cycle)}")
    return level


def _protected(action: Mapping[str, Any], policy: PolicySpec, labels: Mapping[str, str]) -> bool:
    kind, name = action["kind"], action["name"]
    return any(selector_matches(s, kind, name, labels) for s in policy.protected)


def plan(
    desired: Desired,
    changes: Diff,
    *,
    pending_approval: Mapping[str, str] | None = None,
    approved: frozenset[str] = frozenset(),
    unknown_providers: Mapping[str, str] | None = None,
    failed: Mapping[str, str] | None = None,
    phases: Mapping[str, str] | None = None,
    paused: Mapping[str, str] | None = None,
    observed_orphans: Mapping[str, str] | None = None,
) -> Plan:
    """The plan closing the gap a `Diff` shows (see the module docstring).

    `approved` holds keys whose destructive actions a person approved despite
    protection; `pending_approval` maps keys whose actions wait for an approval
    to the reason (`reconciler.plan.approvals.decide` gives both).
    `failed` maps the keys whose last apply failed to the stage that failed: it
    runs again. `phases` are the last statuses' phases, for dependencies this plan
    does not look at (a dependent waits until what it depends on is Ready).
    `observed_orphans` maps resources no longer declared that were observed only at the
    last revision declaring them to why: they are kept, whatever prune says.
    """
    policy = desired.policy
    drafts, labels, notes = _drafts(desired, changes, failed or {})
    drafts, observed = _divert_observed(desired, changes, drafts, observed_orphans or {})
    unknown_providers = dict(unknown_providers or {})
    notes += [
        f"provider {name} is unknown: {why}" for name, why in sorted(unknown_providers.items())
    ]
    unseen = [o.key for o in observed if o.state == "unknown"]
    _guardrails(drafts, policy, labels, pending_approval or {}, approved, unknown_providers, unseen)
    _wait_for_dependencies(drafts, changes, phases or {}, {o.key: o for o in observed})
    rollouts = _rollouts(desired, drafts, paused or {}, notes)
    waves = _waves(desired, drafts)
    actions = [a for w in waves for a in w.actions]
    planned = {a.key for a in actions} | {o.key for o in observed}
    return Plan.build(
        revision=desired.revision,
        policy=PlanPolicy(
            prune=policy.prune,
            self_heal=policy.self_heal,
            max_destructive_actions=policy.max_destructive_actions,
        ),
        waves=waves,
        summary=summarize(
            actions,
            in_sync=sum(1 for d in changes.with_status(Status.IN_SYNC) if d.key not in planned),
            observed_only=len(observed),
        ),
        notes=notes,
        unknown_providers=unknown_providers,
        rollouts=rollouts,
        observed_only=observed,
    )


_ROLLOUT_OPERATIONS = {Operation.UPDATE: "update", Operation.CREATE: "create"}


def _rollouts(
    desired: Desired, drafts: list[dict[str, Any]], paused: Mapping[str, str], notes: list[str]
) -> list[RolloutPlan]:
    """Rollout batches of the runnable updates (and creates when asked); a paused
    rollout's actions are held back, saying how to resume it."""
    covered = [
        (a["key"], _ROLLOUT_OPERATIONS[a["operation"]])
        for a in drafts
        if a["operation"] in _ROLLOUT_OPERATIONS and not a.get("blocked")
    ]
    if not covered or (
        desired.policy.rollout is None
        and not any(p.spec.rollout for p in desired.pipelines.values())
    ):
        return []
    rules, batches = plan_rollouts(desired, covered)
    for a in drafts:
        if a["key"] not in batches:
            continue
        a["rollout"], a["batch"] = batches[a["key"]]
        why = paused.get(a["rollout"])
        if why is not None:
            a["blocked"] = (
                f"rollout {a['rollout']} is paused: {why} (resume: change rollout.resume in "
                f"Git, or POST /api/v1/rollouts/{a['rollout']}/resume)"
            )
    for rollout_id, rule in rules.items():
        spec = rollout_spec(desired, rollout_id)
        if spec is not None:
            notes.append(describe(rule, spec))
    return [
        RolloutPlan(
            id=r.id,
            canary=tuple(sorted(r.canary)),
            domains=dict(r.domains),
            limits=dict(r.limits),
            pause_after=r.pause_after,
        )
        for r in rules.values()
    ]


def _divert_observed(
    desired: Desired,
    changes: Diff,
    drafts: list[dict[str, Any]],
    orphans: Mapping[str, str],
) -> tuple[list[dict[str, Any]], list[ObservedOnly]]:
    """The drafts of managed resources, and every observed-only resource's entry (what a
    managed one would get is kept in it; nothing of it runs)."""
    by_key = {a["key"]: a for a in drafts}
    observed: list[ObservedOnly] = []
    for key, d in changes.resources.items():
        resource = desired.resources.get(key)
        why = observe_only(resource, desired.policy) if resource else orphans.get(key)
        if why is None:
            continue
        draft = by_key.pop(key, None)
        state = observed_state(d)
        if state == "differs":
            reasons = tuple(_describe(f, desired.revision) for f in d.fields)
        elif state == "orphaned":
            reasons = (
                "no longer declared in Git; observed only at the last revision declaring it: "
                "kept, whatever prune says",
            )
        elif state == "in-sync":
            reasons = ("every converged field is observed as declared",)
        else:
            reasons = (d.reason,)
        executes = draft is not None and draft["operation"].executes
        observed.append(
            ObservedOnly(
                key=key,
                kind=d.kind,
                name=d.name,
                provider=d.provider,
                why=why,
                state=state,
                reasons=reasons,
                changes=tuple(_change(f) for f in d.fields),
                would=draft["operation"] if executes and draft is not None else None,
                stages=tuple(draft.get("stages", ())) if executes and draft is not None else (),
                destructive=bool(executes and draft is not None and draft.get("destructive")),
            )
        )
    return list(by_key.values()), observed


def _drafts(
    desired: Desired, changes: Diff, failed: Mapping[str, str]
) -> tuple[list[dict[str, Any]], dict[str, Mapping[str, str]], list[str]]:
    """Each resource's action (a dict), its labels, and the plan's notes."""
    drafts: list[dict[str, Any]] = []
    labels: dict[str, Mapping[str, str]] = {}
    notes: list[str] = []
    for key, d in changes.resources.items():
        labels[key] = d.labels
        resource = desired.resources.get(key)
        draft = _plan_resource(d, resource, desired.policy, desired.revision)
        draft = _retry_failed(draft, d, resource, failed.get(key))
        if draft is not None:
            drafts.append(draft)
        if d.unconverged:
            notes.append(
                f"{key}: {', '.join(d.unconverged)} changed in Git but no stage converges "
                "or uses it; nothing runs for it"
            )
    return drafts, labels, notes


def _guardrails(
    drafts: list[dict[str, Any]],
    policy: PolicySpec,
    labels: Mapping[str, Mapping[str, str]],
    waiting: Mapping[str, str],
    approved: frozenset[str],
    unknown_providers: Mapping[str, str],
    unseen: Iterable[str] = (),
) -> None:
    """In order: approvals, protection, unknown observation (observed-only resources'
    too: `unseen`), the destructive budget."""
    unknown = sorted([*(a["key"] for a in drafts if a["operation"] is Operation.UNKNOWN), *unseen])
    for a in drafts:
        if a["key"] in waiting and a["operation"].executes and a.get("blocked") is None:
            a["blocked"] = waiting[a["key"]]
        if a.get("destructive") and a.get("blocked") is None:
            if _protected(a, policy, labels.get(a["key"], {})) and a["key"] not in approved:
                a["blocked"] = "protected by policy; not approved"
            elif unknown or unknown_providers:
                what = ", ".join(unknown[:3] or sorted(unknown_providers)[:3])
                more = len(unknown) + len(unknown_providers) - 3
                what += f" and {more} more" if more > 0 else ""
                a["blocked"] = f"observation unknown ({what}): destructive refused"
    destructive = [a for a in drafts if a.get("destructive") and a.get("blocked") is None]
    if len(destructive) > policy.max_destructive_actions:
        why = (
            f"plan has {len(destructive)} destructive actions, "
            f"policy allows {policy.max_destructive_actions}"
        )
        for a in destructive:
            a["blocked"] = why


def _wait_for_dependencies(
    drafts: list[dict[str, Any]],
    changes: Diff,
    phases: Mapping[str, str],
    observed: Mapping[str, ObservedOnly],
) -> None:
    """A dependent never starts while what it depends on is not Ready: failed before,
    held in backoff, blocked, unknown, drifted, or not looked at by this plan and not
    Ready when last seen. One whose dependency runs in this plan waits for it in the
    executor instead (it starts once the dependency succeeded). One observed only is
    Ready when it is observed as declared."""
    by_key = {a["key"]: a for a in drafts}

    def why_not_ready(dep: str) -> str | None:
        if dep in observed:  # nothing will make it so: it must be observed as declared
            state = observed[dep].state
            return None if state == "in-sync" else f"it is observed only, and {state}"
        action = by_key.get(dep)
        if action is not None:
            if action.get("blocked"):
                return f"its {action['operation'].value} is blocked: {action['blocked']}"
            if action["operation"].executes:
                return None
            return f"it is not in sync ({action['operation'].value})"
        found = changes.resources.get(dep)
        if found is not None:
            return None if found.status is Status.IN_SYNC else f"it is {found.status.value}"
        phase = phases.get(dep)
        return None if phase == "Ready" else f"its phase is {phase or 'unknown (no status yet)'}"

    changed = True
    while changed:  # a chain of dependents: each pass blocks the next link
        changed = False
        for a in drafts:
            if a.get("blocked") or not a["operation"].executes:
                continue
            for dep in a.get("depends_on", ()):
                why = why_not_ready(dep)
                if why is not None:
                    a["blocked"] = f"dependency {dep} is not Ready: {why}"
                    changed = True
                    break


def _waves(desired: Desired, drafts: list[dict[str, Any]]) -> list[Wave]:
    """Dependency depth gives waves; decommissions come after everything else."""
    levels = _levels(desired)
    last_level = max(levels.values(), default=0) + 1
    level_of = {a["key"]: levels.get(a["key"], last_level) for a in drafts}
    numbers = {lvl: n for n, lvl in enumerate(sorted(set(level_of.values())), start=1)}
    by_wave: dict[int, list[PlannedAction]] = {}
    for a in sorted(drafts, key=lambda a: a["key"]):
        wave = numbers[level_of[a["key"]]]
        by_wave.setdefault(wave, []).append(PlannedAction(**a, wave=wave))
    return [Wave(number=n, actions=tuple(acts)) for n, acts in sorted(by_wave.items())]


def summarize(
    actions: Iterable[PlannedAction], *, in_sync: int = 0, observed_only: int = 0
) -> Summary:
    counts = dict.fromkeys(Summary.model_fields, 0)
    counts["in_sync"] = in_sync
    counts["observed_only"] = observed_only
    names = {
        Operation.CREATE: "create",
        Operation.UPDATE: "update",
        Operation.ADOPT: "adopt",
        Operation.DECOMMISSION: "destroy",
        Operation.REPORT_DRIFT: "drifted",
        Operation.REPORT_ORPHAN: "orphaned",
        Operation.UNKNOWN: "unknown",
    }
    for a in actions:
        if a.blocked is not None:
            counts["blocked"] += 1
            if a.operation is Operation.UNKNOWN:
                counts["unknown"] += 1
            continue
        counts[names[a.operation]] += 1
        counts["destructive"] += int(a.destructive)
    return Summary(**counts)


def relative_to(head: Plan, base: Plan) -> Plan:
    """Only what `head` (a branch) adds to `base`: actions not identical in the base plan.

    For `reconciler plan --base REF`: both plans are computed against the same
    observation; an action present in both with the same operation, stages,
    changes and declared fingerprint is already pending without the branch (a
    pending create the branch declares differently is kept).
    """

    def signature(a: PlannedAction) -> tuple[Any, ...]:
        return (a.operation, a.stages, a.changes, a.blocked, a.fingerprint)

    before = {a.key: signature(a) for a in base.actions}
    waves = []
    kept: list[PlannedAction] = []
    for w in head.waves:
        actions = tuple(a for a in w.actions if before.get(a.key) != signature(a))
        if actions:
            waves.append(Wave(number=w.number, actions=actions))
            kept.extend(actions)
    return Plan.build(
        revision=head.revision,
        policy=head.policy,
        waves=waves,
        summary=summarize(
            kept, in_sync=head.summary.in_sync, observed_only=head.summary.observed_only
        ),
        notes=(*head.notes, f"relative to base revision {base.revision}"),
        unknown_providers=head.unknown_providers,
        observed_only=head.observed_only,
        undo=tuple(u for u in head.undo if u.key in {a.key for a in kept}),
    )
