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
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from reconciler.desired import Desired
from reconciler.diff import Diff, LastApplied, ResourceDiff, Status
from reconciler.execute.engine import ExecutionResult, ResourceOutcome
from reconciler.model.kinds import FailureBackoff
from reconciler.observe import ObservedState
from reconciler.plan import Operation, Plan, PlannedAction
from reconciler.providers.base import Observation
from reconciler.report import AuditRecord, DriftEntry
from reconciler.secrets import REDACTOR
from reconciler.source import SourceResult
from reconciler.status import (
    Condition,
    ConditionType,
    Failure,
    ResourceStatus,
    remove_condition,
    set_condition,
)

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
        return REDACTOR.data(dict(found.fields)) if found.exists else {}
    return fallback


def backoff_delay(backoff: FailureBackoff, attempts: int) -> float:
    """Seconds scheduled cycles wait after the `attempts`-th failure in a row."""
    return float(min(backoff.maximum, backoff.initial * 2 ** min(attempts - 1, 32)))


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
) -> tuple[dict[str, ResourceStatus], list[DriftEntry]]:
    """Every declared resource's status after this cycle, and the drift to report.

    `resumed` is a plan interrupted by a crash and finished at the start of this
    cycle: its outcome counts for a resource this cycle's plan has nothing more to
    do for (what it brought about is in sync now; it says which stages ran).
    """
    actions: dict[str, PlannedAction] = {a.key: a for a in plan.actions}
    outcomes: dict[str, ResourceOutcome] = {
        key: outcome
        for key, outcome in (resumed.outcomes if resumed else {}).items()
        if key not in actions and outcome.result != "skipped"
    }
    outcomes.update(execution.outcomes if execution else {})
    statuses: dict[str, ResourceStatus] = {}
    drift: list[DriftEntry] = []
    revision = plan.revision
    for key, resource in desired.resources.items():
        before = previous.get(key) or ResourceStatus(kind=resource.kind, name=resource.name)
        found = diff.resources.get(key)
        action = actions.get(key)
        outcome = outcomes.get(key)
        observed_fields = _observed(observed, key, dict(before.observed))
        update: dict[str, Any] = {"observed": observed_fields, "failure": None}
        conditions = before.conditions
        if outcome is not None and outcome.result == "succeeded":
            stages = outcome.stages_done
            update.update(
                phase="Ready",
                stage_reached=stages[-1] if stages else before.stage_reached,
                stages_done=tuple(s.name for s in resource.stages),
                last_applied_revision=revision,
                last_applied_fingerprint=action.fingerprint
                if action and action.fingerprint
                else resource.fingerprint(),
                last_applied_declared=resource.declared(),
                drifted_since=None,
                conditions=_conditions(
                    conditions,
                    now,
                    ("True", "Reconciled", _in_sync(revision)),
                ),
            )
        elif outcome is not None and outcome.result == "failed":
            resolution = resource.resolution()
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
            update.update(
                phase="Failed",
                stage_reached=outcome.stages_done[-1]
                if outcome.stages_done
                else before.stage_reached,
                failure=Failure(
                    stage=outcome.failed_stage or "?",
                    task=outcome.failed_task or "?",
                    error=outcome.error or "",
                    log=outcome.log,
                    attempts=attempts,
                    retry_at=retry_at,
                    resolution=resolution,
                ),
                conditions=_conditions(
                    conditions,
                    now,
                    ("False", "TaskFailed", message),
                    ("Failed", "TaskFailed", message),
                ),
            )
        elif outcome is not None and outcome.result == "skipped":
            if outcome.reason.startswith("dependency"):
                extra: tuple[ConditionType, str, str] = (
                    "Stalled",
                    "DependencyNotReady",
                    outcome.reason,
                )
                phase = "Stalled"
            else:
                reason = (
                    "ChangeWindowClosed" if "change window" in outcome.reason else "Interrupted"
                )
                extra = ("Reconciling", reason, outcome.reason)
                phase = "Provisioning"
            update.update(
                phase=phase,
                conditions=_conditions(conditions, now, ("False", extra[1], outcome.reason), extra),
            )
        elif action is not None and action.blocked:
            update.update(
                phase="Stalled",
                conditions=_conditions(
                    conditions,
                    now,
                    ("False", "BlockedByPolicy", action.blocked),
                    ("Stalled", "BlockedByPolicy", action.blocked),
                ),
            )
        elif found is not None and found.status is Status.UNKNOWN:
            update.update(
                phase="Unknown",
                observed=dict(before.observed),
                conditions=_conditions(
                    conditions, now, ("Unknown", "ObservationFailed", found.reason)
                ),
            )
        elif (
            found is not None
            and found.status is Status.DRIFTED
            and (action is None or action.operation is Operation.REPORT_DRIFT)
        ):
            fields = _drift_fields(found)
            shown = ", ".join(f["path"] for f in fields) or found.reason
            message = f"differs from Git outside Git: {shown}"
            since = before.drifted_since or now
            update.update(
                phase="Drifted",
                drifted_since=since,
                conditions=_conditions(
                    conditions,
                    now,
                    ("False", "DriftDetected", message),
                    ("Drifted", "DriftDetected", message),
                ),
            )
            drift.append(
                DriftEntry(
                    key=key, since=since, corrected=False, reason=found.reason, fields=fields
                )
            )
        elif action is not None and action.runnable:
            message = f"{action.operation.value} planned: {'; '.join(action.reasons) or 'pending'}"
            update.update(
                phase="Pending",
                conditions=_conditions(
                    conditions,
                    now,
                    ("False", "Pending", message),
                    ("Reconciling", "Pending", message),
                ),
            )
        else:
            # In sync: the declared state is what exists, so it counts as applied.
            applied = before.last_applied_revision or revision
            update.update(
                phase="Ready",
                drifted_since=None,
                last_applied_revision=applied,
                last_applied_fingerprint=resource.fingerprint(),
                last_applied_declared=resource.declared(),
                conditions=_conditions(conditions, now, ("True", "Reconciled", _in_sync(applied))),
            )
        if found is not None and found.status is Status.DRIFTED and outcome is not None:
            fields = _drift_fields(found)
            drift.append(
                DriftEntry(
                    key=key,
                    since=before.drifted_since or now,
                    corrected=outcome.result == "succeeded",
                    reason=found.reason,
                    fields=fields,
                )
            )
        statuses[key] = before.model_copy(update=update)
    for key, found in diff.resources.items():
        if found.status is Status.ORPHANED:
            action = actions.get(key)
            outcome = outcomes.get(key)
            corrected = outcome is not None and outcome.result == "succeeded"
            drift.append(
                DriftEntry(
                    key=key,
                    since=None,
                    corrected=corrected,
                    reason="orphaned: "
                    + (found.reason or "no longer declared")
                    + (
                        ""
                        if corrected
                        else " (prune is off)"
                        if action is None or not action.runnable
                        else ""
                    ),
                )
            )
    return statuses, drift


