"""`reconciler_provider_request_errors_total` counts a provider's failed calls.

A real `reconciler run` manages two Resources through an `http` provider whose API
(a local server on 127.0.0.1) answers every request 503. The test reads the other
side first — the API really received the provider's observe requests — then the
controller's `/metrics`: the error counter for that provider and operation is at
least the number of observe calls that failed, and the latency histogram of the
same calls has as many samples. A provider that answers normally (the simulator,
beside it) has no error sample.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import BASE_FILES
from tests.e2e.controller import controller
from tests.e2e.support import Fleet

pytestmark = pytest.mark.slow


class Broken(BaseHTTPRequestHandler):
    server: BrokenApi  # type: ignore[assignment]

    def log_message(self, *args: object) -> None:
        return

    def _fail(self) -> None:
        with self.server.lock:
            self.server.paths.append(f"{self.command} {self.path}")
        body = b'{"error": "maintenance"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _fail


class BrokenApi(ThreadingHTTPServer):
    lock: threading.Lock
    paths: list[str]


@pytest.fixture
def broken() -> Iterator[BrokenApi]:
    server = BrokenApi(("127.0.0.1", 0), Broken)
    server.lock, server.paths = threading.Lock(), []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def files(url: str) -> dict[str, str]:
    provider = f"""\
---
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: ipam}}
spec:
  type: http
  endpoint: {url}
  settings:
    observe: {{url: "/api/widgets/{{name}}", select: {{params.vlan: $.vlan}}}}
    create: {{url: /api/widgets, body: {{name: "{{name}}", vlan: "{{params.vlan}}"}}}}
"""
    resources = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Resource\nmetadata: {{name: {name}}}\n"
        f"spec: {{provider: ipam, pipeline: network, type: vlan, params: {{vlan: {vlan}}}}}\n"
        for name, vlan in (("vlan-a", 120), ("vlan-b", 121))
    )
    return {
        **BASE_FILES,
        "providers.yaml": BASE_FILES["providers.yaml"] + provider,
        "network.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: allocate}
spec:
  converges: [params.vlan]
  work:
    - {name: create, type: provider, action: create}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: network}
spec:
  steps: [{stage: allocate}]
"""
        + resources,
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(found[1]) if found else None


def test_failed_provider_requests_are_counted_on_metrics(tmp_path: Path, broken: BrokenApi) -> None:
    fleet = Fleet.create(tmp_path, files(f"http://127.0.0.1:{broken.server_address[1]}"))
    with controller(fleet, tmp_path) as api:
        api.wait_for(lambda: [x for x in api.lines() if x.get("event", "").startswith("cycle")])
        text = api.client.get("/metrics").text
    with broken.lock:
        observed = [p for p in broken.paths if p.startswith("GET /api/widgets/")]
    assert observed, broken.paths  # the provider really asked, and was refused

    errors = sample(text, "reconciler_provider_request_errors_total",
                    provider="ipam", operation="observe")  # fmt: skip
    calls = sample(text, "reconciler_provider_request_duration_seconds_count",
                   provider="ipam", operation="observe")  # fmt: skip
    assert errors is not None and errors >= 1, text
    assert calls is not None and errors == calls  # every observe call of ipam failed
    assert sample(text, "reconciler_provider_request_errors_total",
                  provider="sim", operation="observe") is None  # fmt: skip
    assert (sample(text, "reconciler_provider_request_duration_seconds_count",
                   provider="sim", operation="observe") or 0) >= 1  # fmt: skip
