"""Status transitions: a cycle's diff, plan and execution -> each resource's next status.

Pure (time is passed in). Sits between execute and report: it decides which
conditions each resource carries after this cycle, what counts as last applied
(so the next diff can tell a change in Git from drift), what the drift report
lists, and which audit records the cycle adds.

What happened this cycle -> phase; conditions:

- in sync, or its action succeeded -> Ready; Ready=True Reconciled
- its action failed -> Failed; Ready=False, Failed=True TaskFailed
- skipped, a dependency did not succeed -> Stalled; Stalled=True DependencyNotReady
- skipped, outside a change window or stopped -> Provisioning; Reconciling=True
- blocked by policy (guardrail, approval) -> Stalled; Stalled=True BlockedByPolicy
- drift with selfHeal off (reported only) -> Drifted; Drifted=True DriftDetected
- observation unknown -> Unknown; Ready=Unknown ObservationFailed
- planned but not executed (`plan`, a dry run) -> Pending; Reconciling=True Pending
- observed only (`reconciler.plan.management`), never Reconciling: observed as declared ->
  Ready; Ready=True Observed; it differs or is missing -> Drifted; Ready=False,
  Drifted=True DriftDetected (listed in the drift report, never corrected)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from reconciler.execute.results import ExecutionResult, ResourceOutcome
from reconciler.load.desired import Desired, ResolvedResource
from reconciler.model.kinds import FailureBackoff
from reconciler.model.status import (
    Condition,
    ConditionType,
    Failure,
    LastAppliedStatus,
    ResourceStatus,
    remove_condition,
    set_condition,
)
from reconciler.observe.values import Observation, ObservedState
from reconciler.plan.diff import Diff, LastApplied, ResourceDiff, Status
from reconciler.plan.plan import ObservedOnly, Operation, Plan, PlannedAction
from reconciler.report.provenance import Provenance
from reconciler.report.report import AuditRecord, DriftEntry

if TYPE_CHECKING:
    from reconciler.source.declared import SourceResult

_TRANSIENT: tuple[ConditionType, ...] = ("Reconciling", "Drifted", "Stalled", "Failed")


def _conditions(
    previous: tuple[Condition, ...],
    now: datetime,
    ready: tuple[str, str, str],
    extra: tuple[ConditionType, str, str] | None = None,
) -> tuple[Condition, ...]:
    """Ready as given, one optional other condition True, every other transient removed."""
    conditions = previous
    for kind in _TRANSIENT:
        if extra is None or extra[0] != kind:
            conditions = remove_condition(conditions, kind)
    status, reason, message = ready
    conditions = set_condition(conditions, "Ready", status, reason, message, now)  # type: ignore[arg-type]
    if extra is not None:
        conditions = set_condition(conditions, extra[0], "True", extra[1], extra[2], now)
    return conditions


def _drift_fields(found: ResourceDiff) -> tuple[dict[str, Any], ...]:
    """A diff's differing fields as the drift report lists them (values already redacted)."""
    return tuple(
        {"path": f.path, "declared": f.declared, "observed": f.observed} for f in found.fields
    )


def _in_sync(revision: str | None) -> str:
    # The same words whether this cycle applied it or found it so: no commit for nothing.
    return f"in sync with revision {(revision or 'unknown')[:12]}"


def _observed(observed: ObservedState | None, key: str, fallback: dict[str, Any]) -> dict[str, Any]:
    if observed is None:
        return fallback
    found = observed.observations.get(key)
    if isinstance(found, Observation):
        return dict(found.fields) if found.exists else {}
    return fallback


def backoff_delay(backoff: FailureBackoff, attempts: int) -> float:
    """Seconds scheduled cycles wait after the `attempts`-th failure in a row."""
    return float(min(backoff.maximum, backoff.initial * 2 ** min(attempts - 1, 32)))


@dataclass(frozen=True)
class _Seen:
    """What this cycle knows of one declared resource (the inputs of its next status)."""

    resource: ResolvedResource
    before: ResourceStatus
    found: ResourceDiff | None
    action: PlannedAction | None
    outcome: ResourceOutcome | None
    observed: dict[str, Any]
    record: LastApplied | None
    watched: ObservedOnly | None = None
    """Its entry in the plan's observed-only list: nothing is done to it."""