def audit_records(
    execution: ExecutionResult | None,
    *,
    revision: str | None,
    author: str | None,
    approvers: Mapping[str, tuple[str, ...]] | None = None,
) -> list[AuditRecord]:
    """One record per task the execution ran: the audit trail of this cycle.

    `approvers` by resource key: who approved its gated action (`reconciler.approvals`).
    """
    if execution is None:
        return []
    records = []
    for outcome in execution.outcomes.values():
        for task in outcome.tasks:
            records.append(
                AuditRecord(
                    revision=revision,
                    author=author,
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
                    approvers=tuple((approvers or {}).get(outcome.key, ())),
                )
            )
    return records


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


def last_applied(statuses: Mapping[str, ResourceStatus]) -> dict[str, LastApplied]:
    """What each resource looked like when last applied (diff tells Git changes from drift)."""
    return {
        key: LastApplied(
            fingerprint=s.last_applied_fingerprint,
            declared=s.last_applied_declared or {},
            revision=s.last_applied_revision,
        )
        for key, s in statuses.items()
        if s.last_applied_fingerprint
    }


def failed_stages(statuses: Mapping[str, ResourceStatus]) -> dict[str, str]:
    """The stage each resource's last apply failed at (it runs again next time)."""
    return {
        key: s.failure.stage
        for key, s in statuses.items()
        if s.phase == "Failed" and s.failure is not None
    }
