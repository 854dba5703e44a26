"""The fleet as a table: one row per resource, filtered and paginated on the server.

Pure, beside the web UI and the API's resource list (`GET /resources`,
`GET /api/v1/resources?…`). `FleetIndex.of` builds the rows once per
(statuses, desired) pair the scheduler holds — it replaces both objects whole
after each cycle, so their identity says when the index is stale — and every
request then filters the sorted rows and cuts one page: at 10,000 resources a
page costs a scan of small tuples, never a sort or a status dump.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.model.status import PHASE_HEALTH, ResourceStatus

if TYPE_CHECKING:
    from reconciler.load.desired import Desired

PER_PAGE = 50
MAX_PER_PAGE = 500

PHASE_ORDER = tuple(sorted(PHASE_HEALTH, key=lambda p: (-PHASE_HEALTH[p], p)))
"""Phases worst first: Failed, Stalled, Unknown, Drifted, Provisioning, Pending, …"""


@dataclass(frozen=True)
class Row:
    """One resource as the list shows it (status fields, and what Git declares of it)."""

    key: str
    kind: str
    name: str
    phase: str
    stage: str | None
    provider: str | None
    labels: Mapping[str, str]
    revision: str | None
    message: str
    status: ResourceStatus | None
    declared: bool
    """Declared in the revision in force (False: only its status remains, e.g. an orphan)."""
    search: str = field(repr=False, default="")
    """Lower-case key, for the name search."""


@dataclass(frozen=True)
class Query:
    """What the list is asked for; empty fields match everything."""

    q: str = ""
    phase: str = ""
    kind: str = ""
    provider: str = ""
    label: str = ""
    """`key=value`, or `key` alone (the label is set)."""

    def matches(self, row: Row) -> bool:
        if self.phase and row.phase != self.phase:
            return False
        if self.kind and row.kind != self.kind:
            return False
        if self.provider and row.provider != self.provider:
            return False
        if self.q and self.q.lower() not in row.search:
            return False
        if self.label:
            name, has_value, value = self.label.partition("=")
            found = row.labels.get(name.strip())
            if found is None or (has_value and found != value.strip()):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not (self.q or self.phase or self.kind or self.provider or self.label)


@dataclass(frozen=True)
class Page:
    rows: Sequence[Row]
    total: int
    """Rows matching the query (all pages)."""
    offset: int
    limit: int

    @property
    def number(self) -> int:
        return self.offset // self.limit + 1

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit))


@dataclass(frozen=True)
class FleetIndex:
    """Every resource's row, sorted by key, with the values the filters offer."""

    rows: tuple[Row, ...]
    phases: Mapping[str, int]
    kinds: tuple[str, ...]
    providers: tuple[str, ...]
    labels: tuple[str, ...]
    """Label keys in use."""
    reported: tuple[Row, ...] = ()
    """The rows that have a status (what the API lists)."""

    def select(
        self, query: Query, *, offset: int = 0, limit: int = PER_PAGE, reported: bool = False
    ) -> Page:
        """The rows matching `query`, from `offset`, at most `limit` (capped at
        MAX_PER_PAGE). `reported`: only resources that have a status (the API's list)."""
        limit = max(1, min(limit, MAX_PER_PAGE))
        offset = max(0, offset)
        rows = self.reported if reported else self.rows
        matching = rows if query.empty else [r for r in rows if query.matches(r)]
        return Page(matching[offset : offset + limit], len(matching), offset, limit)

    @classmethod
    def build(cls, statuses: Mapping[str, ResourceStatus], desired: Desired | None) -> FleetIndex:
        declared = desired.resources if desired is not None else {}
        rows = []
        for key in sorted(set(statuses) | set(declared)):
            status = statuses.get(key)
            resource = declared.get(key)
            kind, _, name = key.partition("/")
            ready = status.condition("Ready") if status is not None else None
            applied = status.last_applied if status is not None else None
            rows.append(
                Row(
                    key=key,
                    kind=kind,
                    name=name,
                    phase=status.phase if status is not None else "Pending",
                    stage=status.stage_reached if status is not None else None,
                    provider=resource.provider if resource is not None else None,
                    labels=resource.labels if resource is not None else {},
                    revision=applied.revision if applied is not None else None,
                    message=ready.message if ready is not None else "",
                    status=status,
                    declared=resource is not None,
                    search=key.lower(),
                )
            )
        phases = Counter(r.phase for r in rows)
        return cls(
            rows=tuple(rows),
            phases={p: phases[p] for p in PHASE_ORDER if phases[p]},
            kinds=tuple(sorted({r.kind for r in rows})),
            providers=tuple(sorted({r.provider for r in rows if r.provider})),
            labels=tuple(sorted({k for r in rows for k in r.labels})),
            reported=tuple(r for r in rows if r.status is not None),
        )


class IndexCache:
    """The index of the scheduler's current statuses and desired set, rebuilt when either
    object is replaced (a cycle ended). Safe to call from the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._for: tuple[object, object] | None = None
        self._index: FleetIndex | None = None

    def get(self, statuses: Mapping[str, ResourceStatus], desired: Desired | None) -> FleetIndex:
        with self._lock:
            known = self._for
            if (
                self._index is not None
                and known is not None
                and known[0] is statuses
                and known[1] is desired
            ):
                return self._index
        index = FleetIndex.build(statuses, desired)
        with self._lock:
            self._for, self._index = (statuses, desired), index
        return index


__all__ = ["MAX_PER_PAGE", "PER_PAGE", "FleetIndex", "IndexCache", "Page", "Query", "Row"]