def next_statuses(
    *,
    desired: Desired,
    previous: Mapping[str, ResourceStatus],
    diff: Diff,
    plan: Plan,
    execution: ExecutionResult | None,
    observed: ObservedState | None,
    now: datetime,
    resumed: ExecutionResult | None = None,
    records: Mapping[str, LastApplied] | None = None,
) -> tuple[dict[str, ResourceStatus], list[DriftEntry]]:
    """Every declared resource's status after this cycle, and the drift to report.

    `resumed` is a plan interrupted by a crash and finished at the start of this
    cycle: its outcome counts for a resource this cycle's plan has nothing more to
    do for (what it brought about is in sync now; it says which stages ran).
    `records` are the journal's records after this cycle (`lastApplied` shows them).
    """
    actions: dict[str, PlannedAction] = {a.key: a for a in plan.actions}
    watched = {o.key: o for o in plan.observed_only}
    outcomes: dict[str, ResourceOutcome] = {
        key: outcome
        for key, outcome in (resumed.outcomes if resumed else {}).items()
        if key not in actions and outcome.result != "skipped"
    }
    outcomes.update(execution.outcomes if execution else {})
    records = records or {}
    statuses: dict[str, ResourceStatus] = {}
    drift: list[DriftEntry] = []
    for key, resource in desired.resources.items():
        before = previous.get(key) or ResourceStatus(kind=resource.kind, name=resource.name)
        seen = _Seen(
            resource,
            before,
            diff.resources.get(key),
            actions.get(key),
            outcomes.get(key),
            _observed(observed, key, dict(before.observed)),
            records.get(key),
            watched.get(key),
        )
        update = _status_update(seen, desired, plan.revision, now)
        update["last_applied"] = _projection(records.get(key)) or before.last_applied
        statuses[key] = before.model_copy(update=update)
        drift.extend(_drift_entries(seen, statuses[key], now))
    drift.extend(_orphan_entries(diff, actions, outcomes, watched))
    return statuses, drift


def _status_update(
    seen: _Seen, desired: Desired, revision: str | None, now: datetime
) -> dict[str, Any]:
    """The fields of the resource's status that this cycle changes (see module docstring)."""
    update: dict[str, Any] = {"observed": seen.observed, "failure": None}
    outcome, action, found = seen.outcome, seen.action, seen.found
    conditions = seen.before.conditions
    if seen.watched is not None and seen.watched.state != "unknown":
        return {**update, **_observed_only(seen, now)}
    if outcome is not None and outcome.result == "succeeded":
        return {**update, **_succeeded(seen, revision, now)}
    if outcome is not None and outcome.result == "failed":
        return {**update, **_failed(seen, desired, now)}
    if outcome is not None and outcome.result == "skipped":
        return {**update, **_skipped(outcome, conditions, now)}
    if found is not None and found.status is Status.UNKNOWN:
        # The provider's own words (a BMC's 401 stays a 401), never a policy reason.
        return {
            **update,
            "phase": "Unknown",
            "observed": dict(seen.before.observed),
            "conditions": _conditions(
                conditions, now, ("Unknown", "ObservationFailed", found.reason)
            ),
        }
    if action is not None and action.blocked:
        reason = "AdoptionWaiting" if action.operation is Operation.ADOPT else "BlockedByPolicy"
        if action.blocked.startswith("dependency"):
            reason = "DependencyNotReady"
        return {
            **update,
            "phase": "Stalled",
            "conditions": _conditions(
                conditions,
                now,
                ("False", reason, action.blocked),
                ("Stalled", reason, action.blocked),
            ),
        }
    if (
        found is not None
        and found.status is Status.DRIFTED
        and (action is None or action.operation is Operation.REPORT_DRIFT)
    ):
        fields = _drift_fields(found)
        shown = ", ".join(f["path"] for f in fields) or found.reason
        message = f"differs from Git outside Git: {shown}"
        return {**update, **_drifted(seen, now, message)}
    if action is not None and action.runnable:
        message = f"{action.operation.value} planned: {'; '.join(action.reasons) or 'pending'}"
        return {
            **update,
            "phase": "Pending",
            "conditions": _conditions(
                conditions, now, ("False", "Pending", message), ("Reconciling", "Pending", message)
            ),
        }
    # In sync: the diff says so only for a resource whose pipeline completed. The words
    # name the revision it was applied at, so a cycle at a new head writes nothing new.
    applied = seen.record.revision if seen.record and seen.record.revision else revision
    return {
        **update,
        "phase": "Ready",
        "drifted_since": None,
        "conditions": _conditions(conditions, now, ("True", "Reconciled", _in_sync(applied))),
    }


