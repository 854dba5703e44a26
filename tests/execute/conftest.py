"""Real parts for the executor's tests: an HTTP API on 127.0.0.1 and a canary secret.

`FakeApi` is a real HTTP server (ThreadingHTTPServer in a thread) speaking the
long-running-operation protocol: ``POST /jobs`` answers ``202 Accepted`` with a
``Location`` after an optional script of failures (500s, 429s with Retry-After),
returns the same operation for a repeated Idempotency-Key, and ``GET
/jobs/ops/<id>`` reports ``running`` until a number of polls has passed.
``POST /hook`` is a webhook receiver that verifies the HMAC signature. ``/echo``
answers with what a careless API sends back: the request's credentials and path
placed at a chosen character of a long error body (see `Handler._echo`).

`TRICKY` is a second canary made of the characters encodings change (quote,
backslash, ``%``, ``+``, ``/``) behind a random head, so any of its prefixes is
recognisable; `secret_leaks` lists where it, its prefixes or its encodings appear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
CANARY = f"canary-{uuid.uuid4().hex}"
CANARY_ENV = "RECONCILER_TEST_CANARY"
HOOK_SECRET = f"hook-{uuid.uuid4().hex}"
HOOK_SECRET_ENV = "RECONCILER_TEST_HOOK_SECRET"
TRICKY = f'{uuid.uuid4().hex[:10]}"qu\\ote%2F+/sl{uuid.uuid4().hex[:16]}'
TRICKY_ENV = "RECONCILER_TEST_TRICKY"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Operation:
    polls_needed: int
    outcome: str
    retry_after: str | None
    poll_failures: list[int]
    polls: int = 0


@dataclass
class ApiState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: list[Received] = field(default_factory=list)
    posts_by_key: dict[str, int] = field(default_factory=dict)
    op_by_key: dict[str, str] = field(default_factory=dict)
    ops: dict[str, Operation] = field(default_factory=dict)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    status_calls: int = 0


class Handler(BaseHTTPRequestHandler):
    server: ApiServer  # type: ignore[assignment]

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _reply(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        state = self.server.state
        with state.lock:
            state.received.append(Received(self.command, url.path, dict(self.headers), body))
        route = f"{self.command} {url.path}"
        if route == "POST /jobs":
            self._post_job(query)
        elif self.command == "GET" and url.path.startswith("/jobs/ops/"):
            self._poll(url.path.rsplit("/", 1)[-1])
        elif route == "POST /hook":
            self._hook(body, query)
        elif url.path == "/echo":
            self._echo(body, query)
        elif route == "GET /status":
            self._status(query)
        else:
            self._reply(int(query.get("code", "404")), {"error": f"no route {route}"})

    def _status(self, query: dict[str, str]) -> None:
        """`status` for the first `until` calls (all of them without it), then `then`."""
        state = self.server.state
        with state.lock:
            state.status_calls += 1
            calls = state.status_calls
        until = int(query.get("until", "0")) or None
        status = query.get("status", "ok")
        if until is not None and calls > until:
            status = query.get("then", "succeeded")
        self._reply(int(query.get("code", "200")), {"status": status})

    def _post_job(self, query: dict[str, str]) -> None:
        state = self.server.state
        key = self.headers.get("Idempotency-Key", "")
        fails = [int(c) for c in query.get("fail", "").split(",") if c]
        with state.lock:
            count = state.posts_by_key[key] = state.posts_by_key.get(key, 0) + 1
            if count <= len(fails):
                code = fails[count - 1]
                headers = {"Retry-After": query["ra"]} if code == 429 and "ra" in query else {}
                self._reply(code, {"error": "injected"}, headers)
                return
            op_id = state.op_by_key.get(key)
            if op_id is None:  # honour the idempotency key: one operation per key
                op_id = state.op_by_key[key] = uuid.uuid4().hex
                state.ops[op_id] = Operation(
                    polls_needed=int(query.get("polls", "1")),
                    outcome=query.get("outcome", "succeeded"),
                    retry_after=query.get("ra"),
                    poll_failures=[int(c) for c in query.get("pollfail", "").split(",") if c],
                )
        headers = {"Location": f"/jobs/ops/{op_id}"}
        if "ra" in query:
            headers["Retry-After"] = query["ra"]
        self._reply(202, {"id": op_id, "status": "accepted"}, headers)

    def _poll(self, op_id: str) -> None:
        state = self.server.state
        with state.lock:
            op = state.ops.get(op_id)
            if op is None:
                self._reply(404, {"error": "no such operation"})
                return
            if op.poll_failures:
                self._reply(op.poll_failures.pop(0), {"error": "injected"})
                return
            op.polls += 1
            done = op.polls >= op.polls_needed
        headers = {"Retry-After": op.retry_after} if op.retry_after and not done else {}
        status = op.outcome if done else "running"
        self._reply(200, {"status": status, "id": op_id, "polls": op.polls}, headers)

    def _hook(self, body: bytes, query: dict[str, str]) -> None:
        state = self.server.state
        given = self.headers.get("X-Reconciler-Signature-256", "")
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        fails = [int(c) for c in query.get("fail", "").split(",") if c]
        with state.lock:
            state.hooks.append({"verified": hmac.compare_digest(given, expected), "body": body})
            count = len(state.hooks)
        if count <= len(fails):
            self._reply(fails[count - 1], {"error": "injected"})
        elif not hmac.compare_digest(given, expected):
            self._reply(401, {"error": "bad signature"})
        else:
            self._reply(204)

    def _echo(self, body: bytes, query: dict[str, str]) -> None:
        """An error whose body repeats the credentials and the raw request path, the
        first of them starting at character ``at`` (``json=1``: as a JSON string)."""
        auth = self.headers.get("Authorization", "")
        echoed = auth.partition(" ")[2] + " path " + self.path + " body " + body.decode()
        at = int(query.get("at", "0"))
        if query.get("json") == "1":
            opening = '{"error": "'
            text = opening + "x" * (at - len(opening))
            data = (json.dumps({"error": text[len(opening) :] + echoed + "y" * 5000})).encode()
            content_type = "application/json"
        else:
            data = ("x" * at + echoed + "y" * 5000).encode()
            content_type = "text/plain"
        self.send_response(int(query.get("code", "400")))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = ApiState()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self, method: str, path_prefix: str) -> list[Received]:
        with self.state.lock:
            return [
                r
                for r in self.state.received
                if r.method == method and r.path.startswith(path_prefix)
            ]


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def canary_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(CANARY_ENV, CANARY)
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    monkeypatch.setenv(TRICKY_ENV, TRICKY)
    return CANARY


def secret_shapes(secret: str, *, user: str = "ada") -> dict[str, str]:
    """What betrays `secret`: its first and last 8 characters in every encoding it
    takes on the way out (and the basic-auth token made with `user`), by name."""
    import base64

    from reconciler.secrets import encoded_forms

    shapes = {f"head of {form!r}": form[:8] for form in encoded_forms(secret)}
    shapes |= {f"tail of {form!r}": form.rstrip("=")[-8:] for form in encoded_forms(secret)}
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
    shapes["basic-auth"] = basic[:12]
    shapes["whole"] = secret
    return shapes


def secret_leaks(secret: str, places: dict[str, bytes | str]) -> list[str]:
    """Every (place, shape) where a shape of `secret` appears."""
    found = []
    for where, content in places.items():
        data = content if isinstance(content, bytes) else content.encode()
        for name, shape in secret_shapes(secret).items():
            if shape.encode() in data:
                found.append(f"{where}: {name}")
    return found


def files_under(root: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_no_canary(*places: Any) -> None:
    """The canary secret is in none of these: texts, data, files or directories."""
    for place in places:
        if isinstance(place, Path):
            files = [p for p in place.rglob("*") if p.is_file()] if place.is_dir() else [place]
            for path in files:
                assert CANARY.encode() not in path.read_bytes(), f"canary leaked into {path}"
        else:
            text = place if isinstance(place, str) else json.dumps(place, default=str)
            assert CANARY not in text, f"canary leaked: {text[:200]}"


def child_env() -> dict[str, str]:
    """Environment for a child Python that imports this worktree's reconciler."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def make_ctx(**overrides: Any) -> Any:
    """A TaskContext for Machine/m1 with a canary-carrying secure param."""
    from reconciler.execute import TaskContext

    values: dict[str, Any] = {
        "resource_key": "Machine/m1",
        "resource_kind": "Machine",
        "resource_name": "m1",
        "idempotency_key": "key-" + uuid.uuid4().hex,
        "params": {"os": "ubuntu", "size": 3, "token": f"env:{CANARY_ENV}"},
        "secure_params": frozenset({"token"}),
        "plan_hash": "p" * 64,
        "stage": "install-os",
        "point": "work",
    }
    values.update(overrides)
    return TaskContext(**values)


def task(**fields: Any) -> Any:
    """A task model value from its YAML-shaped fields (camelCase accepted)."""
    from pydantic import TypeAdapter

    from reconciler.model.tasks import Task

    return TypeAdapter(Task).validate_python({"name": "t", **fields})
