"""The values of one reconcile: what it is asked to cover, and what each step hands on.

Sits inside `reconciler.controller.controller`. `Controller.reconcile(scope)` is the
one path every cycle takes, a short list of steps, each taking the frozen results
before it and returning its own (as Flux's sub-reconcilers do):

    fetch -> resume -> cover -> observe -> plan -> execute -> report

The scope is a value saying which cycle this is; the cover step turns it, with the
revision and the statuses, into the resources this cycle looks at (`Coverage`):

- `AtHead()` — at the fetched head: incremental when it can be (`reconciler.plan.scope`),
  else every resource; `AtHead(full=True)` always every resource;
  `AtHead(hold_failures=True)` (scheduled cycles) leaves failed resources alone
  until their backoff runs out; `also` names resources planned whatever their state.
- `Targeted(keys)` — `apply --target`: at the fetched head, after a resume, only
  `keys` and what they depend on.
- `ProviderEvents(keys)` — between cycles: only `keys`, at the revision in force, no
  fetch and no resume.

What a cycle leaves waiting comes back as `Requeue`, which the scheduler acts on.

Values only; no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.execute.engine import ExecutionResult
from reconciler.load.desired import Desired, ResolvedResource
from reconciler.model.status import ResourceStatus
from reconciler.observe.observe import ObservedState
from reconciler.plan.approvals import Decision
from reconciler.plan.diff import Diff
from reconciler.plan.plan import Plan
from reconciler.plan.scope import FullCycle, Scope
from reconciler.source import SourceResult


@dataclass(frozen=True)
class AtHead:
    """A cycle at the fetched head, after an interrupted plan has resumed."""

    full: bool = False
    """Every resource, even when an incremental cycle could do."""
    also: frozenset[str] = frozenset()
    """Planned whatever their state: the resources whose provider events wait."""
    hold_failures: bool = False
    """Only the clock asked: resources whose last apply failed wait out their backoff."""


@dataclass(frozen=True)
class Targeted:
    """`apply --target`: at the fetched head, after a resume, `keys` and their dependencies."""

    keys: frozenset[str]


@dataclass(frozen=True)
class ProviderEvents:
    """Provider events between cycles: `keys` at the revision in force (no fetch, no resume)."""

    keys: frozenset[str]


CycleScope = AtHead | Targeted | ProviderEvents
"""What one `Controller.reconcile` covers, as its caller asks."""

INCREMENTAL = AtHead()
FULL = AtHead(full=True)


def scheduled(also: Collection[str] = ()) -> AtHead:
    """A cycle only the clock asked for: failures held in their backoff."""
    return AtHead(also=frozenset(also), hold_failures=True)


@dataclass(frozen=True)
class Fetched:
    """The fetch step: the source's poll, the statuses the status branch holds, the time."""

    source: SourceResult
    previous: Mapping[str, ResourceStatus]
    now: datetime


@dataclass(frozen=True)
class Resumed:
    """The resume step: the interrupted plan run to its end, or why it could not be."""

    execution: ExecutionResult | None = None
    revision: str | None = None
    deferred: str | None = None
    """Why an interrupted plan could not be resumed now (`ResumeDeferred`): nothing new runs."""


@dataclass(frozen=True)
class Coverage:
    """The cover step: which resources this cycle observes, plans and reports."""

    full: Desired
    """The revision in force, whole."""
    desired: Desired
    """The part of it observed and planned."""
    providers: tuple[str, ...]
    """The Providers to open."""
    narrowed: bool
    """Only some resources: the others' existence is kept, what providers own is listed
    only for `removed`, so nothing else is found orphaned."""
    removed: Mapping[str, ResolvedResource] = field(default_factory=dict)
    """Declared before, not now (an incremental cycle): found orphaned if they still exist."""
    held: Mapping[str, datetime] = field(default_factory=dict)
    """Failed resources left alone, and when they are due again."""
    scope: Scope | FullCycle | None = None
    """An incremental or a full cycle at the head; None for a targeted reconcile."""
    reported: frozenset[str] | None = None
    """The keys whose status and drift entries this cycle writes; None: every one."""
    at_head: bool = True
    """A cycle at the head (not targeted): it plans the watched branches, and once its
    status commit is written its revision is the one in force."""

    @property
    def announced(self) -> bool:
        """The plan of every resource: `on_plan` hears of it (the API's current plan)."""
        return isinstance(self.scope, FullCycle)


@dataclass(frozen=True)
class Planned:
    """The plan step: the diff, the gated plan and the approval gate's verdict."""

    diff: Diff
    plan: Plan
    decision: Decision | None


@dataclass(frozen=True)
class Executed:
    """The execute step: what ran (None: nothing), and the observation after it."""

    execution: ExecutionResult | None
    observed: ObservedState


@dataclass(frozen=True)
class Requeue:
    """When the scheduler should come back to what a cycle left waiting (Flux's
    `RequeueAfter`): the scheduler acts on it, the cycle does not wait."""

    fetch_after: float | None = None
    """Seconds scheduled cycles leave the remote alone: the source's `retry_after`
    after a failed fetch (a sync, a push webhook or a provider event do not wait)."""
    failures: Mapping[str, datetime] = field(default_factory=dict)
    """Failed resources in their backoff (`Policy.failureBackoff`), and when scheduled
    cycles try them again."""
    window_opens: datetime | None = None
    """A destructive action waited for a change window: when the next one opens."""

    def come_back(self, now: datetime) -> tuple[datetime, str] | None:
        """When, after `now`, a cycle should run for what waits, and why (None: nothing
        waits that the interval would not reach)."""
        due = [(when, f"the backoff of {key} ends") for key, when in self.failures.items()]
        if self.window_opens is not None:
            due.append((self.window_opens, "a change window opens"))
        ahead = [entry for entry in due if entry[0] > now]
        return min(ahead) if ahead else None


__all__ = [
    "FULL",
    "INCREMENTAL",
    "AtHead",
    "Coverage",
    "CycleScope",
    "Executed",
    "Fetched",
    "Planned",
    "ProviderEvents",
    "Requeue",
    "Resumed",
    "Targeted",
    "scheduled",
]