def _observed_only(seen: _Seen, now: datetime) -> dict[str, Any]:
    """An observed-only resource: Ready when observed as declared, else Drifted."""
    watched = seen.watched
    assert watched is not None
    conditions = seen.before.conditions
    if watched.state == "in-sync":
        message = f"observed as declared; observe only ({watched.why}): never acted on"
        return {
            "phase": "Ready",
            "drifted_since": None,
            "conditions": _conditions(conditions, now, ("True", "Observed", message)),
        }
    shown = ", ".join(c.path for c in watched.changes) or "; ".join(watched.reasons)
    message = f"differs from Git: {shown}; observe only ({watched.why}): never corrected"
    return _drifted(seen, now, message)


def _drifted(seen: _Seen, now: datetime, message: str) -> dict[str, Any]:
    """Drifted since it was first seen differing: Ready False and Drifted, both saying how."""
    return {
        "phase": "Drifted",
        "drifted_since": seen.before.drifted_since or now,
        "conditions": _conditions(
            seen.before.conditions,
            now,
            ("False", "DriftDetected", message),
            ("Drifted", "DriftDetected", message),
        ),
    }


def _succeeded(seen: _Seen, revision: str | None, now: datetime) -> dict[str, Any]:
    outcome = seen.outcome
    assert outcome is not None
    message = _in_sync(revision)
    if outcome.operation == Operation.ADOPT.value:
        message = f"adopted at revision {(revision or 'unknown')[:12]}: observed as declared"
    stages = outcome.stages_done
    return {
        "phase": "Ready",
        "stage_reached": stages[-1] if stages else seen.before.stage_reached,
        "drifted_since": None,
        "conditions": _conditions(seen.before.conditions, now, ("True", "Reconciled", message)),
    }


def _failed(seen: _Seen, desired: Desired, now: datetime) -> dict[str, Any]:
    outcome, before = seen.outcome, seen.before
    assert outcome is not None
    resolution = seen.resource.resolution()
    last = before.failure if before.phase == "Failed" else None
    # The same thing failing again waits longer; something new in Git starts over.
    attempts = last.attempts + 1 if last and last.resolution == resolution else 1
    delay = backoff_delay(desired.policy.failure_backoff, attempts)
    retry_at = now + timedelta(seconds=delay)
    message = (
        f"stage {outcome.failed_stage}, task {outcome.failed_task}: {outcome.error} "
        f"(failed {attempts} time{'s' if attempts > 1 else ''} in a row; scheduled "
        f"cycles try again from {retry_at:%Y-%m-%dT%H:%M:%SZ}, a change in Git or a "
        "sync at once)"
    )
    return {
        "phase": "Failed",
        "stage_reached": outcome.stages_done[-1] if outcome.stages_done else before.stage_reached,
        "failure": Failure(
            stage=outcome.failed_stage or "?",
            task=outcome.failed_task or "?",
            error=outcome.error or "",
            log=outcome.log,
            attempts=attempts,
            retry_at=retry_at,
            resolution=resolution,
        ),
        "conditions": _conditions(
            before.conditions,
            now,
            ("False", "TaskFailed", message),
            ("Failed", "TaskFailed", message),
        ),
    }


