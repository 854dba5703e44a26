"""The executor's side of rollouts: canary first, a domain's slots, a pause on failures.

Part of execute, beside the engine. A plan carries its rollouts' rules
(`reconciler.plan.plan.RolloutPlan`, decided by `reconciler.plan.rollouts`); during an
execution one `RolloutGate` per rollout is shared by its resources' coroutines:

- a resource not in the canary waits until every canary resource has ended; if one
  did not succeed, the rollout pauses and nothing else of it starts;
- a resource takes a slot of its failure domain before its first task and gives it
  back when it succeeded (Ready again); a failed one keeps it — its domain has one
  resource less to lose. A resource that can never get a slot (the domain's slots
  are held by failures, nothing of it still runs) does not start, saying why;
- once `pause_after` resources failed the rollout pauses: nothing new starts, what
  runs finishes. The pause is kept as a journal fact (`rollout:<id>`) with the
  rollout's `resume` value at that time, so later plans hold its actions back until
  that value changes in Git or the API resumes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.plan.plan import RolloutPlan

PAUSE_FACT = "rollout:"
"""Journal fact prefix of a paused rollout: `rollout:<id>` -> {"reason", "resume"}."""


@dataclass
class RolloutGate:
    """One rollout's state during an execution (see the module docstring)."""

    rules: RolloutPlan
    on_pause: Callable[[str, str], None] = lambda _id, _why: None
    paused: str | None = None
    failed: int = 0
    _unavailable: dict[str, int] = field(default_factory=dict)
    _running: dict[str, int] = field(default_factory=dict)
    _canaries_left: int = 0
    _canary_done: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self._canaries_left = len(self.rules.canary)
        if not self._canaries_left:
            self._canary_done.set()

    async def enter(self, key: str, planned: set[str]) -> str | None:
        """Wait for this resource's turn; why it must not start, or None once it holds a
        slot. `planned` are the rollout's keys that run in this execution."""
        if key not in self.rules.canary:
            if set(self.rules.canary) & planned:
                await self._canary_done.wait()
            if self.paused:
                return f"rollout {self.rules.id} is paused: {self.paused}"
        domain = self.rules.domains.get(key, "*")
        limit = self.rules.limits.get(domain, 1)
        async with self._changed:
            while True:
                if self.paused:
                    return f"rollout {self.rules.id} is paused: {self.paused}"
                if self._unavailable.get(domain, 0) < limit:
                    self._unavailable[domain] = self._unavailable.get(domain, 0) + 1
                    self._running[domain] = self._running.get(domain, 0) + 1
                    return None
                if not self._running.get(domain, 0):
                    return (
                        f"rollout {self.rules.id}: domain {domain} has {limit} unavailable "
                        "resource(s) that failed; none may start until they are Ready"
                    )
                await self._changed.wait()

    async def leave(self, key: str, succeeded: bool) -> None:
        """The resource ended: its slot back when it succeeded; a failure counts."""
        domain = self.rules.domains.get(key, "*")
        async with self._changed:
            self._running[domain] -= 1
            if succeeded:
                self._unavailable[domain] -= 1
            else:
                self.failed += 1
                if self.rules.pause_after is not None and self.failed >= self.rules.pause_after:
                    self._pause(f"{self.failed} resource(s) failed (pauseOnFailure)")
            if key in self.rules.canary:
                if not succeeded:
                    self._pause(f"canary {key} did not succeed")
                self._canaries_left -= 1
                if self._canaries_left <= 0:
                    self._canary_done.set()
            self._changed.notify_all()

    def skipped(self, key: str) -> None:
        """A covered resource that never started (a dependency, a stop): a canary that did
        not run pauses the rollout rather than letting the rest go first."""
        if key in self.rules.canary:
            self._pause(f"canary {key} did not run")
            self._canaries_left -= 1
            if self._canaries_left <= 0:
                self._canary_done.set()

    def _pause(self, why: str) -> None:
        if self.paused is None:
            self.paused = why
            self.on_pause(self.rules.id, why)


def pause_record(reason: str, resume: str | None) -> str:
    return json.dumps({"reason": reason, "resume": resume}, sort_keys=True)
