"""Git push webhooks: verify who sent it, then decide whether it concerns the tracked branch.

Sits at the server's edge, ahead of the scheduler: `POST /api/v1/webhooks/{source}`
hands the raw body and headers to `receive`, and only a verified push to the
tracked branch asks for a cycle (an immediate fetch). Pure: no I/O, no clock.

Sources and what proves the sender knows the shared secret (`webhook_secret`):

- `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
  `X-GitHub-Event: push` (a `ping` is answered, nothing else is done);
- `gitlab`: `X-Gitlab-Token: <the secret>`; `X-Gitlab-Event: Push Hook`;
- `generic`: `X-Reconciler-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
  (the convention of our own notify task); body `{"ref": "refs/heads/main"}` or
  `{"branch": "main"}`, or no branch at all to mean "fetch now".

Every comparison is constant-time (`hmac.compare_digest`). A missing or wrong
signature, or no secret configured, is refused; the caller answers 401 and does
nothing else. A verified body nested deeper than `MAX_JSON_DEPTH` is invalid (the
caller answers 400): `load_json` counts the depth before `json.loads` would recurse.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SOURCES = ("github", "gitlab", "generic")
GENERIC_SIGNATURE = "X-Reconciler-Signature-256"

Verdict = Literal["push", "ignored", "refused", "invalid"]

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a JSON body of the API may have (as YAML's limit)."""

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class JsonTooDeep(ValueError):
    """A JSON body nested deeper than the limit (before parsing it could exhaust the stack)."""


def json_depth(body: bytes, *, stop_after: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in `body` (strings skipped), counted without
    parsing; counting stops once past `stop_after`."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > stop_after:
                break
    return deepest


def load_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads(body)` for a body of the API: `JsonTooDeep` past `max_depth` levels,
    `ValueError` when it is not JSON."""
    if json_depth(body, stop_after=max_depth) > max_depth:
        raise JsonTooDeep(f"the JSON body is nested deeper than {max_depth} levels")
    return json.loads(body)


@dataclass(frozen=True)
class WebhookOutcome:
    """What to do with one webhook delivery, and why (the reason goes in the answer)."""

    verdict: Verdict
    reason: str
    branch: str | None = None
    revision: str | None = None


def hmac_signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: what GitHub sends in X-Hub-Signature-256 (and the generic source)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _signed(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(hmac_signature(secret, body).encode(), given.strip().encode())


def verify(source: str, secret: str | None, headers: Mapping[str, str], body: bytes) -> bool:
    """True only when the delivery proves knowledge of `secret`."""
    if not secret:
        return False
    if source == "github":
        return _signed(secret, body, _header(headers, "X-Hub-Signature-256"))
    if source == "gitlab":
        token = _header(headers, "X-Gitlab-Token")
        return token is not None and hmac.compare_digest(token.encode(), secret.encode())
    if source == "generic":
        return _signed(secret, body, _header(headers, GENERIC_SIGNATURE))
    return False


def _branch_of(ref: Any) -> str | None:
    if isinstance(ref, str) and ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return None


def receive(
    source: str,
    secret: str | None,
    headers: Mapping[str, str],
    body: bytes,
    *,
    branch: str,
    pinned: bool = False,
) -> WebhookOutcome:
    """Verify a delivery and decide: a push to `branch` (fetch now), ignored, or refused.

    `pinned` (the controller follows a tag or commit, `ref`) makes any push worth a
    fetch: the pin may be a tag that moved.
    """
    if source not in SOURCES:
        return WebhookOutcome("refused", f"unknown webhook source {source!r}")
    if not secret:
        return WebhookOutcome("refused", "no webhook secret is configured (webhook_secret)")
    if not verify(source, secret, headers, body):
        return WebhookOutcome("refused", "missing or invalid signature")
    if source == "github":
        event = _header(headers, "X-GitHub-Event") or "push"
        if event == "ping":
            return WebhookOutcome("ignored", "pong")
        if event != "push":
            return WebhookOutcome("ignored", f"event {event!r} is not a push")
    if source == "gitlab":
        event = _header(headers, "X-Gitlab-Event") or "Push Hook"
        if event not in ("Push Hook", "Tag Push Hook"):
            return WebhookOutcome("ignored", f"event {event!r} is not a push")
    try:
        payload = load_json(body or b"{}")
    except JsonTooDeep as exc:
        return WebhookOutcome("invalid", str(exc))
    except ValueError:
        return WebhookOutcome("ignored", "body is not JSON")
    if not isinstance(payload, dict):
        return WebhookOutcome("ignored", "body is not a JSON object")
    ref = payload.get("ref")
    pushed = _branch_of(ref)
    if source == "generic" and pushed is None:
        pushed = payload.get("branch") if isinstance(payload.get("branch"), str) else None
        if pushed is None and ref is None:
            return WebhookOutcome("push", "fetch requested", branch=None)
    revision = payload.get("after") or payload.get("checkout_sha") or payload.get("revision")
    revision = revision if isinstance(revision, str) else None
    if pinned:
        return WebhookOutcome("push", "push (a pinned ref is followed)", pushed, revision)
    if pushed != branch:
        what = f"branch {pushed!r}" if pushed else f"ref {ref!r}"
        return WebhookOutcome("ignored", f"push to {what}, not the tracked branch {branch!r}")
    return WebhookOutcome("push", f"push to {branch}", pushed, revision)