def _skipped(
    outcome: ResourceOutcome, conditions: tuple[Condition, ...], now: datetime
) -> dict[str, Any]:
    if outcome.reason.startswith("dependency"):
        extra: tuple[ConditionType, str, str] = ("Stalled", "DependencyNotReady", outcome.reason)
        phase = "Stalled"
    else:
        reason = "ChangeWindowClosed" if "change window" in outcome.reason else "Interrupted"
        extra = ("Reconciling", reason, outcome.reason)
        phase = "Provisioning"
    return {
        "phase": phase,
        "conditions": _conditions(conditions, now, ("False", extra[1], outcome.reason), extra),
    }


def _drift_entries(seen: _Seen, status: ResourceStatus, now: datetime) -> list[DriftEntry]:
    found, outcome = seen.found, seen.outcome
    if found is not None and seen.watched is not None and status.phase == "Drifted":
        return [
            DriftEntry(
                key=found.key,
                since=status.drifted_since,
                corrected=False,
                reason=f"observe only ({seen.watched.why}): "
                + (found.reason or "differs from Git"),
                fields=_drift_fields(found),
            )
        ]
    if found is None or found.status is not Status.DRIFTED:
        return []
    if outcome is None and status.phase != "Drifted":
        return []
    return [
        DriftEntry(
            key=found.key,
            since=status.drifted_since if outcome is None else seen.before.drifted_since or now,
            corrected=outcome is not None and outcome.result == "succeeded",
            reason=found.reason,
            fields=_drift_fields(found),
        )
    ]


def _orphan_entries(
    diff: Diff,
    actions: Mapping[str, PlannedAction],
    outcomes: Mapping[str, ResourceOutcome],
    watched: Mapping[str, ObservedOnly],
) -> list[DriftEntry]:
    entries = []
    for key, found in diff.resources.items():
        if found.status is not Status.ORPHANED:
            continue
        action, outcome = actions.get(key), outcomes.get(key)
        corrected = outcome is not None and outcome.result == "succeeded"
        kept = "" if corrected or (action is not None and action.runnable) else " (prune is off)"
        if key in watched:
            kept = f" (kept: {watched[key].why})"
        entries.append(
            DriftEntry(
                key=key,
                since=None,
                corrected=corrected,
                reason="orphaned: " + (found.reason or "no longer declared") + kept,
            )
        )
    return entries


def _projection(record: LastApplied | None) -> LastAppliedStatus | None:
    """The journal's record as the status file shows it."""
    if record is None:
        return None
    return LastAppliedStatus(
        revision=record.revision,
        resolution=record.resolution,
        fingerprint=record.fingerprint or None,
        stages_done=tuple(record.stages),
        stages=dict(record.stages),
        adopted=record.adopted,
        declared=dict(record.declared) if record.declared is not None else None,
    )


def refreshed_records(
    desired: Desired, diff: Diff, records: Mapping[str, LastApplied]
) -> dict[str, LastApplied]:
    """Records to write for provisioned resources found in sync at another resolution
    than recorded: what Git changed for them needed no work (a declared field already
    observed as declared, a change no stage converges), so what is applied is current."""
    out: dict[str, LastApplied] = {}
    for key, found in diff.resources.items():
        record, resource = records.get(key), desired.resources.get(key)
        if found.status is not Status.IN_SYNC or record is None or resource is None:
            continue
        if not record.provisioned or record.resolution == resource.resolution():
            continue
        out[key] = LastApplied(
            fingerprint=resource.fingerprint(),
            declared=resource.declared(),
            revision=desired.revision,
            resolution=resource.resolution(),
            stages=resource.stage_digests(),
            adopted=record.adopted,
        )
    return out


def audit_records(
    execution: ExecutionResult | None,
    *,
    revision: str | None,
    provenance: Mapping[str, Provenance] | None = None,
) -> list[AuditRecord]:
    """One record per task the execution ran: the audit trail of this cycle.

    `provenance` by resource key: who asked for its change, who merged and who approved
    it (`reconciler.report.provenance`, found by `reconciler.source.history`). Times are the
    task's own (the journal's, also for a result a resumed plan took from it).
    """
    if execution is None:
        return []
    records = []
    for outcome in execution.outcomes.values():
        asked = (provenance or {}).get(outcome.key) or Provenance()
        for task in outcome.tasks:
            records.append(
                AuditRecord(
                    revision=revision,
                    author=asked.author,
                    plan_hash=execution.plan_hash,
                    resource=outcome.key,
                    operation=outcome.operation,
                    stage=task.stage,
                    task=f"{task.point}/{task.task}",
                    result=task.result,
                    started=task.started,
                    finished=task.finished,
                    message=task.message,
                    operation_id=task.operation_id,
                    approvers=asked.approvers,
                    execution=execution.execution_id,
                    change=asked.commit,
                    committer=asked.committer,
                    merge=asked.merge,
                    approvals=asked.approvals,
                )
            )
    return records


