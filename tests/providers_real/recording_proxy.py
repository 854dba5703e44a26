"""A recording HTTP proxy in front of an emulator: how many requests were in flight at once.

`recording_proxy(upstream, delay=…)` serves on a free port of 127.0.0.1 and forwards
every request to `upstream` (sushy-emulator, moto) after holding it for a fixed
`delay`, so calls a client makes at the same time overlap long enough to be seen.
`Recorder` counts the requests in flight (from the moment one arrives until its
answer is sent) and keeps the largest number seen, and each request's EC2/Query
`Action` (or method and path) in arrival order. The proxy never changes a request
or an answer; it only waits and counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)
ANSWERED_HERE = frozenset({"content-length", "content-encoding", "server", "date"})
"""Headers the proxy writes itself (httpx has decoded the body already)."""


@dataclass
class Recorder:
    """What went through the proxy: requests in flight now, the most at once, and each one."""

    in_flight: int = 0
    most: int = 0
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def entered(self, what: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.requests.append(what)

    def left(self) -> None:
        with self.lock:
            self.in_flight -= 1


@dataclass(frozen=True)
class Proxy:
    url: str
    recorder: Recorder


def _described(method: str, path: str, body: bytes) -> str:
    """`Action` of an AWS Query request (EC2), else the method and path."""
    action = parse_qs(body.decode("utf-8", "replace")).get("Action")
    return action[0] if action else f"{method} {path}"


def _handler(upstream: httpx.Client, recorder: Recorder, delay: float) -> type:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the clients use it

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorder.entered(_described(self.command, self.path, body))
            try:
                time.sleep(delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                answer = upstream.request(self.command, self.path, content=body, headers=headers)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in HOP_BY_HOP | ANSWERED_HERE:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)
            finally:
                recorder.left()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: the recorder keeps what matters

    return Forward


@contextmanager
def recording_proxy(upstream: str, *, delay: float) -> Iterator[Proxy]:
    """A proxy to `upstream` on 127.0.0.1 holding each request `delay` seconds."""
    recorder = Recorder()
    with httpx.Client(base_url=upstream, timeout=60, limits=httpx.Limits(max_connections=200)) as c:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(c, recorder, delay))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="recording-proxy", daemon=True)
        thread.start()
        try:
            yield Proxy(f"http://127.0.0.1:{server.server_address[1]}", recorder)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
