"""The generic REST provider (type ``http``): any JSON API, mapped declaratively.

An edge of the flow (behind `reconciler.providers.base.Provider`): how a team
plugs an in-house API in without writing Python. The Provider document's
``spec.settings`` says which request observes, creates, updates and deletes a
resource, and which JSON fields are observed; `RestSettings` below is the schema
(validated when the provider opens: a `PermanentError` naming the setting).
httpx exceptions and HTTP statuses become `reconciler.errors` here.

Templates. URLs, headers and string values in bodies may hold ``{name}``,
``{key}``, ``{kind}``, ``{repository}``, ``{managedBy}``, ``{idempotencyKey}``,
``{params.X}``, ``{declared.X}``, ``{labels.X}`` and ``{args.X}`` (dotted paths
go deeper). In a URL the value is percent-encoded. A body string that is exactly
one placeholder takes the value with its JSON type (a number stays a number).
A placeholder with no value is a `PermanentError`, never an empty string.

Paths select JSON fields: ``$`` (the whole document), ``$.status.power``,
``$.items[0]``, ``$.labels['reconciler/key']``, ``$.nics[*].mac``.

Calls and their semantics (Pulumi style):

- `observe`: one GET per resource (``observe``), concurrently within the limits.
  A status in ``observe.absent`` (default 404) is ``exists=False``; 2xx gives the
  ``observe.select`` fields (the whole body if none are given); anything else
  makes that resource unknown (all of them failing: the error is raised).
- `list_owned`: ``list`` pages through a collection — a next link in the body
  (``list.next``), an RFC 8288 ``Link: rel="next"`` header, or a page number
  parameter (``list.pageParam``, until an empty page) — and keeps the items whose
  ``list.key`` is set (and whose ``list.repository`` is ours, when given). Any
  failing page raises: never a partial list. Without ``list``: empty.
- `discover`: the same pages; the items with no ``list.key`` (nobody's), named by
  ``list.name`` (default ``$.name``, else ``$.id``), for the discovery inbox.
- `start`: ``create`` (create), ``update`` (update, configure, resize; PATCH by
  default), ``delete`` (delete, decommission) or ``actions[name]``. Every
  mutating request carries ``Idempotency-Key``, and a key already used returns
  the recorded operation without a request (``<state_dir>/http-<name>.db``).
  A 2xx completes at once; ``202 Accepted`` with ``Location`` is an operation to
  poll; 409 on create is "already exists" and 404 on delete "already absent",
  both successes. 429 and 503 are retried within the call after their
  ``Retry-After`` (capped by ``maxRetryAfter``), then raised as `TemporaryError`
  with the hint; other 5xx and network errors raise `TemporaryError` at once
  (the API may or may not have acted: the executor retries with the same key);
  other 4xx raise `PermanentError`.
- `poll`: GET the operation's URL. 200 reads ``operation.status``: a value in
  ``operation.success`` succeeds, in ``operation.failure`` fails (with
  ``operation.message``), anything else is running; a 200 without that field,
  a 201 or a 303 succeeds; 202 is running; 404/410 fails (the API forgot it).
  GETs are retried within the call like above.
- `cancel`: ``operation.cancel`` (a request template with ``{operation}``, the
  operation URL) when given; otherwise False.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote, urljoin

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.model.common import Duration
from reconciler.model.kinds import ProviderSpec
from reconciler.providers.base import (
    MANAGED_BY,
    ActionRequest,
    Discovered,
    Observation,
    ObservationResult,
    ObservationUnknown,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    OwnedResource,
    ProviderContext,
    ResourceRef,
)
from reconciler.providers.support import (
    Gate,
    KeyedLocks,
    OperationRecord,
    OperationStore,
    credential,
    existing_operation,
    is_tls_failure,
    scrub,
    tls_message,
    tls_verify,
)
from reconciler.secrets import REDACTOR

log = structlog.get_logger("reconciler.providers.rest")

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

_PATH_TOKEN = re.compile(
    r"\.(?P<name>[A-Za-z0-9_@$\-]+)|\[(?P<index>-?\d+)\]|\[\s*'(?P<sq>[^']*)'\s*\]"
    r"|\[\s*\"(?P<dq>[^\"]*)\"\s*\]|(?P<star>\[\*\]|\.\*)"
)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")
_MISSING = object()


def parse_path(path: str) -> tuple[tuple[str, Any], ...]:
    """``$.a.b[0]['c/d'][*]`` -> steps; ValueError naming the bad part."""
    if not path.startswith("$"):
        raise ValueError(f"a path starts with $: {path!r}")
    steps: list[tuple[str, Any]] = []
    pos = 1
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if match is None:
            raise ValueError(f"cannot read path {path!r} at {path[pos:]!r}")
        if match["name"] is not None:
            steps.append(("key", match["name"]))
        elif match["index"] is not None:
            steps.append(("index", int(match["index"])))
        elif match["star"] is not None:
            steps.append(("all", None))
        else:
            steps.append(("key", match["sq"] if match["sq"] is not None else match["dq"]))
        pos = match.end()
    return tuple(steps)


def select(document: Any, path: str) -> Any:
    """The value at a path, None when any step is missing; ``[*]`` maps over lists."""

    def walk(node: Any, steps: Sequence[tuple[str, Any]]) -> Any:
        for i, (kind, arg) in enumerate(steps):
            if kind == "all":
                if not isinstance(node, list):
                    return None
                return [walk(item, steps[i + 1 :]) for item in node]
            if kind == "key":
                if not isinstance(node, Mapping) or arg not in node:
                    return None
                node = node[arg]
            else:
                if not isinstance(node, list) or not -len(node) <= arg < len(node):
                    return None
                node = node[arg]
        return node

    return walk(document, parse_path(path))


def _check_path(value: str | None) -> str | None:
    if value is not None:
        parse_path(value)
    return value


class _Settings(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class RequestSpec(_Settings):
    """One HTTP request: method, URL template (relative to the endpoint), body, headers."""

    method: Method = "POST"
    url: str
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)


class UpdateSpec(RequestSpec):
    method: Method = "PATCH"


class DeleteSpec(RequestSpec):
    method: Method = "DELETE"


class ObserveSpec(_Settings):
    method: Method = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    select: dict[str, str] = Field(
        default_factory=dict, description="observed field (dotted) -> path in the response"
    )
    absent: list[int] = Field(default_factory=lambda: [404])

    @field_validator("select")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value.values():
            parse_path(path)
        return value


class ListSpec(_Settings):
    url: str
    items: str = "$"
    key: str = Field(description="path to the item's reconciler key (Kind/name)")
    repository: str | None = None
    select: dict[str, str] = Field(default_factory=dict)
    next: str | None = Field(default=None, description="path to the next page's URL")
    name: str | None = Field(
        default=None, description="path to an item's name, for discovery ($.name, else $.id)"
    )
    page_param: str | None = None
    page_start: int = 1
    max_pages: int = Field(default=10_000, ge=1)

    @field_validator("items", "key", "repository", "next", "name")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return _check_path(value)

    @field_validator("select")
    @classmethod
    def _select_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value.values():
            parse_path(path)
        return value


class OperationSpec(_Settings):
    status: str = "$.status"
    success: list[str] = Field(
        default_factory=lambda: ["succeeded", "success", "done", "completed"]
    )
    failure: list[str] = Field(default_factory=lambda: ["failed", "error", "cancelled"])
    message: str | None = "$.message"
    progress: str | None = None
    cancel: RequestSpec | None = None

    @field_validator("status", "message", "progress")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return _check_path(value)


class AuthSpec(_Settings):
    """bearer: credentials.token; basic: credentials.username/password; header:
    credentials.token in the header named ``header``."""

    type: Literal["bearer", "basic", "header", "none"] = "none"
    header: str = "X-API-Key"


class RestSettings(_Settings):
    """``spec.settings`` of a Provider of type ``http`` (see docs/providers.md)."""

    observe: ObserveSpec
    create: RequestSpec | None = None
    update: UpdateSpec | None = None
    delete: DeleteSpec | None = None
    actions: dict[str, RequestSpec] = Field(default_factory=dict)
    list: ListSpec | None = None
    operation: OperationSpec = Field(default_factory=OperationSpec)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: AuthSpec | None = None
    timeout: Duration = 30.0
    max_retries: int = Field(default=3, ge=0, le=20)
    max_retry_after: Duration = 30.0


ACTION_SECTIONS = {
    "create": "create",
    "update": "update",
    "configure": "update",
    "resize": "update",
    "delete": "delete",
    "decommission": "delete",
}


def load_settings(context: ProviderContext) -> RestSettings:
    """The validated settings; PermanentError listing each problem as ``settings.a.b: …``."""
    try:
        return RestSettings.model_validate(dict(context.spec.settings))
    except ValidationError as exc:
        problems = "; ".join(
            f"settings.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise PermanentError(f"provider {context.name} (http): {problems}") from None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RestProvider:
    """A JSON API behind the provider protocol (see the module docstring)."""

    @classmethod
    def observed_fields(cls, spec: ProviderSpec) -> Mapping[str, frozenset[str]] | None:
        """What `observe.select` maps, for every kind; None (anything) without a select or
        with settings that do not validate (opening the provider reports them)."""
        try:
            settings = RestSettings.model_validate(dict(spec.settings))
        except ValidationError:
            return None
        if not settings.observe.select:
            return None
        fields = frozenset(settings.observe.select)
        return {kind: fields for kind in ("Machine", "Instance", "Resource")}

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self.context = context
        self.repository = context.repository
        self.settings = load_settings(context)
        if not context.spec.endpoint:
            raise PermanentError(f"provider {self.name} (http): spec.endpoint is required")
        self._base = context.spec.endpoint.rstrip("/") + "/"
        verify = tls_verify(context)
        headers = {"Accept": "application/json", **self.settings.headers}
        auth: httpx.Auth | None = None
        mode = self.settings.auth.type if self.settings.auth else _default_auth(context)
        if mode == "bearer":
            headers["Authorization"] = f"Bearer {credential(context, 'token', required=True)}"
        elif mode == "header":
            assert self.settings.auth is not None
            headers[self.settings.auth.header] = str(credential(context, "token", required=True))
        elif mode == "basic":
            auth = httpx.BasicAuth(
                str(credential(context, "username", required=True)),
                str(credential(context, "password", required=True)),
            )
        self._http = httpx.AsyncClient(
            base_url=self._base,
            headers=headers,
            auth=auth,
            timeout=self.settings.timeout,
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            follow_redirects=False,
        )
        self._gate = Gate.from_context(context)
        self._store = OperationStore(context.state_dir / f"http-{context.name}.db")
        self._key_locks = KeyedLocks()

    # --- requests ---------------------------------------------------------------------

    def _values(self, ref: ResourceRef, request: ActionRequest | None = None) -> dict[str, Any]:
        return {
            "name": ref.name,
            "key": ref.key,
            "kind": ref.kind,
            "repository": self.repository,
            "managedBy": MANAGED_BY,
            "idempotencyKey": request.idempotency_key if request else None,
            "params": dict(ref.params),
            "declared": dict(ref.declared),
            "labels": dict(ref.labels),
            "args": dict(request.args) if request else {},
        }

    async def _send(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_server_errors: bool,
    ) -> httpx.Response:
        """One request, retried within the call on 429/503 (after Retry-After) and, for
        reads, on other 5xx and network errors; what is left is raised, typed."""
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                async with self._gate.slot():
                    response = await self._http.request(
                        method, url, json=body, headers=dict(headers or {})
                    )
            except httpx.TransportError as exc:
                if is_tls_failure(exc):
                    raise PermanentError(tls_message(f"http: {method} {url}", exc)) from None
                if retry_server_errors and not last:
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                where = self._http.base_url.join(url)  # the full URL: which host failed
                raise TemporaryError(
                    f"http: {method} {where}: {scrub(exc) or type(exc).__name__}"
                ) from None
            status = response.status_code
            if status in (429, 503):
                wait = retry_after(response)
                if not last and (wait is None or wait <= self.settings.max_retry_after):
                    await asyncio.sleep(wait if wait is not None else min(0.2 * 2**attempt, 5.0))
                    continue
                raise TemporaryError(
                    f"http: {method} {url}: {status} {response.reason_phrase}", retry_after=wait
                )
            if status >= 500:
                if retry_server_errors and not last:
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                raise TemporaryError(f"http: {method} {url}: {status} {_snippet(response)}")
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _url(self, template: str, values: Mapping[str, Any]) -> str:
        return _render(template, values, quote_values=True)

    # --- the protocol -----------------------------------------------------------------

    async def observe(self, resources: Sequence[ResourceRef]) -> Mapping[str, ObservationResult]:
        spec = self.settings.observe

        async def one(ref: ResourceRef) -> ObservationResult:
            values = self._values(ref)
            url = self._url(spec.url, values)
            headers = {k: _render(v, values) for k, v in spec.headers.items()}
            response = await self._send(spec.method, url, headers=headers, retry_server_errors=True)
            if response.status_code in spec.absent:
                return Observation(ref.key, False, {})
            if not response.is_success:
                raise PermanentError(
                    f"http: GET {url}: {response.status_code} {_snippet(response)}"
                )
            document = _json(response)
            if not spec.select:
                fields = dict(document) if isinstance(document, Mapping) else {"body": document}
            else:
                fields = _select_fields(document, spec.select)
            return Observation(ref.key, True, fields)

        results = await asyncio.gather(*(one(r) for r in resources), return_exceptions=True)
        out: dict[str, ObservationResult] = {}
        failures: list[ReconcilerError] = []
        for ref, result in zip(resources, results, strict=True):
            if isinstance(result, ReconcilerError):
                failures.append(result)
                out[ref.key] = ObservationUnknown(ref.key, scrub(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                out[ref.key] = result
        if resources and len(failures) == len(resources):
            raise failures[0]
        return out

    async def _pages(self, spec: ListSpec) -> AsyncIterator[list[Any]]:
        """The items of every page of the `list` collection; any failing page raises."""
        values = {"repository": self.repository, "managedBy": MANAGED_BY}
        url: str | None = self._url(spec.url, values)
        page = spec.page_start
        for _ in range(spec.max_pages):
            assert url is not None
            request_url = url
            if spec.page_param:
                request_url = _with_param(url, spec.page_param, page)
            response = await self._send("GET", request_url, retry_server_errors=True)
            if not response.is_success:
                raise PermanentError(
                    f"http: GET {request_url}: {response.status_code} {_snippet(response)}"
                )
            document = _json(response)
            items = select(document, spec.items)
            if not isinstance(items, list):
                raise PermanentError(f"http: GET {request_url}: {spec.items} is not a list")
            yield items
            next_url: str | None = None
            if spec.next:
                link = select(document, spec.next)
                next_url = str(link) if link else None
            elif "next" in response.links:
                next_url = response.links["next"].get("url")
            elif spec.page_param:
                next_url = url if items else None
                page += 1
            if not next_url:
                return
            url = urljoin(str(response.request.url), next_url) if next_url != url else url
        raise PermanentError(
            f"http: {spec.url}: more than {spec.max_pages} pages; not listing part"
        )

    async def list_owned(self) -> Sequence[OwnedResource]:
        spec = self.settings.list
        if spec is None:
            return []
        owned: list[OwnedResource] = []
        async for items in self._pages(spec):
            for item in items:
                key = select(item, spec.key)
                if not isinstance(key, str) or not key:
                    continue
                repository = select(item, spec.repository) if spec.repository else self.repository
                if repository != self.repository:
                    continue
                kind, _, name = key.partition("/")
                fields = _select_fields(item, spec.select) if spec.select else {}
                owned.append(
                    OwnedResource(key, kind, name or key, self.repository, {}, fields, self.name)
                )
        return sorted(owned, key=lambda o: o.key)

    async def discover(self, declared: Sequence[ResourceRef]) -> Sequence[Discovered]:
        """The `list` collection's items that carry no reconciler key (nobody's: an item
        with a key is ours — declared or an orphan — or, with `list.repository`, another
        repository's). Named by `list.name` (default `$.name`, else `$.id`). Without
        `list`: nothing. Any failing page raises."""
        spec = self.settings.list
        if spec is None:
            return []
        found: list[Discovered] = []
        async for items in self._pages(spec):
            for item in items:
                key = select(item, spec.key)
                if isinstance(key, str) and key:
                    continue
                name = _item_name(item, spec.name)
                fields = _select_fields(item, spec.select) if spec.select else item
                identity = {"id": name} if name else {}
                found.append(Discovered("Resource", name, identity, fields, self.name))
        return sorted(found, key=lambda d: d.name)

    def _request_spec(self, action: str) -> RequestSpec:
        if action in self.settings.actions:
            return self.settings.actions[action]
        section = ACTION_SECTIONS.get(action)
        spec = getattr(self.settings, section) if section else None
        if spec is None:
            known = sorted(
                {
                    *self.settings.actions,
                    *(a for a, s in ACTION_SECTIONS.items() if getattr(self.settings, s)),
                }
            )
            raise PermanentError(
                f"http: provider {self.name} maps no request to action {action!r}; "
                f"known: {', '.join(known) or 'none'}"
            )
        return spec

    async def start(self, request: ActionRequest) -> OperationHandle:
        spec = self._request_spec(request.action)
        async with self._key_locks.hold(request.idempotency_key):
            record = existing_operation(self._store, request)
            if record is not None:
                return record.handle(self.name)
            record = await self._start(spec, request)
            self._store.put(record)
            log.info(
                "http action started",
                provider=self.name,
                key=request.key,
                action=request.action,
                operation=record.operation_id,
                phase=record.phase.value,
            )
            return record.handle(self.name)

    async def _start(self, spec: RequestSpec, request: ActionRequest) -> OperationRecord:
        ref = request.resource
        values = self._values(ref, request)
        url = self._url(spec.url, values)
        if spec.body is not None:
            body = _render_json(spec.body, values)
        elif spec.method in ("POST", "PUT", "PATCH"):
            body = {"name": ref.name, **dict(ref.declared)}
        else:
            body = None
        headers = {
            **{k: _render(v, values) for k, v in spec.headers.items()},
            "Idempotency-Key": request.idempotency_key,
        }
        response = await self._send(
            spec.method, url, body=body, headers=headers, retry_server_errors=False
        )
        op_id = (
            "http-"
            + hashlib.sha256(f"{self.name}\0{request.idempotency_key}".encode()).hexdigest()[:24]
        )
        base = OperationRecord(
            op_id, request.idempotency_key, ref.key, request.action, started_at=time.time()
        )
        status = response.status_code
        section = ACTION_SECTIONS.get(request.action)
        if status == 202:
            location = response.headers.get("Location")
            if not location:
                return _finished(
                    base, OperationPhase.SUCCEEDED, "accepted; the API gave no operation to follow"
                )
            location = urljoin(str(response.request.url), location)
            data = {"location": location, "request": f"{spec.method} {url}"}
            return OperationRecord(
                op_id, request.idempotency_key, ref.key, request.action, OperationPhase.RUNNING,
                "accepted", data, base.started_at,
            )  # fmt: skip
        if response.is_success or status in (301, 302, 303):
            body_json = _json(response, default={})
            result = dict(body_json) if isinstance(body_json, Mapping) else {}
            return _finished(base, OperationPhase.SUCCEEDED, f"{status}", result)
        if status == 409 and section == "create":
            return _finished(base, OperationPhase.SUCCEEDED, "already exists")
        if status in (404, 410) and section == "delete":
            return _finished(base, OperationPhase.SUCCEEDED, "already absent")
        raise PermanentError(f"http: {spec.method} {url}: {status} {_snippet(response)}")

    async def poll(self, handle: OperationHandle) -> OperationStatus:
        record = self._store.get(handle.operation_id)
        if record is None:
            raise PermanentError(f"http: no operation {handle.operation_id}")
        if record.phase.done:
            return record.status()
        location = str(record.data["location"])
        spec = self.settings.operation
        response = await self._send("GET", location, retry_server_errors=True)
        status = response.status_code
        if status in (404, 410):
            record = self._store.finish(
                record, OperationPhase.FAILED, f"the API no longer knows {location}"
            )
            return record.status()
        if status == 202:
            wait = retry_after(response)
            hint = f"; the API asks to poll again in {wait:.0f}s" if wait else ""
            return OperationStatus(
                record.operation_id, OperationPhase.RUNNING, 0.0, "running" + hint
            )
        if status in (201, 303):
            return self._store.finish(record, OperationPhase.SUCCEEDED, str(status)).status()
        if not response.is_success:
            raise PermanentError(f"http: GET {location}: {status} {_snippet(response)}")
        document = _json(response, default={})
        state = select(document, spec.status)
        message = select(document, spec.message) if spec.message else None
        if state is None:
            return self._store.finish(record, OperationPhase.SUCCEEDED, "done").status()
        state_text = str(state).lower()
        if state_text in {s.lower() for s in spec.success}:
            result = dict(document) if isinstance(document, Mapping) else {}
            return self._store.finish(
                record, OperationPhase.SUCCEEDED, str(message or state), result=result
            ).status()
        if state_text in {s.lower() for s in spec.failure}:
            return self._store.finish(record, OperationPhase.FAILED, str(message or state)).status()
        progress = select(document, spec.progress) if spec.progress else None
        try:
            fraction = min(0.99, max(0.0, float(progress))) if progress is not None else 0.0
        except (TypeError, ValueError):
            fraction = 0.0
        return OperationStatus(
            record.operation_id, OperationPhase.RUNNING, fraction, str(message or state)
        )

    async def cancel(self, handle: OperationHandle) -> bool:
        record = self._store.get(handle.operation_id)
        if record is None:
            raise PermanentError(f"http: no operation {handle.operation_id}")
        if record.phase is OperationPhase.CANCELLED:
            return True
        spec = self.settings.operation.cancel
        if record.phase.done or spec is None:
            return False
        values = {"operation": record.data["location"], "key": record.key}
        url = _render(spec.url, values, quote_values=False)
        body = _render_json(spec.body, values) if spec.body is not None else None
        response = await self._send(
            spec.method,
            url,
            body=body,
            headers={"Idempotency-Key": f"{record.idempotency_key}/cancel"},
            retry_server_errors=False,
        )
        if not response.is_success:
            return False
        self._store.finish(record, OperationPhase.CANCELLED, "cancelled")
        return True

    async def close(self) -> None:
        await self._http.aclose()
        self._store.close()


def _default_auth(context: ProviderContext) -> str:
    creds = context.spec.credentials
    if "token" in creds:
        return "bearer"
    if "username" in creds or "password" in creds:
        return "basic"
    return "none"


def _finished(
    base: OperationRecord,
    phase: OperationPhase,
    message: str,
    result: Mapping[str, Any] | None = None,
) -> OperationRecord:
    return OperationRecord(
        base.operation_id, base.idempotency_key, base.key, base.action, phase, message,
        {"result": dict(result or {})}, base.started_at,
    )  # fmt: skip


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return _MISSING if node is None else node


def _render(template: str, values: Mapping[str, Any], *, quote_values: bool = False) -> str:
    def one(match: re.Match[str]) -> str:
        value = _lookup(values, match[1])
        if value is _MISSING:
            raise PermanentError(f"http: template {template!r}: {match[1]} has no value")
        text = value if isinstance(value, str) else _json_text(value)
        return quote(text, safe="") if quote_values else text

    return (
        _PLACEHOLDER.sub(one, template.replace("{{", "\0").replace("}}", "\1"))
        .replace("\0", "{")
        .replace("\1", "}")
    )


def _render_json(template: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            value = _lookup(values, whole[1])
            if value is _MISSING:
                raise PermanentError(f"http: template {template!r}: {whole[1]} has no value")
            return value
        return _render(template, values)
    if isinstance(template, Mapping):
        return {str(k): _render_json(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_render_json(v, values) for v in template]
    return template


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _json(response: httpx.Response, default: Any = _MISSING) -> Any:
    if not response.content:
        return {} if default is _MISSING else default
    try:
        return response.json()
    except ValueError:
        if default is not _MISSING:
            return default
        raise PermanentError(
            f"http: {response.request.method} {response.request.url}: the answer is not JSON"
        ) from None


def _select_fields(document: Any, paths: Mapping[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, path in paths.items():
        node = fields
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = select(document, path)
    return fields


def _with_param(url: str, name: str, value: int) -> str:
    parsed = httpx.URL(url)
    return str(parsed.copy_set_param(name, str(value)))


def _item_name(item: Any, path: str | None) -> str:
    """A listed item's name for discovery: `path`, else its `name`, else its `id`."""
    for candidate in (path,) if path else ("$.name", "$.id"):
        value = select(item, candidate)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return ""


def _snippet(response: httpx.Response) -> str:
    # Redacted before it is cut: a cut through a secret would leave its first characters.
    if not response.content:
        return scrub(response.reason_phrase)
    return REDACTOR.truncate(response.text, 300)
