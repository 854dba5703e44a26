"""HTTP plumbing shared by the http and notify runners: send, log, classify, Retry-After.

The edge where httpx exceptions become `reconciler.errors` types: transport
failures and 408/425/429/5xx are temporary (with the remote's ``Retry-After``),
other 4xx are permanent. Each exchange is written to the task log with secret
headers shown as ``***`` (and every resolved secret value redacted by the log).
Bodies are redacted *before* they are cut (`REDACTOR.truncate`): a secret that
straddles a cut would otherwise leave its first characters behind.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.execute.context import TaskContext
from reconciler.execute.tasklog import TaskLog
from reconciler.secrets import REDACTED, REDACTOR, is_secret_header

LOGGED_BODY_LIMIT = 4096
ERROR_SNIPPET_LIMIT = 300
TEMPORARY_STATUS = frozenset({408, 425, 429})


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _shown(text: str) -> str:
    shown = REDACTOR.truncate(text, LOGGED_BODY_LIMIT)
    return shown if len(text) <= LOGGED_BODY_LIMIT else f"{shown} ({len(text)} characters)"


def log_headers(log: TaskLog, prefix: str, headers: httpx.Headers) -> None:
    for name, value in headers.items():
        log.write(f"{prefix} {name}: {REDACTED if is_secret_header(name) else value}")


@asynccontextmanager
async def client_for(ctx: TaskContext) -> AsyncIterator[httpx.AsyncClient]:
    """The shared client from the context, or a short-lived one."""
    if ctx.http_client is not None:
        yield ctx.http_client
    else:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            yield client


async def send(
    client: httpx.AsyncClient,
    log: TaskLog,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
    deadline: float,
) -> httpx.Response:
    """One exchange, logged; transport failures become `TemporaryError`/`PermanentError`."""
    remaining = max(0.001, deadline - asyncio.get_running_loop().time())
    request = client.build_request(
        method, url, headers=headers, content=content, timeout=httpx.Timeout(remaining)
    )
    log.event(f"> {method} {url}")
    log_headers(log, ">", request.headers)
    if content:
        log.write(f"> {_shown(content.decode('utf-8', 'replace'))}")
    try:
        response = await client.send(request)
    except httpx.TimeoutException as exc:
        raise TemporaryError(f"{method} {url}: timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise TemporaryError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    except httpx.HTTPError as exc:
        raise PermanentError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    log.event(f"< {response.status_code} {response.reason_phrase}")
    log_headers(log, "<", response.headers)
    if response.content:
        log.write(f"< {_shown(response.text)}")
    return response


def status_error(response: httpx.Response, what: str) -> ReconcilerError:
    """The typed error for an unexpected status: temporary for 408/425/429/5xx."""
    code = response.status_code
    snippet = REDACTOR.truncate(response.text, ERROR_SNIPPET_LIMIT).strip()
    text = REDACTOR.text(f"{what} answered {code} {response.reason_phrase}")
    text += f": {snippet}" if snippet else ""
    if code in TEMPORARY_STATUS or code >= 500:
        return TemporaryError(
            text, retry_after=retry_after_seconds(response.headers.get("retry-after"))
        )
    return PermanentError(text)


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON body, or None when there is none (or it is not JSON)."""
    if not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
