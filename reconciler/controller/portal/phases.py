"""A request's operation, following it through Git: its record and its next phase.

Pure values and one pure step. A request's phases are read from Git, never from
the process's memory, so a restarted controller picks up where it was:

    branch-pushed -> planned -> merged -> provisioning -> ready | failed
                \\-> closed (the branch was deleted unmerged)

- `branch-pushed`: `request/<id>` is on the remote (the API pushed it);
- `planned`: the status branch holds `plans/request/<id>.md` for the branch's head
  (the controller plans branches matching `RECONCILER_PLAN_BRANCHES`);
- `merged`: the branch's commit reached the tracked branch (a merge, or the request's
  file as the branch has it: a squash or a rebase);
- `provisioning`: the controller reconciled a revision holding the merge; the
  resource's status says how far it got (its phase, the stage reached, why it waits);
- `ready`: the resource is Ready, its pipeline completed at such a revision;
- `failed`: it Failed there — the stage, the task and the error (a later retry that
  succeeds still makes it `ready`);
- `closed`: the branch is gone and was never merged (terminal, as `ready` is).

`GitFacts` are gathered by `reconciler.controller.portal.gitops`; `advance` turns a record and
the facts into the next record, adding to its history only when the phase changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from reconciler.model.status import ResourceStatus

Phase = Literal["branch-pushed", "planned", "merged", "provisioning", "ready", "failed", "closed"]
TERMINAL: frozenset[str] = frozenset({"ready", "closed"})
"""Phases a request never leaves (a failed one may still become ready after a retry)."""
AFTER_MERGE: frozenset[str] = frozenset({"merged", "provisioning", "ready", "failed"})


def stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PlanSeen:
    """The plan file the controller wrote for the branch (`plans/request/<id>.md`)."""

    head: str
    plan_hash: str
    path: str


@dataclass(frozen=True)
class ForgeLink:
    """The pull (merge) request opened for a request, and what its description shows."""

    number: int | None = None
    url: str | None = None
    shown: str | None = None
    """The plan hash (or "none") of the description last sent."""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RequestRecord:
    """What the controller keeps about one request (the store's row)."""

    id: str
    created: str
    key: str
    pipeline: str
    requester: str
    token: str
    reason: str
    branch: str
    path: str
    commit: str
    base: str
    """The tracked branch's head the request's commit was made on."""
    document: Mapping[str, Any]
    """The declared document (secure inputs as references)."""
    phase: Phase = "branch-pushed"
    history: tuple[Mapping[str, str], ...] = ()
    head: str | None = None
    """The branch's head when last seen (it moves when someone pushes to it)."""
    seen: bool = False
    """The branch was seen in the mirror: only then can its absence mean `closed`."""
    merged: str | None = None
    """The tracked branch's head at which the request was first seen merged."""
    plan: PlanSeen | None = None
    progress: Mapping[str, Any] = field(default_factory=dict)
    failure: Mapping[str, Any] | None = None
    forge: ForgeLink | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["history"] = [dict(h) for h in self.history]
        data["document"] = dict(self.document)
        data["progress"] = dict(self.progress)
        data["forge"] = self.forge.to_json() if self.forge else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RequestRecord:
        values = dict(data)
        plan = values.get("plan")
        values["plan"] = PlanSeen(**plan) if plan else None
        forge = values.get("forge")
        values["forge"] = ForgeLink(**forge) if forge else None
        values["history"] = tuple(values.get("history") or ())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def answer(self) -> dict[str, Any]:
        """The operation as `GET /api/v1/requests/{id}` shows it."""
        out: dict[str, Any] = {
            "id": self.id,
            "phase": self.phase,
            "resource": self.key,
            "pipeline": self.pipeline,
            "requester": self.requester,
            "token": self.token,
            "reason": self.reason,
            "branch": self.branch,
            "path": self.path,
            "commit": self.commit,
            "created": self.created,
            "history": [dict(h) for h in self.history],
            "terminal": self.phase in TERMINAL,
        }
        if self.head:
            out["head"] = self.head
        if self.merged:
            out["merged"] = self.merged
        if self.plan:
            out["plan"] = {
                "head": self.plan.head,
                "hash": self.plan.plan_hash,
                "path": self.plan.path,
            }
        if self.progress:
            out["progress"] = dict(self.progress)
        if self.failure:
            out["failure"] = dict(self.failure)
        if self.forge:
            out["pullRequest"] = self.forge.to_json()
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class GitFacts:
    """What Git says about one request now (gathered by `gitops.facts`)."""

    branch_head: str | None
    """The head of `request/<id>` in the mirror, or None when it is not there."""
    merged_at: str | None
    """The tracked head, when it holds the request (its commit, or its file as written)."""
    plan: PlanSeen | None
    """The branch's plan file on the status branch, for the branch's current head."""
    reconciled: bool
    """The controller reconciled a revision holding the merge (status/controller.yaml)."""
    status: ResourceStatus | None
    """The resource's status on the status branch."""
    applied: bool
    """Its pipeline last completed at a revision holding the merge (lastApplied.revision)."""


def _after_merge(facts: GitFacts) -> tuple[Phase, dict[str, Any], dict[str, Any] | None]:
    status = facts.status
    if status is not None and facts.reconciled:
        ready = status.condition("Ready")
        progress: dict[str, Any] = {"resourcePhase": status.phase}
        if status.stage_reached:
            progress["stageReached"] = status.stage_reached
        if ready is not None and ready.message:
            progress["message"] = ready.message
        if status.phase == "Ready" and facts.applied:
            return "ready", progress, None
        if status.phase == "Failed" and status.failure is not None:
            failure = {
                "stage": status.failure.stage,
                "task": status.failure.task,
                "error": status.failure.error,
            }
            return "failed", progress, failure
        return "provisioning", progress, None
    if facts.reconciled:
        return "provisioning", {"resourcePhase": "Pending"}, None
    return "merged", {}, None


def advance(record: RequestRecord, facts: GitFacts, now: datetime) -> RequestRecord:
    """The record after looking at Git once more. Pure."""
    if record.phase in TERMINAL:
        return record
    changes: dict[str, Any] = {}
    if facts.branch_head is not None:
        changes.update(head=facts.branch_head, seen=True)
    merged = record.merged or facts.merged_at
    if merged is not None:
        phase, progress, failure = _after_merge(facts)
        changes.update(merged=merged, progress=progress, failure=failure)
    elif facts.branch_head is None:
        phase = "closed" if record.seen else record.phase
    elif facts.plan is not None:
        phase = "planned"
        changes["plan"] = facts.plan
    else:
        phase = "branch-pushed"
    updated = dataclasses.replace(record, **changes)
    if phase != record.phase:
        passed = [*_passed(record.phase, phase), phase]
        entries = tuple({"phase": p, "at": stamp(now)} for p in passed)
        updated = dataclasses.replace(updated, phase=phase, history=(*record.history, *entries))
    return updated


_AFTER_MERGE_ORDER: tuple[Phase, ...] = ("merged", "provisioning")


def _passed(before: Phase, after: Phase) -> list[Phase]:
    """The phases a request went through unseen between two looks (one cycle merged and
    provisioned it): from before the merge to `ready`, it was merged and provisioned."""
    if after not in ("provisioning", "ready", "failed") or before in ("provisioning", "failed"):
        return []
    start = 1 if before == "merged" else 0
    return [p for p in _AFTER_MERGE_ORDER[start:] if p != after]


__all__ = [
    "AFTER_MERGE",
    "TERMINAL",
    "ForgeLink",
    "GitFacts",
    "Phase",
    "PlanSeen",
    "RequestRecord",
    "advance",
    "stamp",
]
