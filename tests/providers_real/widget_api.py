"""A small in-house style JSON API on 127.0.0.1 for the generic REST provider's tests.

Widgets are created and deleted through ``202 Accepted`` operations that finish
on their second poll, updated by PATCH (PUT is refused), listed in pages of two
(a body ``next`` link, a ``Link`` header, or a ``page`` number), deduplicated by
``Idempotency-Key``, and guarded by a bearer token. ``faults`` queues answers
(429 with Retry-After, 5xx) for a method and path, to be served before the real one.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE = 2


@dataclass
class WidgetApi:
    token: str
    widgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    faults: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def calls(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and p == path)


def _handler(api: WidgetApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(
            self, status: int, body: Any = None, headers: dict[str, str] | None = None
        ) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            body = self._body() if method in ("POST", "PUT", "PATCH") else None
            with api.lock:
                api.log.append((method, path, self.headers.get("Idempotency-Key")))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._send(401, {"error": "unauthorized"})
                queued = api.faults.get((method, path))
                if queued:
                    status, headers = queued.pop(0)
                    return self._send(status, {"error": "injected"}, headers)
                self._route(method, path, query, body)
            return None

        def _operation(self, apply: Any) -> None:
            key = self.headers.get("Idempotency-Key")
            if key and key in api.by_idempotency_key:
                op_id = api.by_idempotency_key[key]
            else:
                op_id = f"op{len(api.operations) + 1}"
                api.operations[op_id] = {"polls": 0, "apply": apply, "status": "running"}
                if key:
                    api.by_idempotency_key[key] = op_id
            self._send(202, {"operation": op_id}, {"Location": f"/api/operations/{op_id}"})

        def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> None:
            segments = path.strip("/").split("/")
            if segments[:2] == ["api", "widgets"] and len(segments) == 3:
                name = segments[2]
                widget = api.widgets.get(name)
                if method == "GET":
                    return self._send(200, widget) if widget else self._send(404, {"error": "no"})
                if method == "PATCH":
                    if not widget:
                        return self._send(404, {"error": "no"})
                    widget.update(body or {})
                    return self._send(200, widget)
                if method == "DELETE":
                    if not widget:
                        return self._send(404, {"error": "no"})
                    return self._operation(lambda: api.widgets.pop(name, None))
                return self._send(405, {"error": f"{method} not allowed"})
            if segments == ["api", "widgets"] and method == "POST":
                name = body["name"]
                if name in api.widgets and self.headers.get("Idempotency-Key") not in (
                    api.by_idempotency_key
                ):
                    return self._send(409, {"error": "exists"})
                widget = {**body, "status": {"phase": "ready"}}
                return self._operation(lambda: api.widgets.setdefault(name, widget))
            if segments == ["api", "widgets"] and method == "GET":
                return self._list(query)
            if segments[:2] == ["api", "operations"] and method == "GET":
                op = api.operations.get(segments[2])
                if op is None:
                    return self._send(404, {"error": "no such operation"})
                op["polls"] += 1
                if op["polls"] >= 2 and op["status"] == "running":
                    op["apply"]()
                    op["status"] = "succeeded"
                return self._send(
                    200,
                    {"status": op["status"], "progress": 0.5, "message": f"{op['status']}"},
                )
            return self._send(404, {"error": "no route"})

        def _list(self, query: dict[str, list[str]]) -> None:
            names = sorted(api.widgets)
            if "page" in query:
                start = (int(query["page"][0]) - 1) * PAGE
                return self._send(
                    200, {"items": [api.widgets[n] for n in names[start : start + PAGE]]}
                )
            start = int(query.get("cursor", ["0"])[0])
            items = [api.widgets[n] for n in names[start : start + PAGE]]
            more = start + PAGE < len(names)
            if "link" in query:
                headers = (
                    {"Link": f'</api/widgets?link=1&cursor={start + PAGE}>; rel="next"'}
                    if more
                    else {}
                )
                return self._send(200, {"items": items}, headers)
            page = {"items": items, "next": f"/api/widgets?cursor={start + PAGE}" if more else None}
            return self._send(200, page)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


@contextmanager
def serve(token: str, tls: tuple[Path, Path] | None = None) -> Iterator[WidgetApi]:
    """The API on a free port; over HTTPS with ``tls`` = (certificate, key) PEM files."""
    api = WidgetApi(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    api.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
