"""Notifications on condition transitions: after each cycle's status, before the next cycle.

The scheduler hands `Notifier.cycle_done` the statuses before and after a cycle
(or targeted reconcile). `transitions` (pure) finds what changed:

- `Failed`        — the Failed condition became True;
- `Ready`         — Ready became True (from False, Unknown, or a new resource);
- `DriftDetected` — the Drifted condition became True;
- `DriftCleared`  — the Drifted condition went away.

An unchanged state yields nothing, so nothing is ever sent twice for it. An alert
that comes back the same (same event, reason and message) before its opposite was
sent (Ready after Failed, DriftCleared after DriftDetected) is a repeat: its count
goes up in the ledger (`<state_dir>/notifications.json`, kept across restarts),
and nothing is sent. The opposite alert, when sent, carries the count it resolves.

Targets are the Policy's `notifications` (url, secret by reference, events). Each
POST is JSON, signed like the notify task (`X-Reconciler-Signature-256`), tried
three times; a target that is down is logged and counted, never fails a cycle.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from reconciler.metrics import Metrics
from reconciler.model.kinds import NotificationEvent, NotificationTarget
from reconciler.secrets import REDACTOR, resolve
from reconciler.status import ResourceStatus
from reconciler.webhooks import GENERIC_SIGNATURE, hmac_signature

LEDGER = "notifications.json"
OPPOSITE: dict[str, str] = {
    "Failed": "Ready",
    "Ready": "Failed",
    "DriftDetected": "DriftCleared",
    "DriftCleared": "DriftDetected",
}
ATTEMPTS = 3

log = structlog.get_logger("reconciler.notify")


@dataclass(frozen=True)
class Transition:
    """One resource's condition change worth telling someone about."""

    resource: str
    event: NotificationEvent
    reason: str
    message: str

    @property
    def fingerprint(self) -> str:
        text = f"{self.resource}|{self.event}|{self.reason}|{self.message}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _true(status: ResourceStatus | None, kind: str) -> bool:
    if status is None:
        return False
    condition = status.condition(kind)  # type: ignore[arg-type]
    return condition is not None and condition.status == "True"


def transitions(
    before: Mapping[str, ResourceStatus], after: Mapping[str, ResourceStatus]
) -> list[Transition]:
    """The transitions from `before` to `after`, in resource order. Pure."""
    found: list[Transition] = []

    def add(key: str, event: NotificationEvent, kind: str, status: ResourceStatus) -> None:
        condition = status.condition(kind)  # type: ignore[arg-type]
        reason, message = (condition.reason, condition.message) if condition else ("", "")
        found.append(Transition(key, event, reason, message))

    for key in sorted(after):
        old, new = before.get(key), after[key]
        if _true(new, "Failed") and not _true(old, "Failed"):
            add(key, "Failed", "Failed", new)
        if _true(new, "Ready") and not _true(old, "Ready"):
            add(key, "Ready", "Ready", new)
        if _true(new, "Drifted") and not _true(old, "Drifted"):
            add(key, "DriftDetected", "Drifted", new)
        if old is not None and _true(old, "Drifted") and not _true(new, "Drifted"):
            add(key, "DriftCleared", "Drifted", old)
    return found


@dataclass(frozen=True)
class Decision:
    transition: Transition
    send: bool
    count: int
    resolves: Mapping[str, Any] | None = None


class Ledger:
    """The last alert per (resource, event): what was sent, and how often it came back."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}

    def decide(self, transition: Transition, now: datetime) -> Decision:
        """Send it, or count it as a repeat of the alert still open."""
        key = f"{transition.resource}|{transition.event}"
        opposite = f"{transition.resource}|{OPPOSITE[transition.event]}"
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            last = self.entries.get(key)
            if last is not None and last["fingerprint"] == transition.fingerprint:
                last["count"] += 1
                last["last"] = stamp
                decision = Decision(transition, send=False, count=last["count"])
            else:
                resolved = self.entries.pop(opposite, None)
                self.entries[key] = {
                    "fingerprint": transition.fingerprint,
                    "count": 1,
                    "first": stamp,
                    "last": stamp,
                }
                decision = Decision(
                    transition,
                    send=True,
                    count=1,
                    resolves={"event": OPPOSITE[transition.event], "count": resolved["count"]}
                    if resolved
                    else None,
                )
            self._save()
        return decision

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)


def body_of(decision: Decision, *, revision: str | None, now: datetime) -> dict[str, Any]:
    t = decision.transition
    kind, _, name = t.resource.partition("/")
    body: dict[str, Any] = {
        "event": t.event,
        "resource": {"key": t.resource, "kind": kind, "name": name},
        "reason": t.reason,
        "message": t.message,
        "revision": revision,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if decision.resolves:
        body["resolves"] = dict(decision.resolves)
    return REDACTOR.data(body)


class Notifier:
    """Finds transitions after each cycle and tells the Policy's targets."""

    def __init__(
        self,
        state_dir: Path | None,
        *,
        metrics: Metrics | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.ledger = Ledger(state_dir / LEDGER if state_dir is not None else None)
        self.metrics = metrics
        self.timeout = timeout

    async def cycle_done(
        self,
        targets: Sequence[NotificationTarget],
        before: Mapping[str, ResourceStatus],
        after: Mapping[str, ResourceStatus],
        *,
        revision: str | None,
        now: datetime | None = None,
    ) -> list[Decision]:
        now = now or datetime.now(UTC)
        decisions = [self.ledger.decide(t, now) for t in transitions(before, after)]
        posts: list[tuple[NotificationTarget, dict[str, Any]]] = []
        for decision in decisions:
            event = decision.transition.event
            if not decision.send:
                self._count(event, "repeated")
                continue
            body = body_of(decision, revision=revision, now=now)
            posts.extend((target, body) for target in targets if event in target.events)
        if posts:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                await asyncio.gather(*(self._post(client, t, b) for t, b in posts))
        return decisions

    async def _post(
        self, client: httpx.AsyncClient, target: NotificationTarget, body: dict[str, Any]
    ) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Reconciler-Event": body["event"]}
        url = str(target.url)
        try:
            if target.secret:
                headers[GENERIC_SIGNATURE] = hmac_signature(resolve(target.secret), data)
            for attempt in range(ATTEMPTS):
                try:
                    response = await client.post(url, content=data, headers=headers)
                    if response.status_code < 500 and response.status_code != 429:
                        break
                except httpx.HTTPError:
                    if attempt + 1 == ATTEMPTS:
                        raise
                await asyncio.sleep(0.2 * 2**attempt)
            ok = 200 <= response.status_code < 300
            if not ok:
                log.warning("notification refused", url=url, status=response.status_code)
        except Exception as exc:  # a target that is down never fails a cycle
            log.warning("notification failed", url=url, error=REDACTOR.text(str(exc)))
            ok = False
        self._count(body["event"], "sent" if ok else "failed")

    def _count(self, event: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.notifications.labels(event=event, result=result).inc()
