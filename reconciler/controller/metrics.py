"""Prometheus metrics of `reconciler run`, all prefixed `reconciler_`, served at `GET /metrics`.

An edge beside the scheduler: the scheduler and the notifier record what happened
(cycles, actions, events, notifications), `observe_cycle` turns a cycle's result
into gauges (resources by phase and condition, the revision in force), and the
server renders the registry. Each `Metrics` has a registry of its own, so several
controllers (tests) in one process do not collide.

Names (counters end in `_total` when rendered):

- `reconciler_cycle_duration_seconds{kind}` — full and incremental cycles, targeted reconciles
- `reconciler_cycles_total{kind,result}` — ok / failed
- `reconciler_cycle_requests_total{result}` — queued / coalesced (at most one follow-up)
- `reconciler_resources{phase}`, `reconciler_resource_conditions{condition,status}`
- `reconciler_actions_total{result}` — resource actions succeeded / failed / skipped
- `reconciler_queue_depth`, `reconciler_queue_oldest_age_seconds` — targeted reconciles waiting
- `reconciler_events_total{outcome}` — queued / coalesced / shed / unmatched / covered
- `reconciler_targeted_reconciles_total`, `reconciler_targeted_resources_total`
- `reconciler_last_reconciled_revision_info{revision}`,
  `reconciler_last_reconciled_timestamp_seconds`
- `reconciler_source_errors_total{reason}` — fetch or validation problems (last good stays)
- `reconciler_status_write_failures_total`, `reconciler_status_write_failing` — status
  commits that could not be written (the results wait in the journal), and whether the
  last one could not
- `reconciler_webhooks_total{source,result}` — accepted / refused / ignored
- `reconciler_notifications_total{event,result}` — sent / failed (sent again after the
  next cycle) / refused (a 4xx) / dropped / repeated
- `reconciler_resource_ready{kind,name,provider}` — 1 when the resource's Ready condition
  is True, else 0. Cardinality bound: one series per declared resource, for at most
  `metrics_resource_series` resources (setting, default 2000); with more declared, no
  per-resource series are exported (only the aggregates above), and
  `reconciler_resource_series_capped` is 1.
- `reconciler_drifted_resources{kind}` — resources whose observed state differs from Git
- `reconciler_task_duration_seconds{provider,stage}`,
  `reconciler_stage_duration_seconds{provider,stage}` — executed tasks and stages
- `reconciler_provider_request_duration_seconds{provider,operation}`,
  `reconciler_provider_request_errors_total{provider,operation}` — each call of the
  provider protocol (observe, list_owned, start, poll, cancel, discover)
- `reconciler_cycle_phase_duration_seconds{phase}` — fetch, load, observe, plan,
  execute, write
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from reconciler.model.status import ResourceStatus

if TYPE_CHECKING:
    from reconciler.execute.engine import ExecutionResult
    from reconciler.plan.plan import Plan

PHASES = ("Pending", "Provisioning", "Ready", "Drifted", "Failed", "Stalled", "Unknown")
CONDITIONS = ("Ready", "Reconciling", "Drifted", "Stalled", "Failed")
PHASE_NAMES = ("fetch", "load", "observe", "plan", "execute", "write")
WORK_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The controller's metrics in a registry of their own."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, resource_series: int = 2000
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.resource_series = resource_series
        # The families register in this order, the order `/metrics` renders them in.
        self._cycle_families(self.registry)
        self._fleet_families(self.registry)
        self._queue_families(self.registry)
        self._source_families(self.registry)
        self._message_families(self.registry)
        self._resource_families(self.registry)
        self._work_families(self.registry)

    def _cycle_families(self, r: CollectorRegistry) -> None:
        """Cycles: how long, how they ended, full cycles asked for."""
        self.cycle_duration = Histogram(
            "reconciler_cycle_duration_seconds",
            "Duration of reconcile cycles (full) and targeted reconciles",
            ["kind"],
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.cycles = Counter(
            "reconciler_cycles", "Cycles run, by kind and result", ["kind", "result"], registry=r
        )
        self.cycle_requests = Counter(
            "reconciler_cycle_requests",
            "Requests for a full cycle: queued, or coalesced into one already queued",
            ["result"],
            registry=r,
        )

    def _fleet_families(self, r: CollectorRegistry) -> None:
        """The declared resources by phase and condition; actions run."""
        self.resources = Gauge(
            "reconciler_resources", "Declared resources by phase", ["phase"], registry=r
        )
        self.conditions = Gauge(
            "reconciler_resource_conditions",
            "Resources by condition type and status",
            ["condition", "status"],
            registry=r,
        )
        self.actions = Counter(
            "reconciler_actions", "Resource actions executed, by result", ["result"], registry=r
        )

    def _queue_families(self, r: CollectorRegistry) -> None:
        """Targeted reconciles: the queue, the provider events feeding it, runs."""
        self.queue_depth = Gauge(
            "reconciler_queue_depth", "Resources waiting for a targeted reconcile", registry=r
        )
        self.queue_age = Gauge(
            "reconciler_queue_oldest_age_seconds",
            "Age of the oldest resource waiting for a targeted reconcile",
            registry=r,
        )
        self.events = Counter(
            "reconciler_events",
            "Provider events: queued, coalesced (already waiting), shed (queue full), "
            "unmatched, covered (by a full cycle)",
            ["outcome"],
            registry=r,
        )
        self.targeted = Counter(
            "reconciler_targeted_reconciles", "Targeted reconciles run", registry=r
        )
        self.targeted_resources = Counter(
            "reconciler_targeted_resources",
            "Resources reconciled by targeted reconciles",
            registry=r,
        )

    def _source_families(self, r: CollectorRegistry) -> None:
        """The revision in force, stale sources, status commits not written."""
        self.revision = Info(
            "reconciler_last_reconciled_revision",
            "The declared revision the last cycle reconciled",
            registry=r,
        )
        self.last_reconciled = Gauge(
            "reconciler_last_reconciled_timestamp_seconds",
            "When the last cycle finished (Unix time)",
            registry=r,
        )
        self.source_errors = Counter(
            "reconciler_source_errors",
            "Cycles whose source was stale: remote down, refused, invalid revision",
            ["reason"],
            registry=r,
        )
        self.status_write_failures = Counter(
            "reconciler_status_write_failures",
            "Status commits that could not be written (refused or unreachable remote); "
            "their results wait in the journal and the next cycle reports them",
            registry=r,
        )
        self.status_write_failing = Gauge(
            "reconciler_status_write_failing",
            "1 while the last status commit could not be written, else 0",
            registry=r,
        )

    def _message_families(self, r: CollectorRegistry) -> None:
        """Git webhooks in, notifications out."""
        self.webhooks = Counter(
            "reconciler_webhooks", "Git webhooks by result", ["source", "result"], registry=r
        )
        self.notifications = Counter(
            "reconciler_notifications",
            "Notifications: sent, failed (sent again later), refused, dropped, or repeated",
            ["event", "result"],
            registry=r,
        )

    def _resource_families(self, r: CollectorRegistry) -> None:
        """Per-resource Ready series (bounded by `resource_series`) and drift by kind."""
        self.resource_ready = Gauge(
            "reconciler_resource_ready",
            "1 when the resource's Ready condition is True, else 0 (at most "
            "metrics_resource_series resources; beyond, none)",
            ["kind", "name", "provider"],
            registry=r,
        )
        self.resource_series_capped = Gauge(
            "reconciler_resource_series_capped",
            "1 when more resources are declared than metrics_resource_series: no "
            "per-resource series, aggregates only",
            registry=r,
        )
        self._ready_series: set[tuple[str, str, str]] = set()
        self.drifted = Gauge(
            "reconciler_drifted_resources",
            "Resources whose observed state differs from Git, by kind",
            ["kind"],
            registry=r,
        )

    def _work_families(self, r: CollectorRegistry) -> None:
        """Durations of tasks, stages, provider calls and cycle phases."""
        self.task_duration = Histogram(
            "reconciler_task_duration_seconds",
            "Executed tasks, by provider and stage",
            ["provider", "stage"],
            registry=r,
            buckets=WORK_BUCKETS,
        )
        self.stage_duration = Histogram(
            "reconciler_stage_duration_seconds",
            "Executed stages (first task start to last task end), by provider and stage",
            ["provider", "stage"],
            registry=r,
            buckets=WORK_BUCKETS,
        )
        self.provider_latency = Histogram(
            "reconciler_provider_request_duration_seconds",
            "Calls of the provider protocol, by provider and operation",
            ["provider", "operation"],
            registry=r,
            buckets=REQUEST_BUCKETS,
        )
        self.provider_errors = Counter(
            "reconciler_provider_request_errors",
            "Provider calls that raised or timed out, by provider and operation",
            ["provider", "operation"],
            registry=r,
        )
        self.cycle_phase = Histogram(
            "reconciler_cycle_phase_duration_seconds",
            "Time of each phase of a cycle: fetch, load, observe, plan, execute, write",
            ["phase"],
            registry=r,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
        )

    def provider_call(self, provider: str, operation: str, seconds: float, failed: bool) -> None:
        """A provider call's latency (`reconciler.providers.instrument` reports here)."""
        self.provider_latency.labels(provider=provider, operation=operation).observe(seconds)
        if failed:
            self.provider_errors.labels(provider=provider, operation=operation).inc()

    def observe_phases(self, timings: Mapping[str, float]) -> None:
        for phase, seconds in timings.items():
            self.cycle_phase.labels(phase=phase).observe(seconds)

    def observe_execution(self, execution: ExecutionResult, plan: Plan | None) -> None:
        """Task and stage durations of what an execution ran."""
        providers = {a.key: a.provider for a in plan.actions} if plan is not None else {}
        for outcome in execution.outcomes.values():
            provider = providers.get(outcome.key, "unknown")
            stages: dict[str, list[datetime]] = defaultdict(list)
            for task in outcome.tasks:
                started, finished = _stamp(task.started), _stamp(task.finished)
                if started is None or finished is None:
                    continue
                seconds = max(0.0, (finished - started).total_seconds())
                self.task_duration.labels(provider=provider, stage=task.stage).observe(seconds)
                stages[task.stage] += [started, finished]
            for stage, times in stages.items():
                seconds = (max(times) - min(times)).total_seconds()
                self.stage_duration.labels(provider=provider, stage=stage).observe(seconds)

    def observe_resources(
        self, statuses: Mapping[str, ResourceStatus], providers: Mapping[str, str]
    ) -> None:
        """Per-resource Ready series (bounded by `resource_series`) and drift by kind."""
        drifted: dict[str, int] = defaultdict(int)
        for status in statuses.values():
            if status.phase == "Drifted" or status.drifted_since is not None:
                drifted[status.kind] += 1
        for kind in {*drifted, *(s.kind for s in statuses.values())}:
            self.drifted.labels(kind=kind).set(drifted.get(kind, 0))
        capped = len(statuses) > self.resource_series
        self.resource_series_capped.set(1 if capped else 0)
        wanted: dict[tuple[str, str, str], float] = {}
        if not capped:
            for key, status in statuses.items():
                ready = status.condition("Ready")
                labels = (status.kind, status.name, providers.get(key, "unknown"))
                wanted[labels] = 1.0 if ready is not None and ready.status == "True" else 0.0
        for labels in self._ready_series - wanted.keys():
            self.resource_ready.remove(*labels)
        for labels, value in wanted.items():
            self.resource_ready.labels(*labels).set(value)
        self._ready_series = set(wanted)

    def watch_queue(self, depth: Callable[[], float], age: Callable[[], float]) -> None:
        """Read the queue's depth and age when scraped, not when it changes."""
        self.queue_depth.set_function(depth)
        self.queue_age.set_function(age)

    def observe_statuses(self, statuses: Mapping[str, ResourceStatus]) -> None:
        phases = dict.fromkeys(PHASES, 0)
        conditions = {(c, s): 0 for c in CONDITIONS for s in ("True", "False", "Unknown")}
        for status in statuses.values():
            phases[status.phase] = phases.get(status.phase, 0) + 1
            for condition in status.conditions:
                conditions[(condition.type, condition.status)] += 1
        for phase, count in phases.items():
            self.resources.labels(phase=phase).set(count)
        for (kind, state), count in conditions.items():
            self.conditions.labels(condition=kind, status=state).set(count)

    def observe_cycle(
        self,
        kind: str,
        seconds: float,
        *,
        ok: bool,
        revision: str | None,
        stale_reason: str | None,
        statuses: Mapping[str, ResourceStatus],
    ) -> None:
        self.cycle_duration.labels(kind=kind).observe(seconds)
        self.cycles.labels(kind=kind, result="ok" if ok else "failed").inc()
        if stale_reason is not None:
            self.source_errors.labels(reason=stale_reason).inc()
        if revision is not None:
            self.revision.info({"revision": revision})
            self.last_reconciled.set(time.time())
        self.observe_statuses(statuses)

    def observe_write(self, error: str | None) -> None:
        """A cycle's status commit: written (or nothing to write), or not (`error`)."""
        if error is not None:
            self.status_write_failures.inc()
        self.status_write_failing.set(1 if error is not None else 0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _stamp(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None


def sample(metrics: Metrics, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample's value (0 when absent): for tests and the benchmark."""
    value = metrics.registry.get_sample_value(name, dict(labels or {}))
    return float(value or 0.0)
