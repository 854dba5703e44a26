"""Undo is a plan, not a promise: which actions of a plan revert an earlier change — pure.

Part of plan. A head *reverts* a change for a resource when the resource resolves to
what it resolved to at an earlier revision (its `resolution` is one the journal's
history holds, `Journal.resolution_history`) and not to what is applied now. Its
actions are then labelled an undo of the commit that introduced the resolution being
reverted away from (found in Git by `reconciler.plan.gates`: the newest commit, up to the
revision that resolution was applied at, that changed a document the resource
resolves from).

An undo runs stages again; it does not travel back in time. What re-running cannot
bring back is flagged: a `destructive` stage (a re-image) installs the earlier
declared state, but the data on the disks it wiped — when the reverted change was
applied, and again now — is not restored.

`reverts` finds the candidates from values; `label` puts the Git facts on the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.load.desired import Desired
from reconciler.plan.diff import LastApplied
from reconciler.plan.plan import Operation, Plan, UndoAction, Wave

UNDONE_BY_RERUN = (
    "{stage} is destructive: re-running it brings back the earlier declared state, but "
    "data on the disks it wiped (when {commit} was applied, and again now) is not restored"
)


@dataclass(frozen=True)
class Revert:
    """A resource whose head resolution is an earlier one: back to `to_revision`'s, away
    from what was applied at `from_revision`."""

    key: str
    to_revision: str | None
    from_revision: str | None


@dataclass(frozen=True)
class Reverted:
    """The commit a revert undoes, as Git tells it."""

    commit: str
    subject: str = ""
    author: str | None = None


def reverts(
    desired: Desired,
    records: Mapping[str, LastApplied],
    history: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Revert]:
    """Each declared resource whose head resolution differs from the one applied now and
    equals one applied before (the newest such entry of its history)."""
    out: dict[str, Revert] = {}
    for key, resource in desired.resources.items():
        record = records.get(key)
        if record is None or not record.provisioned:
            continue
        now = resource.resolution()
        if record.resolution == now:
            continue
        earlier = [e for e in history.get(key, ()) if e.get("resolution") == now]
        if earlier:
            out[key] = Revert(key, earlier[-1].get("revision"), record.revision)
    return out


def label(
    plan: Plan,
    desired: Desired,
    found: Mapping[str, Revert],
    undone: Mapping[str, Reverted],
) -> Plan:
    """`plan` with its reverting actions labelled (`undoes`) and the `undo` section: per
    resource, the commit undone, the revision whose state comes back, and what re-running
    its stages cannot undo."""
    entries: list[UndoAction] = []
    for action in plan.actions:
        revert, commit = found.get(action.key), undone.get(action.key)
        if revert is None or commit is None:
            continue
        if action.operation not in (Operation.UPDATE, Operation.CREATE):
            continue
        resource = desired.resources[action.key]
        harmful = [s.name for s in resource.stages if s.destructive and s.name in action.stages]
        entries.append(
            UndoAction(
                key=action.key,
                commit=commit.commit,
                subject=commit.subject,
                author=commit.author,
                restores=revert.to_revision,
                stages=action.stages,
                cannot_undo=tuple(
                    UNDONE_BY_RERUN.format(stage=stage, commit=commit.commit[:12])
                    for stage in harmful
                ),
                blocked=action.blocked,
            )
        )
    if not entries:
        return plan
    commits = {e.key: e.commit for e in entries}
    waves = tuple(
        Wave(
            number=w.number,
            actions=tuple(
                a.model_copy(update={"undoes": commits[a.key]}) if a.key in commits else a
                for a in w.actions
            ),
        )
        for w in plan.waves
    )
    return plan.rebuilt(waves=waves, undo=tuple(entries))
