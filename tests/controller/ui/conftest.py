"""A real `reconciler run` for the browser tests, and Debian's Chromium driven by Playwright.

The controller runs as a subprocess (`sys.executable -m reconciler run`) on a free
port of 127.0.0.1 against a bare Git repository holding the sample repository
(`sample-repo/`, its webhooks and CMDB pointed at this module's demo sink) plus:

- a Policy requiring approvals for protected resources, Ada reviewing
  `machines/rack-r01.yaml` and Grace the storage machines; the declaring commit,
  authored by Linus, carries both approvals;
- `Machine/hostile-01`, whose label and whose failing task's message hold markup
  (`<script>`, an `<img onerror>`) and whose task sees a secret: what the pages
  must show as text, and never show.

One controller serves the whole module (its first cycle takes a few seconds);
each test gets a fresh browser context (no cookies). Playwright cannot download
browsers here: Chromium is Debian's (`.ci/run` installs it), launched headless.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import (
    Browser,
    BrowserType,
    ConsoleMessage,
    Page,
    Playwright,
    sync_playwright,
)

from reconciler.cli.demo import DEMO_SECRETS, demo_sink
from tests.conftest import ROOT
from tests.servers.git import free_port, git

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "ui-test-api-token-0123456789"
LINUS = "Linus Declarer <linus@example.com>"
ADA = "Ada Lovelace <ada@example.com>"
GRACE = "Grace Hopper <grace@example.com>"
HOSTILE_LABEL = "<script>window.__pwned='label'</script>"
HOSTILE_ERROR = '<img src=x onerror="window.__pwned=2"><b>bold</b>'
SECRET = DEMO_SECRETS["R01_ROOT_PASSWORD"]
EXPECTED = {
    "Instance/bastion": "Ready",
    "Instance/edge-ingress-a": "Ready",
    "Instance/edge-ingress-b": "Ready",
    "Machine/hostile-01": "Failed",
    "Machine/r01-node01": "Ready",
    "Machine/r01-node02": "Ready",
    "Machine/r01-node03": "Ready",
    "Machine/r01-node04": "Ready",
    "Machine/r02-node01": "Ready",
    "Machine/r02-node02": "Ready",
    "Machine/r02-node03": "Ready",
}

HOSTILE = {
    "machines/hostile.yaml": {
        "apiVersion": "reconciler/v1",
        "kind": "Machine",
        "metadata": {"name": "hostile-01", "labels": {"note": HOSTILE_LABEL, "rack": "r09"}},
        "spec": {"provider": "lab-sim", "pipeline": "hostile", "bmc": {"serial": "SN-H01"}},
    },
    "pipelines/hostile.yaml": {
        "apiVersion": "reconciler/v1",
        "kind": "Pipeline",
        "metadata": {"name": "hostile"},
        "spec": {"steps": [{"stage": "hostile-check"}]},
    },
    "stages/hostile.yaml": {
        "apiVersion": "reconciler/v1",
        "kind": "Stage",
        "metadata": {"name": "hostile-check"},
        "spec": {
            "work": [
                {
                    # Slow enough (2 s) that a sync's operation is seen running.
                    "name": "probe",
                    "type": "command",
                    "argv": [
                        "sh",
                        "-c",
                        f"sleep 2; echo 'the root password is '\"$PW\" >&2; "
                        f"echo '{HOSTILE_ERROR}' >&2; exit 3",
                    ],
                    "secretEnv": {"PW": "env:R01_ROOT_PASSWORD"},
                }
            ]
        },
    },
}


def policy() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "sample-repo" / "policy.yaml").read_text())
    data["spec"]["approvals"] = {
        "required": True,
        "reviewers": [
            {"paths": ["machines/rack-r01.yaml"], "names": [ADA]},
            {"labels": {"role": "storage"}, "names": [GRACE]},
        ],
    }
    return data


def declare(tmp: Path, sink_port: int) -> Path:
    """The bare repository: the sample and the hostile machine in one commit by Linus."""
    work = tmp / "work"
    shutil.copytree(ROOT / "sample-repo", work)
    for path in work.rglob("*.yaml"):
        path.write_text(path.read_text().replace("127.0.0.1:8099", f"127.0.0.1:{sink_port}"))
    (work / "policy.yaml").write_text(yaml.safe_dump(policy(), sort_keys=False))
    for name, document in HOSTILE.items():
        (work / name).write_text(yaml.safe_dump(document, sort_keys=False))
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    message = f"Declare the sample fleet\n\nApproved-by: {ADA}\nApproved-by: {GRACE}"
    git("commit", "-q", "--author", LINUS, "-m", message, cwd=work)
    bare = tmp / "infra.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp)
    return bare


@dataclass(frozen=True)
class Controller:
    url: str
    state: Path
    log: Path
    env: dict[str, str]
    shots: Path

    def get_json(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def wait_for(self, check: Any, what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.2)
        tail = self.log.read_text()[-3000:]
        raise AssertionError(f"{what} did not happen; controller log:\n{tail}")

    def settled(self) -> bool:
        """Every resource reconciled once: the first cycle's statuses are in."""
        resources = self.get_json("/api/v1/resources")["resources"]
        return len(resources) == len(EXPECTED) and all(
            r["phase"] not in ("Pending", "Provisioning") for r in resources
        )


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("ui")
    with demo_sink(free_port()) as sink:
        bare = declare(tmp, sink)
        port = free_port()
        log = tmp / "controller.log"
        env = {
            **os.environ,
            **DEMO_SECRETS,
            "PYTHONPATH": str(ROOT),
            "UI_TEST_TOKEN": TOKEN,
            "RECONCILER_API_TOKEN": "env:UI_TEST_TOKEN",
        }
        for name in ("RECONCILER_CONFIG", "RECONCILER_API_READ_OPEN"):
            env.pop(name, None)
        argv = [sys.executable, "-m", "reconciler", "--repo", str(bare)]
        argv += ["--state-dir", str(tmp / "state"), "run", "--listen", f"127.0.0.1:{port}"]
        argv += ["--interval", "1h"]
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
        shots = tmp / "screenshots"
        shots.mkdir()
        try:
            found = Controller(f"http://127.0.0.1:{port}", tmp / "state", log, env, shots)
            found.wait_for(lambda: _answers(found), "the API answering", timeout=30)
            found.wait_for(found.settled, "the first cycle")
            yield found
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def _answers(controller: Controller) -> bool:
    try:
        controller.get_json("/readyz")
    except OSError:
        return False
    return True


