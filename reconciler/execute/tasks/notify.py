"""The notify task: a signed webhook POST.

Body (JSON)::

    {"event": "<point or notify>", "resource": {"key", "kind", "name"}, "stage",
     "point", "task", "plan", "message", "idempotencyKey"}

Headers: ``Content-Type: application/json``, ``Idempotency-Key``,
``X-Reconciler-Event`` and, when ``secret`` is given,
``X-Reconciler-Signature-256: sha256=<hex HMAC-SHA256 of the exact body bytes>``
(the GitHub convention). Any 2xx is done; 408/425/429/5xx and transport errors
are retried; other statuses fail. The message is rendered without secure params.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from reconciler.execute.context import Outcome, RunState, TaskContext
from reconciler.execute.tasks.web import client_for, send, status_error
from reconciler.execute.template import render_str
from reconciler.model.tasks import NotifyTask
from reconciler.secrets import resolve

SIGNATURE_HEADER = "X-Reconciler-Signature-256"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(task: NotifyTask, ctx: TaskContext) -> dict[str, object]:
    message = render_str(task.message, ctx.template_vars(), where="message", secrets="refuse")
    return {
        "event": ctx.point or "notify",
        "resource": {
            "key": ctx.resource_key,
            "kind": ctx.resource_kind,
            "name": ctx.resource_name,
        },
        "stage": ctx.stage,
        "point": ctx.point,
        "task": task.name,
        "plan": ctx.plan_hash,
        "message": message,
        "idempotencyKey": ctx.idempotency_key,
    }


async def attempt(task: NotifyTask, ctx: TaskContext, run: RunState) -> Outcome:
    body = json.dumps(payload(task, ctx), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": ctx.idempotency_key,
        "X-Reconciler-Event": ctx.point or "notify",
    }
    if task.secret:
        headers[SIGNATURE_HEADER] = signature(resolve(task.secret, base_dir=ctx.repo_dir), body)
    url = str(task.url)
    run.activity = f"notifying {url}"
    async with client_for(ctx) as client:
        response = await send(
            client, ctx.log, "POST", url, headers=headers, content=body, deadline=run.deadline
        )
    if not 200 <= response.status_code < 300:
        raise status_error(response, f"POST {url}")
    return Outcome(f"notified {url}: {response.status_code}", {"statusCode": response.status_code})
