"""The API refuses abuse cheaply, against the real server on 127.0.0.1.

Every POST route gets a body over the limit (declared by Content-Length, and
streamed chunked without one) and a 100,000-deep JSON body; webhooks get them
correctly signed, so the refusal is the body's and not the signature's. The
OpenAPI document says `/metrics` is text/plain, and `/docs` loads with nothing
from outside the server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.controller.webhooks import MAX_JSON_DEPTH, json_depth
from tests.controller.server.conftest import (
    TOKEN,
    WEBHOOK_SECRET,
    Running,
    declare,
    repo_files,
    running,
    settings_for,
)

MIB = 1024 * 1024
DEEP = b"[" * 100_000 + b"]" * 100_000


def signed(source: str, body: bytes) -> dict[str, str]:
    """Headers proving knowledge of the webhook secret for `body`."""
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "github": {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push"},
        "gitlab": {"X-Gitlab-Token": WEBHOOK_SECRET, "X-Gitlab-Event": "Push Hook"},
        "generic": {"X-Reconciler-Signature-256": signature},
    }[source]


POSTS = (
    "/api/v1/sync",
    "/api/v1/events/sim",
    "/api/v1/webhooks/github",
    "/api/v1/webhooks/gitlab",
    "/api/v1/webhooks/generic",
)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    bare = declare(tmp_path, repo_files(2))
    with running(settings_for(bare, tmp_path / "state"), monkeypatch) as api:
        api.idle()
        yield api


def counts(api: Running) -> tuple[int, str]:
    """Operations asked for, and the webhook/event counters: what a route would change."""
    metrics = api.client.get("/metrics").text
    lines = [
        m
        for m in metrics.splitlines()
        if m.startswith(("reconciler_webhooks", "reconciler_events"))
    ]
    return len(api.scheduler.operations), "\n".join(lines)


def test_a_declared_body_over_the_limit_is_413_on_every_post_route(api: Running) -> None:
    before = counts(api)
    for route in POSTS:
        source = route.rsplit("/", 1)[-1]
        body = b"{" + b" " * MIB + b"}"
        headers = signed(source, body) if "webhooks" in route else {}
        answer = api.client.post(route, content=body, headers=headers)
        assert answer.status_code == 413, (route, answer.text)
        assert "larger than 1048576 bytes" in answer.json()["detail"]
    assert counts(api) == before  # no route ran: no cycle asked, no webhook counted
    ok = api.client.post("/api/v1/events/sim", content=b'{"resource": "Machine/m00"}')
    assert ok.status_code == 202  # and the server still answers


def stream_chunked(url: str, path: str, headers: dict[str, str], total: int) -> tuple[int, bytes]:
    """POST `total` bytes chunked, stopping when the server answers: (bytes sent, answer)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setblocking(False)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    pending = ("\r\n".join(head) + "\r\n\r\n").encode()
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    sent, answer, sending = 0, b"", True
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            writing = [sock] if sending and sent < total else []
            readable, writable, _ = select.select([sock], writing, [], 5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
            elif writable:
                pending = pending or chunk
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    sending = False  # the server stopped reading: its answer may be waiting
                    continue
                pending = pending[n:]
                sent += n
            else:
                break
    finally:
        sock.close()
    return sent, answer


@pytest.mark.parametrize("route", POSTS[1:])
def test_a_chunked_50mb_body_is_cut_off_near_the_limit(api: Running, route: str) -> None:
    before = counts(api)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if "webhooks" in route:  # a wrong signature: the body must not be read to find out
        headers |= {"X-Hub-Signature-256": "sha256=00", "X-Gitlab-Token": "wrong"}
        headers |= {"X-Reconciler-Signature-256": "sha256=00"}
    sent, answer = stream_chunked(api.url, route, headers, 50 * MIB)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 25 * MIB, sent  # answered while the client was still sending
    assert counts(api) == before


def test_deeply_nested_json_is_400_never_500(api: Running) -> None:
    assert json_depth(DEEP) > MAX_JSON_DEPTH
    answer = api.client.post("/api/v1/events/sim", content=DEEP)
    assert answer.status_code == 400, answer.text
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in answer.json()["detail"]
    for source in ("github", "gitlab", "generic"):
        answer = api.client.post(
            f"/api/v1/webhooks/{source}", content=DEEP, headers=signed(source, DEEP)
        )
        assert answer.status_code == 400, (source, answer.text)
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in answer.json()["detail"]
    # sync takes no body: a deep one is never parsed
    assert api.client.post("/api/v1/sync", content=DEEP).status_code == 202
    # nesting within the limit is fine
    inner = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    fine = b'{"resource": "Machine/m00", "detail": ' + inner + b"}"
    assert api.client.post("/api/v1/events/sim", content=fine).status_code == 202
    body = b'{"ref": "refs/heads/main", "x": ' + inner + b"}"
    assert (
        api.client.post(
            "/api/v1/webhooks/generic", content=body, headers=signed("generic", body)
        ).status_code
        == 202
    )


def test_the_limit_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = declare(tmp_path, repo_files(1))
    settings = settings_for(bare, tmp_path / "state", max_body_bytes=100)
    with running(settings, monkeypatch) as api:
        at_limit = b'{"resource": "Machine/m00"}'.ljust(100)
        assert api.client.post("/api/v1/events/sim", content=at_limit).status_code == 202
        over = at_limit + b" "
        answer = api.client.post("/api/v1/events/sim", content=over)
        assert answer.status_code == 413
        assert "larger than 100 bytes" in answer.json()["detail"]


def test_openapi_says_metrics_is_text_and_docs_need_no_internet(api: Running) -> None:
    spec = api.client.get("/openapi.json").json()
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]
    assert api.client.get("/metrics").headers["content-type"].startswith("text/plain")

    page = api.client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in [*assets, "/openapi.json"]:
        assert asset.startswith("/"), asset  # served by this server, nothing from outside
        got = httpx.get(api.url + asset, timeout=10)
        assert got.status_code == 200 and len(got.content) > 1000, asset
