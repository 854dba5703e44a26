"""The http task: one call, and a long-running operation followed to its end.

"200 OK is not request complete". The call is sent with ``Idempotency-Key`` (the
task's key, the same on every retry and after a restart) and a JSON body. Then:

- a status outside ``expectStatus``: 408/425/429/5xx are retried (honouring
  ``Retry-After``), other statuses fail the task;
- ``202 Accepted`` with ``Operation-Location`` or ``Location``: the operation URL
  is acknowledged (the journal records it as the operation id) and polled with GET,
  every ``Retry-After`` or ``poll.interval``, until the JSON ``poll.statusField`` is
  in ``poll.success`` (done) or ``poll.failure`` (failed). A poll answered with a
  5xx or 429 is retried like a call; polling never re-sends the original request.
- ``202`` without an operation URL but with a non-terminal status field: the task
  URL itself is polled with GET.
- any other expected status: done.

When the context carries an operation id (acknowledged before a restart), the
call is not sent again: polling resumes at that URL. Everything is bounded by the
task's deadline. Secrets: ``auth`` and secret-looking headers take references,
resolved here; ``${params.X}`` of a secure param is resolved in URL, headers and body.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urljoin

import httpx

from reconciler.errors import PermanentError, WaitingError
from reconciler.execute.context import Outcome, RunState, TaskContext
from reconciler.execute.tasks.web import (
    client_for,
    is_secret_header,
    json_body,
    retry_after_seconds,
    send,
    status_error,
)
from reconciler.execute.template import TemplateVars, render, render_str
from reconciler.model.common import is_secret_ref
from reconciler.model.tasks import HttpTask
from reconciler.secrets import REDACTOR, basic_auth, resolve

_MISSING = object()
OUTPUT_BODY_LIMIT = 64 * 1024


def dotted(data: Any, path: str) -> Any:
    """The value at a dotted path in JSON-like data, or `_MISSING`."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def request_headers(task: HttpTask, ctx: TaskContext, tvars: TemplateVars) -> dict[str, str]:
    headers: dict[str, str] = {"Accept": "application/json"}
    for name, value in task.headers.items():
        if is_secret_header(name) and is_secret_ref(value):
            headers[name] = resolve(value, base_dir=ctx.repo_dir)
        else:
            headers[name] = render_str(value, tvars, where=f"headers.{name}", secrets="resolve")
    if task.auth is not None and task.auth.bearer:
        headers["Authorization"] = f"Bearer {resolve(task.auth.bearer, base_dir=ctx.repo_dir)}"
    elif task.auth is not None and task.auth.username and task.auth.password:
        user = render_str(task.auth.username, tvars, where="auth.username", secrets="refuse")
        password = resolve(task.auth.password, base_dir=ctx.repo_dir)
        headers["Authorization"] = basic_auth(user, password)
    headers["Idempotency-Key"] = ctx.idempotency_key
    return headers


def _outputs(response: httpx.Response) -> dict[str, Any]:
    body = json_body(response)
    if body is None and response.content:
        body = response.text
    if body is not None and len(json.dumps(body, default=str)) > OUTPUT_BODY_LIMIT:
        body = f"<{len(response.content)} bytes, see the task log>"
    return {"statusCode": response.status_code, "body": REDACTOR.data(body)}


def _operation_url(response: httpx.Response, request_url: str) -> str | None:
    location = response.headers.get("operation-location")
    if location is None and response.status_code == 202:
        location = response.headers.get("location")
    return urljoin(request_url, location) if location else None


def _status_of(task: HttpTask, body: Any) -> Any:
    return dotted(body, task.poll.status_field) if isinstance(body, dict) else _MISSING


async def attempt(task: HttpTask, ctx: TaskContext, run: RunState) -> Outcome:
    tvars = ctx.template_vars()
    headers = request_headers(task, ctx, tvars)
    async with client_for(ctx) as client:
        if run.operation_id is not None:
            return await _poll(task, ctx, run, client, headers)
        url = render_str(task.url, tvars, where="url", secrets="resolve")
        shown_url = REDACTOR.text(url)
        content = None
        if task.body is not None:
            body = render(task.body, tvars, where="body", secrets="resolve")
            content = json.dumps(body, default=str).encode()
            headers["Content-Type"] = "application/json"
        run.activity = f"calling {task.method} {shown_url}"
        response = await send(
            client,
            ctx.log,
            task.method,
            url,
            headers=headers,
            content=content,
            deadline=run.deadline,
        )
        if response.status_code not in task.expect_status:
            raise status_error(response, f"{task.method} {shown_url}")
        operation = _operation_url(response, url)
        if operation is None and response.status_code == 202:
            status = _status_of(task, json_body(response))
            if status is not _MISSING and status not in task.poll.success:
                _raise_if_failed(task, status, shown_url)
                operation = url
        if operation is None:
            return Outcome(f"{task.method} {shown_url}: {response.status_code}", _outputs(response))
        run.acknowledge(ctx, operation)
        run.activity = f"polling {REDACTOR.text(operation)}"
        raise WaitingError(
            f"operation {operation} accepted",
            poll_after=_poll_after(task, response),
        )


def _poll_after(task: HttpTask, response: httpx.Response) -> float:
    hint = retry_after_seconds(response.headers.get("retry-after"))
    return task.poll.interval if hint is None else hint


def _raise_if_failed(task: HttpTask, status: Any, where: str) -> None:
    if status in task.poll.failure:
        raise PermanentError(f"operation {where} ended in {task.poll.status_field}={status!r}")


async def _poll(
    task: HttpTask,
    ctx: TaskContext,
    run: RunState,
    client: httpx.AsyncClient,
    headers: dict[str, str],
) -> Outcome:
    url = run.operation_id or ""
    shown = REDACTOR.text(url)
    run.activity = f"polling {shown}"
    response = await send(client, ctx.log, "GET", url, headers=headers, deadline=run.deadline)
    if response.status_code in (404, 410):
        raise PermanentError(f"operation {shown} is gone ({response.status_code})")
    if response.status_code >= 400:
        raise status_error(response, f"polling {shown}")
    status = _status_of(task, json_body(response))
    if status in task.poll.success:
        return Outcome(f"operation {shown}: {status}", _outputs(response))
    _raise_if_failed(task, status, shown)
    shown_status = "<no status field>" if status is _MISSING else repr(status)
    run.activity = f"polling {shown} (last {task.poll.status_field}={shown_status})"
    raise WaitingError(
        f"operation {shown} is {shown_status}", poll_after=_poll_after(task, response)
    )