def observation_records(
    plan: Plan,
    previous: Mapping[str, ResourceStatus],
    statuses: Mapping[str, ResourceStatus],
    *,
    revision: str | None,
    now: datetime,
) -> list[AuditRecord]:
    """The audit of observed-only resources: one record when what is observed of one
    changes (first observed, became in sync, started to differ, differs otherwise), none
    while it stays as it was — so a cycle that finds nothing new commits nothing."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    records = []
    for entry in plan.observed_only:
        after, before = statuses.get(entry.key), previous.get(entry.key)
        if after is None:  # no longer declared: nothing of it is reported but the drift entry
            continue
        ready = after.condition("Drifted") or after.condition("Ready")
        message = ready.message if ready is not None else entry.state
        earlier = (before.condition("Drifted") or before.condition("Ready")) if before else None
        unchanged = before is not None and before.phase == after.phase
        if unchanged and earlier is not None and earlier.message == message:
            continue
        records.append(
            AuditRecord(
                revision=revision,
                author=None,
                plan_hash=plan.content_hash,
                resource=entry.key,
                operation="observe",
                stage=None,
                task=None,
                result=entry.state,
                started=stamp,
                finished=stamp,
                message=message,
            )
        )
    return records


def unreported(records: list[AuditRecord], reported: Collection[str]) -> list[AuditRecord]:
    """`records` without those of executions the status branch already holds (`reported`:
    execution ids): a plan resumed after a crash between its status push and the
    journal's finish is reported once."""
    return [r for r in records if r.execution is None or r.execution not in reported]


def controller_conditions(
    source: SourceResult, *, previous_conditions: tuple[Condition, ...], now: datetime
) -> tuple[Condition, ...]:
    """The source's conditions: which revision is in force, and why it may be stale."""
    conditions = previous_conditions
    if source.revision is None:
        message = source.stale.message if source.stale else "no revision loaded yet"
        reason = source.stale.reason if source.stale else "NoRevision"
        conditions = set_condition(conditions, "Ready", "False", reason, message, now)
        return set_condition(conditions, "Stalled", "True", reason, message, now)
    conditions = remove_condition(conditions, "Stalled")
    if source.stale is not None:
        message = f"{source.stale.message}; revision {source.revision.sha[:12]} stays in force"
        return set_condition(conditions, "Ready", "False", source.stale.reason, message, now)
    message = f"revision {source.revision.sha[:12]} in force"
    if source.force_pushed:
        message += " (the branch was rewritten: force-push followed)"
    return set_condition(conditions, "Ready", "True", "RevisionLoaded", message, now)


# --- what the last statuses tell the next plan -------------------------------------


def records_from_statuses(statuses: Mapping[str, ResourceStatus]) -> dict[str, LastApplied]:
    """The records the status branch shows (`lastApplied`): what a plan made without the
    journal reads (CI), and what a controller falls back on for a resource its journal
    has no record of (a new state directory)."""
    out: dict[str, LastApplied] = {}
    for key, status in statuses.items():
        shown = status.last_applied
        if shown is None:
            continue
        out[key] = LastApplied(
            fingerprint=shown.fingerprint or "",
            declared=shown.declared,
            revision=shown.revision,
            resolution=shown.resolution,
            stages=dict(shown.stages),
            adopted=shown.adopted,
        )
    return out


def failed_stages(statuses: Mapping[str, ResourceStatus]) -> dict[str, str]:
    """The stage each resource's last apply failed at (it runs again next time)."""
    return {
        key: s.failure.stage
        for key, s in statuses.items()
        if s.phase == "Failed" and s.failure is not None
    }
