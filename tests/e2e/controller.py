"""A real `reconciler run` subprocess for the end-to-end tests, and how to talk to it.

`controller(fleet, tmp)` starts `python -m reconciler run` on a free port of
127.0.0.1 against a `Fleet`'s bare repository and state directory, with an API
token and a webhook secret given by reference, waits until it answers, and stops it
with SIGTERM at the end. Its combined stdout and stderr (JSON lines) go to a file
the tests read, as an operator reads the journal of a service.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.support import Fleet

TOKEN = "e2e-api-token-0123456789abcdef"
WEBHOOK_SECRET = "e2e-webhook-secret-0123456789"
ENV = {
    "E2E_API_TOKEN": TOKEN,
    "E2E_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "RECONCILER_API_TOKEN": "env:E2E_API_TOKEN",
    "RECONCILER_WEBHOOK_SECRET": "env:E2E_WEBHOOK_SECRET",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Controller:
    url: str
    log: Path
    process: subprocess.Popen[bytes]
    client: httpx.Client

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def wait_for(self, check: Callable[[], Any], timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not true within {timeout}s; log: {self.log.read_text()[-3000:]}")

    def wait_for_line(self, event: str, timeout: float = 90.0) -> dict[str, Any]:
        return self.wait_for(
            lambda: next((x for x in self.lines() if x.get("event") == event), None), timeout
        )


@contextmanager
def controller(
    fleet: Fleet,
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    repo: str | None = None,
) -> Iterator[Controller]:
    """`reconciler run` on a free port; yields once `/healthz` answers. `repo`: the
    repository as given on the command line (a served URL), else the fleet's bare one."""
    port = free_port()
    log = tmp / f"run-{port}.log"
    argv = fleet.argv("run", "--listen", f"127.0.0.1:{port}", "--interval", "1h", *args)
    if repo is not None:
        argv[argv.index("--repo") + 1] = repo
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=out, env={**fleet.env, **ENV, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    running = Controller(url, log, process, client)
    try:

        def answers() -> bool:
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        running.wait_for(answers, timeout=60)
        yield running
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