# pytest-playwright keeps one sync Playwright for the whole session; its event loop
# would then be running for every later test, and `asyncio.run` there fails. These
# module-scoped versions start it for the browser tests and stop it after them.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser_context_args(base_url: str | None) -> dict[str, Any]:
    return {"base_url": base_url} if base_url else {}


@pytest.fixture(scope="module")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    found: BrowserType = getattr(playwright, browser_name)
    return found


@pytest.fixture(scope="module")
def browser(
    browser_type: BrowserType, browser_type_launch_args: dict[str, Any]
) -> Iterator[Browser]:
    launched = browser_type.launch(**browser_type_launch_args)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """pytest-playwright's launch options: Debian's Chromium, kept off the network."""
    return {"executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


@dataclass
class Console:
    """What the page said on its console: errors fail the test."""

    errors: list[str]


@pytest.fixture
def console(page: Page) -> Iterator[Console]:
    found = Console([])

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            found.errors.append(f"{message.text} at {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: found.errors.append(f"page error: {error}"))
    yield found
    assert found.errors == [], found.errors


def sign_in(page: Page, url: str, token: str = TOKEN, *, then: str = "/") -> None:
    page.goto(f"{url}/signin?" + urllib.parse.urlencode({"next": then}))
    page.fill("#token", token)
    page.click("#signin-submit")


__all__ = ["Controller", "sign_in"]
