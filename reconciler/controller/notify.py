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
goes up in the ledger, and nothing is sent. The opposite alert, when sent, carries
the count it resolves.

Targets are the Policy's `notifications` (url, secret by reference, events). Each
POST is JSON, signed like the notify task (`X-Reconciler-Signature-256`), tried
three times. A POST that still fails (the target is down, 5xx, 429, 408) is not
delivered: it waits in the ledger and is sent again after the next cycle (before
that cycle's own alerts), until it is delivered, a newer alert of the same kind
for the same resource replaces it, the target leaves the Policy, the resource is
deleted, or `MAX_PENDING` newer ones push it out. Another 4xx is a refusal: logged,
counted, dropped. A target that is down never fails a cycle.

Cost per cycle is bounded: the ledger (`<state_dir>/notifications.json`, kept
across restarts) is written once, after the sends; at most `SEND_CONCURRENCY`
POSTs are in flight, and a resource's alerts reach each target in order; the
entries of resources that are no longer declared are dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from reconciler.controller.metrics import Metrics
from reconciler.controller.webhooks import GENERIC_SIGNATURE, hmac_signature
from reconciler.model.kinds import NotificationEvent, NotificationTarget
from reconciler.model.status import ResourceStatus
from reconciler.secrets import REDACTOR, resolve

LEDGER = "notifications.json"
OPPOSITE: dict[str, str] = {
    "Failed": "Ready",
    "Ready": "Failed",
    "DriftDetected": "DriftCleared",
    "DriftCleared": "DriftDetected",
}
ATTEMPTS = 3
SEND_CONCURRENCY = 8
"""POSTs in flight at once, over all targets."""
MAX_PENDING = 1000
"""Undelivered alerts kept for the next cycle; beyond, the oldest are dropped (counted)."""
RETRYABLE = frozenset({408, 429})
"""Client errors worth sending again (besides 5xx and no answer at all)."""

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
class AlertDecision:
    transition: Transition
    send: bool
    count: int
    resolves: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Post:
    """One alert for one target: sent now, or kept to be sent again after the next cycle."""

    url: str
    resource: str
    event: str
    body: Mapping[str, Any]
    attempts: int = 0
    """Cycles that tried it and failed."""

    @property
    def slot(self) -> tuple[str, str, str]:
        """A newer alert with the same slot replaces an undelivered one."""
        return (self.url, self.resource, self.event)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "resource": self.resource,
            "event": self.event,
            "body": dict(self.body),
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Post:
        return cls(
            str(data["url"]),
            str(data["resource"]),
            str(data["event"]),
            dict(data["body"]),
            int(data.get("attempts", 0)),
        )


class Ledger:
    """The last alert per (resource, event) — what was decided, how often it came back —
    and the alerts not delivered yet. Changed in memory; `save` writes it (once a cycle)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.pending: list[Post] = []
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                # Before pending alerts were kept the file was the entries alone.
                entries = data.get("alerts", data) if isinstance(data, dict) else {}
                self.entries = {k: v for k, v in entries.items() if "|" in k}
                self.pending = [Post.from_json(p) for p in data.get("pending", [])]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self.entries, self.pending = {}, []

    def decide(self, transition: Transition, now: datetime) -> AlertDecision:
        """Send it, or count it as a repeat of the alert still open."""
        key = f"{transition.resource}|{transition.event}"
        opposite = f"{transition.resource}|{OPPOSITE[transition.event]}"
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        last = self.entries.get(key)
        if last is not None and last["fingerprint"] == transition.fingerprint:
            last["count"] += 1
            last["last"] = stamp
            return AlertDecision(transition, send=False, count=last["count"])
        resolved = self.entries.pop(opposite, None)
        self.entries[key] = {
            "fingerprint": transition.fingerprint,
            "count": 1,
            "first": stamp,
            "last": stamp,
        }
        resolves = None
        if resolved:
            resolves = {"event": OPPOSITE[transition.event], "count": resolved["count"]}
        return AlertDecision(transition, send=True, count=1, resolves=resolves)

    def keep(self, posts: Iterable[Post]) -> list[Post]:
        """Keep undelivered `posts` for the next cycle (each replacing an older one of its
        slot); the ones pushed out by `MAX_PENDING`."""
        kept = {p.slot: p for p in self.pending}
        for post in posts:
            kept.pop(post.slot, None)  # the newest goes last
            kept[post.slot] = post
        ordered = list(kept.values())
        dropped = ordered[:-MAX_PENDING] if len(ordered) > MAX_PENDING else []
        self.pending = ordered[len(dropped) :]
        return dropped

    def take_pending(self) -> list[Post]:
        """The undelivered alerts, to be sent again (kept again if they fail)."""
        pending, self.pending = self.pending, []
        return pending

    def prune(self, resources: Iterable[str]) -> None:
        """Forget the alerts of resources not in `resources` (deleted ones)."""
        alive = set(resources)
        self.entries = {k: v for k, v in self.entries.items() if k.split("|", 1)[0] in alive}
        self.pending = [p for p in self.pending if p.resource in alive]

    def save(self) -> None:
        if self.path is None:
            return
        data = {"alerts": self.entries, "pending": [p.to_json() for p in self.pending]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)


def body_of(decision: AlertDecision, *, revision: str | None, now: datetime) -> dict[str, Any]:
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
        concurrency: int = SEND_CONCURRENCY,
    ) -> None:
        self.ledger = Ledger(state_dir / LEDGER if state_dir is not None else None)
        self.metrics = metrics
        self.timeout = timeout
        self.concurrency = concurrency

    async def cycle_done(
        self,
        targets: Sequence[NotificationTarget],
        before: Mapping[str, ResourceStatus],
        after: Mapping[str, ResourceStatus],
        *,
        revision: str | None,
        now: datetime | None = None,
    ) -> list[AlertDecision]:
        """Decide, send (what waited first, then this cycle's), keep what failed, write
        the ledger once."""
        now = now or datetime.now(UTC)
        decisions = [self.ledger.decide(t, now) for t in transitions(before, after)]
        by_url = {str(t.url): t for t in targets}
        # Alerts that waited go first; those for a target no longer declared go away.
        posts = [p for p in self.ledger.take_pending() if p.url in by_url]
        for decision in decisions:
            event = decision.transition.event
            if not decision.send:
                self._count(event, "repeated")
                continue
            body = body_of(decision, revision=revision, now=now)
            posts.extend(
                Post(url, decision.transition.resource, event, body)
                for url, target in by_url.items()
                if event in target.events
            )
        failed = await self._send_all(posts, by_url) if posts else []
        for post in self.ledger.keep(failed):
            log.warning("notification dropped: too many undelivered", url=post.url)
            self._count(post.event, "dropped")
        self.ledger.prune(after)
        self.ledger.save()
        return decisions

    async def _send_all(
        self, posts: list[Post], targets: Mapping[str, NotificationTarget]
    ) -> list[Post]:
        """Send `posts`, a resource's in order per target, at most `concurrency` at once;
        the ones to send again."""
        queues: dict[tuple[str, str], list[tuple[int, Post]]] = {}
        for index, post in enumerate(posts):
            queues.setdefault((post.url, post.resource), []).append((index, post))
        limit = asyncio.Semaphore(self.concurrency)
        retry: list[tuple[int, Post]] = []
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, limits=limits
        ) as client:

            async def in_order(queue: list[tuple[int, Post]]) -> None:
                for index, post in queue:
                    async with limit:
                        delivered = await self._post(client, targets[post.url], post)
                    if delivered is None:
                        retry.append((index, replace(post, attempts=post.attempts + 1)))

            async with asyncio.TaskGroup() as group:
                for queue in queues.values():
                    group.create_task(in_order(queue))
        return [post for _index, post in sorted(retry, key=lambda item: item[0])]

    async def _post(
        self, client: httpx.AsyncClient, target: NotificationTarget, post: Post
    ) -> bool | None:
        """True delivered, False refused (a 4xx: dropped), None failed (send again)."""
        data = json.dumps(post.body, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Reconciler-Event": post.event}
        url = post.url
        status: int | None = None
        error = ""
        try:
            if target.secret:
                headers[GENERIC_SIGNATURE] = hmac_signature(resolve(target.secret), data)
            for attempt in range(ATTEMPTS):
                try:
                    status = (await client.post(url, content=data, headers=headers)).status_code
                except httpx.HTTPError as exc:
                    status, error = None, REDACTOR.text(f"{type(exc).__name__}: {exc}")
                if status is not None and status < 500 and status not in RETRYABLE:
                    break
                if attempt + 1 < ATTEMPTS:
                    await asyncio.sleep(0.2 * 2**attempt)
        except Exception as exc:  # a secret that does not resolve, a bug: never fails a cycle
            status, error = None, REDACTOR.text(f"{type(exc).__name__}: {exc}")
        if status is not None and 200 <= status < 300:
            self._count(post.event, "sent")
            return True
        if status is not None and status < 500 and status not in RETRYABLE:
            log.warning("notification refused", url=url, status=status)
            self._count(post.event, "refused")
            return False
        log.warning(
            "notification failed: sent again after the next cycle",
            url=url,
            status=status,
            error=None if status is not None else error,
        )
        self._count(post.event, "failed")
        return None

    def _count(self, event: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.notifications.labels(event=event, result=result).inc()
