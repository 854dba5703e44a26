"""A rollout's progress: its resources done, running, waiting and failed, paused and why.

Pure, beside report. The plan says which actions a rollout covers (`PlannedAction.
rollout`, `batch`); what happened to them comes from the execution (`states_of`: the
executor's outcomes) or, while it runs, from the live progress (`states_live`); a
pause from the journal's `rollout:<id>` facts. `reports/rollouts.json` on the status
branch holds each cycle's; `reconciler status` prints it, the web UI's plan page
shows the live one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.plan.plan import Plan
from reconciler.secrets import REDACTOR

ROLLOUTS_JSON = "reports/rollouts.json"
STATES = ("done", "running", "waiting", "failed")


@dataclass(frozen=True)
class Member:
    key: str
    batch: str
    state: str
    """done, running, waiting or failed."""
    why: str = ""
    """Why it waits (held back by a pause, a domain's slots) or how it failed."""


@dataclass(frozen=True)
class RolloutProgress:
    id: str
    members: tuple[Member, ...]
    paused: str | None = None
    """Why the rollout is paused, or None."""

    def count(self, state: str) -> int:
        return sum(1 for m in self.members if m.state == state)

    def line(self) -> str:
        """`rollout policy: 3 done · 1 running · 6 waiting · 2 failed · paused: …`"""
        parts = [f"{self.count(s)} {s}" for s in STATES]
        text = f"rollout {self.id}: " + " · ".join(parts)
        if self.paused:
            text += (
                f" · paused: {self.paused} (resume: change rollout.resume in Git, or "
                f"POST /api/v1/rollouts/{self.id}/resume)"
            )
        return text

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "paused": self.paused,
            "counts": {s: self.count(s) for s in STATES},
            "resources": [
                {"resource": m.key, "batch": m.batch, "state": m.state, "why": m.why}
                for m in self.members
            ],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RolloutProgress:
        return cls(
            id=str(data["id"]),
            paused=data.get("paused"),
            members=tuple(
                Member(
                    str(m["resource"]), str(m.get("batch", "")), str(m["state"]), m.get("why", "")
                )
                for m in data.get("resources", ())
            ),
        )


def rollout_progress(
    plan: Plan | None,
    states: Mapping[str, tuple[str, str]],
    paused: Mapping[str, str],
) -> tuple[RolloutProgress, ...]:
    """Each rollout of `plan` with its resources' states (`states`: key -> (state, why);
    a key not in it waits), and the paused ones' reasons (`paused`, else what the plan's
    held-back actions say). A paused rollout none of whose resources this plan covers is
    still shown, with no resources."""
    members: dict[str, list[Member]] = {}
    paused = dict(paused)
    for action in plan.actions if plan is not None else ():
        if action.rollout is None:
            continue
        held = f"rollout {action.rollout} is paused: "
        if action.blocked and action.blocked.startswith(held) and action.rollout not in paused:
            paused[action.rollout] = action.blocked.removeprefix(held).split(" (resume:")[0]
        state, why = states.get(action.key, ("waiting", ""))
        if state == "waiting" and not why and action.blocked:
            why = action.blocked
        members.setdefault(action.rollout, []).append(
            Member(action.key, action.batch or "", state, why)
        )
    for rollout in paused:
        members.setdefault(rollout, [])
    return tuple(
        RolloutProgress(rollout, tuple(found), paused.get(rollout))
        for rollout, found in sorted(members.items())
    )


def states_of(outcomes: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Resource states from an execution's outcomes (`ResourceOutcome` values)."""
    states: dict[str, tuple[str, str]] = {}
    for key, outcome in outcomes.items():
        if outcome.result == "succeeded":
            states[key] = ("done", "")
        elif outcome.result == "failed":
            where = f"stage {outcome.failed_stage}: " if outcome.failed_stage else ""
            states[key] = ("failed", f"{where}{outcome.error or ''}".strip())
        else:
            states[key] = ("waiting", outcome.reason)
    return states


def states_live(
    running: Mapping[str, Any], ended: Mapping[str, tuple[str, str]]
) -> dict[str, tuple[str, str]]:
    """Resource states while a plan runs: the executor's progress (`ProgressState`)."""
    names = {"succeeded": "done", "failed": "failed"}
    states = {key: (names.get(result, "waiting"), why) for key, (result, why) in ended.items()}
    states.update((key, ("running", "")) for key in running)
    return states


def rollouts_json(progress: tuple[RolloutProgress, ...], revision: str | None) -> str:
    data = {"revision": revision, "rollouts": [p.to_data() for p in progress]}
    return json.dumps(REDACTOR.data(data), indent=2, sort_keys=True) + "\n"


def read_rollouts(text: bytes | str | None) -> tuple[RolloutProgress, ...]:
    """`reports/rollouts.json` back; nothing for none or an unreadable one."""
    if not text:
        return ()
    try:
        data = json.loads(text)
        return tuple(RolloutProgress.from_data(r) for r in data.get("rollouts", ()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ()
