"""Fake HTTP APIs on 127.0.0.1 for tests: one server core and the two APIs built on it.

`FakeHttpServer` is the core: a threaded HTTP server on a free port of 127.0.0.1
(HTTPS with a certificate and key), started and stopped as a context manager. It
records every request it receives (method, path, query, headers, body) before
answering, and answers through its route table: each `Route` is a method and a path
pattern whose named groups become the handler's keyword arguments; a handler takes
the `Received` request and returns a `Response` (`reply` builds a JSON one).

Built on it:

- `ApiServer`, what the executor's http and notify tasks call: ``POST /jobs`` answers
  ``202 Accepted`` with a ``Location`` after an optional script of failures (500s,
  429s with Retry-After), returns the same operation for a repeated Idempotency-Key,
  and ``GET /jobs/ops/<id>`` reports ``running`` until a number of polls has passed.
  ``POST /hook`` is a webhook receiver that verifies the HMAC signature; ``GET
  /status`` answers a status that changes after some calls; ``/echo`` answers with
  what a careless API sends back: the request's credentials and path placed at a
  chosen character of a long error body (see `ApiServer._echo`). The query string
  scripts each answer.
- `WidgetApi`, a small in-house style JSON API for the generic REST provider: widgets
  are created and deleted through ``202 Accepted`` operations that finish on their
  second poll, updated by PATCH (PUT is refused), listed in pages of two (a body
  ``next`` link, a ``Link`` header, or a ``page`` number), deduplicated by
  ``Idempotency-Key``, and guarded by a bearer token. ``faults`` queues answers (429
  with Retry-After, 5xx) for a method and path, to be served before the real one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

# --- the core ----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    target: str  # the request line's target: the path as sent, query included

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (the last value of a repeated one)."""
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.target).query).items()}

    def header(self, name: str) -> str:
        """The header `name` whatever its case as sent, or "" when absent."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), "")

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Response:
    status: int
    data: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def reply(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer; without `body` an empty one (and no Content-Type)."""
    if body is None:
        return Response(status, b"", dict(headers or {}))
    data = json.dumps(body).encode()
    return Response(status, data, {**(headers or {}), "Content-Type": "application/json"})


@dataclass(frozen=True)
class Route:
    method: str  # "*": any method
    pattern: str  # a regular expression the whole path must match
    handler: Callable[..., Response]  # (request, **named groups of the pattern)


