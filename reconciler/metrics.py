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
- `reconciler_webhooks_total{source,result}` — accepted / refused / ignored
- `reconciler_notifications_total{event,result}` — sent / failed (sent again after the
  next cycle) / refused (a 4xx) / dropped / repeated
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from reconciler.status import ResourceStatus

PHASES = ("Pending", "Provisioning", "Ready", "Drifted", "Failed", "Stalled", "Unknown")
CONDITIONS = ("Ready", "Reconciling", "Drifted", "Stalled", "Failed")


class Metrics:
    """The controller's metrics in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.webhooks = Counter(
            "reconciler_webhooks", "Git webhooks by result", ["source", "result"], registry=r
        )
        self.notifications = Counter(
            "reconciler_notifications",
            "Notifications: sent, failed (sent again later), refused, dropped, or repeated",
            ["event", "result"],
            registry=r,
        )

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
        for (condition, state), count in conditions.items():
            self.conditions.labels(condition=condition, status=state).set(count)

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

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def sample(metrics: Metrics, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample's value (0 when absent): for tests and the benchmark."""
    value = metrics.registry.get_sample_value(name, dict(labels or {}))
    return float(value or 0.0)