class _Handler(BaseHTTPRequestHandler):
    server: _Listener

    def log_message(self, *args: object) -> None:  # quiet: the record is the log
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Received(
            self.command, urlsplit(self.path).path, dict(self.headers), body, self.path
        )
        response = self.server.fake.receive(request)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.data)))
        self.end_headers()
        self.wfile.write(response.data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Listener(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeHttpServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeHttpServer:
    """A fake API on a free port of 127.0.0.1, serving `routes`, recording every request."""

    def __init__(self, routes: Sequence[Route], *, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (certificate, key) PEM files to serve HTTPS instead of HTTP."""
        self.routes = tuple(routes)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._listener = _Listener(self)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._listener.socket = context.wrap_socket(self._listener.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._listener.server_address[1]}"
        self._thread = threading.Thread(
            target=self._listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.shutdown()
        self._listener.server_close()
        self._thread.join()

    @property
    def received(self) -> list[Received]:
        """Every request so far, oldest first."""
        with self._lock:
            return list(self._received)

    def requests(self, method: str, path_prefix: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.path.startswith(path_prefix)]

    def calls(self, method: str, path: str) -> int:
        """How many `method` requests for exactly `path` came."""
        return sum(1 for r in self.received if r.method == method and r.path == path)

    def receive(self, request: Received) -> Response:
        """Record `request`, then answer it (the record is there before the answer)."""
        with self._lock:
            self._received.append(request)
        return self.dispatch(request)

    def dispatch(self, request: Received) -> Response:
        """The answer of the first route matching `request`, else `unrouted`'s."""
        for route in self.routes:
            match = re.fullmatch(route.pattern, request.path)
            if match and route.method in ("*", request.method):
                return route.handler(request, **match.groupdict())
        return self.unrouted(request)

    def unrouted(self, request: Received) -> Response:
        return reply(404, {"error": f"no route {request.method} {request.path}"})


# --- what the executor's http and notify tasks call ---------------------------------


@dataclass
class Job:
    polls_needed: int
    outcome: str
    retry_after: str | None
    poll_failures: list[int]
    polls: int = 0


@dataclass
class ApiState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    posts_by_key: dict[str, int] = field(default_factory=dict)
    op_by_key: dict[str, str] = field(default_factory=dict)
    ops: dict[str, Job] = field(default_factory=dict)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    status_calls: int = 0


def _codes(text: str) -> list[int]:
    """A script of status codes: "500,429" → [500, 429]."""
    return [int(c) for c in text.split(",") if c]


class ApiServer(FakeHttpServer):
    """Long-running jobs, a signed webhook receiver, a changing status and an echo."""

    def __init__(self, hook_secret: str = "") -> None:
        """`hook_secret`: the key ``POST /hook`` checks signatures with."""
        super().__init__(
            [
                Route("POST", "/jobs", self._post_job),
                Route("GET", r"/jobs/ops/(?P<op_id>[^/]+)", self._poll),
                Route("POST", "/hook", self._hook),
                Route("*", "/echo", self._echo),
                Route("GET", "/status", self._status),
            ]
        )
        self.hook_secret = hook_secret
        self.state = ApiState()

    def unrouted(self, request: Received) -> Response:
        code = int(request.query.get("code", "404"))
        return reply(code, {"error": f"no route {request.method} {request.path}"})

    def _status(self, request: Received) -> Response:
        """`status` for the first `until` calls (all of them without it), then `then`."""
        query = request.query
        with self.state.lock:
            self.state.status_calls += 1
            calls = self.state.status_calls
        until = int(query.get("until", "0")) or None
        status = query.get("status", "ok")
        if until is not None and calls > until:
            status = query.get("then", "succeeded")
        return reply(int(query.get("code", "200")), {"status": status})

    def _post_job(self, request: Received) -> Response:
        state, query = self.state, request.query
        key = request.header("Idempotency-Key")
        fails = _codes(query.get("fail", ""))
        with state.lock:
            count = state.posts_by_key[key] = state.posts_by_key.get(key, 0) + 1
            if count <= len(fails):
                code = fails[count - 1]
                headers = {"Retry-After": query["ra"]} if code == 429 and "ra" in query else {}
                return reply(code, {"error": "injected"}, headers)
            op_id = state.op_by_key.get(key)
            if op_id is None:  # honour the idempotency key: one operation per key
                op_id = state.op_by_key[key] = uuid.uuid4().hex
                state.ops[op_id] = Job(
                    polls_needed=int(query.get("polls", "1")),
                    outcome=query.get("outcome", "succeeded"),
                    retry_after=query.get("ra"),
                    poll_failures=_codes(query.get("pollfail", "")),
                )
        headers = {"Location": f"/jobs/ops/{op_id}"}
        if "ra" in query:
            headers["Retry-After"] = query["ra"]
        return reply(202, {"id": op_id, "status": "accepted"}, headers)

    def _poll(self, request: Received, op_id: str) -> Response:
        with self.state.lock:
            op = self.state.ops.get(op_id)
            if op is None:
                return reply(404, {"error": "no such operation"})
            if op.poll_failures:
                return reply(op.poll_failures.pop(0), {"error": "injected"})
            op.polls += 1
            done = op.polls >= op.polls_needed
        headers = {"Retry-After": op.retry_after} if op.retry_after and not done else {}
        status = op.outcome if done else "running"
        return reply(200, {"status": status, "id": op_id, "polls": op.polls}, headers)

    def _hook(self, request: Received) -> Response:
        given = request.header("X-Reconciler-Signature-256")
        digest = hmac.new(self.hook_secret.encode(), request.body, hashlib.sha256).hexdigest()
        verified = hmac.compare_digest(given, "sha256=" + digest)
        fails = _codes(request.query.get("fail", ""))
        with self.state.lock:
            self.state.hooks.append({"verified": verified, "body": request.body})
            count = len(self.state.hooks)
        if count <= len(fails):
            return reply(fails[count - 1], {"error": "injected"})
        return reply(204) if verified else reply(401, {"error": "bad signature"})

    def _echo(self, request: Received) -> Response:
        """An error whose body repeats the credentials and the raw request path, the
        first of them starting at character ``at`` (``json=1``: as a JSON string)."""
        query = request.query
        auth = request.header("Authorization")
        echoed = auth.partition(" ")[2] + " path " + request.target + " body "
        echoed += request.body.decode()
        at = int(query.get("at", "0"))
        if query.get("json") == "1":
            opening = '{"error": "'
            text = opening + "x" * (at - len(opening))
            data = (json.dumps({"error": text[len(opening) :] + echoed + "y" * 5000})).encode()
            content_type = "application/json"
        else:
            data = ("x" * at + echoed + "y" * 5000).encode()
            content_type = "text/plain"
        return Response(int(query.get("code", "400")), data, {"Content-Type": content_type})


# --- the generic REST provider's API ------------------------------------------------

PAGE = 2
WIDGET = r"/api/widgets/(?P<name>[^/]+)"


@dataclass
class WidgetOperation:
    apply: Callable[[], object]  # what the operation does once it finishes
    polls: int = 0
    status: str = "running"


class WidgetApi(FakeHttpServer):
    """Widgets behind a bearer token; answers are served one at a time, under `lock`."""

    def __init__(self, token: str, *, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(
            [
                Route("GET", WIDGET, self._get),
                Route("PATCH", WIDGET, self._patch),
                Route("DELETE", WIDGET, self._delete),
                Route("*", WIDGET, self._not_allowed),
                Route("POST", "/api/widgets", self._create),
                Route("GET", "/api/widgets", self._list),
                Route("GET", r"/api/operations/(?P<op_id>[^/]+)", self._poll),
            ],
            tls=tls,
        )
        self.token = token
        self.widgets: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, WidgetOperation] = {}
        self.by_idempotency_key: dict[str, str] = {}
        self.faults: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = {}
        self.lock = threading.Lock()

    def dispatch(self, request: Received) -> Response:
        """The token checked, then a queued fault for this method and path, else the route."""
        with self.lock:
            if request.header("Authorization") != f"Bearer {self.token}":
                return reply(401, {"error": "unauthorized"})
            queued = self.faults.get((request.method, request.path))
            if queued:
                status, headers = queued.pop(0)
                return reply(status, {"error": "injected"}, headers)
            return super().dispatch(request)

    def _operation(self, request: Received, apply: Callable[[], object]) -> Response:
        key = request.header("Idempotency-Key")
        if key and key in self.by_idempotency_key:
            op_id = self.by_idempotency_key[key]
        else:
            op_id = f"op{len(self.operations) + 1}"
            self.operations[op_id] = WidgetOperation(apply)
            if key:
                self.by_idempotency_key[key] = op_id
        return reply(202, {"operation": op_id}, {"Location": f"/api/operations/{op_id}"})

    def _get(self, request: Received, name: str) -> Response:
        widget = self.widgets.get(name)
        return reply(200, widget) if widget else reply(404, {"error": "no"})

    def _patch(self, request: Received, name: str) -> Response:
        widget = self.widgets.get(name)
        if not widget:
            return reply(404, {"error": "no"})
        widget.update(request.json() or {})
        return reply(200, widget)

    def _delete(self, request: Received, name: str) -> Response:
        if not self.widgets.get(name):
            return reply(404, {"error": "no"})
        return self._operation(request, lambda: self.widgets.pop(name, None))

    def _not_allowed(self, request: Received, name: str) -> Response:
        return reply(405, {"error": f"{request.method} not allowed"})

    def _create(self, request: Received) -> Response:
        body = request.json()
        name = body["name"]
        if name in self.widgets and request.header("Idempotency-Key") not in (
            self.by_idempotency_key
        ):
            return reply(409, {"error": "exists"})
        widget = {**body, "status": {"phase": "ready"}}
        return self._operation(request, lambda: self.widgets.setdefault(name, widget))

    def _poll(self, request: Received, op_id: str) -> Response:
        op = self.operations.get(op_id)
        if op is None:
            return reply(404, {"error": "no such operation"})
        op.polls += 1
        if op.polls >= 2 and op.status == "running":
            op.apply()
            op.status = "succeeded"
        return reply(200, {"status": op.status, "progress": 0.5, "message": op.status})

    def _list(self, request: Received) -> Response:
        query, names = request.query, sorted(self.widgets)
        if "page" in query:
            start = (int(query["page"]) - 1) * PAGE
            return reply(200, {"items": [self.widgets[n] for n in names[start : start + PAGE]]})
        start = int(query.get("cursor", "0"))
        items = [self.widgets[n] for n in names[start : start + PAGE]]
        more = start + PAGE < len(names)
        if "link" in query:
            link = f'</api/widgets?link=1&cursor={start + PAGE}>; rel="next"'
            return reply(200, {"items": items}, {"Link": link} if more else {})
        page = {"items": items, "next": f"/api/widgets?cursor={start + PAGE}" if more else None}
        return reply(200, page)
