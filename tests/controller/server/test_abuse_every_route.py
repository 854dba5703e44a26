"""Every route that takes a body refuses abuse, on a real `reconciler run` process.

The list of routes is not written here: it is read from the app the controller
serves (`create_app`, included routers and the web UI's form routes too), so a
route added later is covered without anyone remembering to add it. Each gets,
from outside the process over 127.0.0.1:

- a body one byte over `RECONCILER_MAX_BODY_BYTES` (set low, so the test is cheap):
  413 naming the limit, and nothing the route would change has changed;
- a 100,000-deep JSON body from a signed-in client (correctly signed for webhooks,
  so the refusal is the body's): the answer `DEEP_ANSWERS` names for the route, never
  a 5xx, and no traceback in the controller's log. Routes that read JSON answer 400
  naming the depth limit; form routes read no JSON (no token, no CSRF token in it).
  A route missing from `DEEP_ANSWERS` fails the test until someone says what it answers.

The Terraform state backend's routes take Basic credentials made for the terraform
programs the controller runs; from outside they answer 401 before reading a body.
A deep body from such a program is tested in tests/terraform/test_backend_abuse.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import pytest

from reconciler.controller.scheduler import Scheduler
from reconciler.controller.server import create_app
from reconciler.controller.webhooks import MAX_JSON_DEPTH
from reconciler.settings import Settings
from tests.controller.server.conftest import repo_files
from tests.e2e.controller import TOKEN, WEBHOOK_SECRET, Controller, controller
from tests.e2e.support import Fleet

pytestmark = pytest.mark.slow

LIMIT = 4096
DEEP = b"[" * 100_000 + b"]" * 100_000
BODYLESS = {"GET", "HEAD", "DELETE", "OPTIONS"}
TERRAFORM = "/api/v1/terraform/state/"  # Basic credentials only terraform children get
DEPTH = f"nested deeper than {MAX_JSON_DEPTH} levels"
CSRF = "CSRF token does not match"
# What a signed-in client gets for a 100,000-deep JSON body, by route.
DEEP_ANSWERS = {
    "/api/v1/events/sim": (400, DEPTH),
    "/api/v1/requests": (400, DEPTH),
    "/api/v1/webhooks/generic": (400, DEPTH),
    "/api/v1/webhooks/github": (400, DEPTH),
    "/api/v1/webhooks/gitlab": (400, DEPTH),
    "/api/v1/sync": (202, '"phase"'),  # takes no body: never parsed
    "/api/v1/rollouts/waves/resume": (202, '"phase"'),
    "/signin": (200, "not the API token"),  # not a form: no token in it
    "/signout": (403, CSRF),
    "/operations/sync": (403, CSRF),
}
# What each path parameter is filled with: names that exist in repo_files().
PARAMS = {
    "provider": "sim",
    "rollout": "waves",
    "kind": "Machine",
    "name": "m00",
    "state": "default",
}


def _routes(routes: list[Any], prefix: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for route in routes:
        inner = getattr(route, "original_router", None) or getattr(route, "app", None)
        if hasattr(route, "methods") and hasattr(route, "path"):
            found += [(m, prefix + route.path) for m in route.methods or ()]
        elif inner is not None and hasattr(inner, "routes"):
            context = getattr(route, "include_context", None)
            more = getattr(context, "prefix", "") or getattr(route, "path", "")
            found += _routes(inner.routes, prefix + more)
    return found


def body_routes(tmp: Path) -> list[tuple[str, str]]:
    """(method, concrete path) of every route of the served app that accepts a body."""
    settings = Settings(repo=str(tmp), state_dir=tmp / "routes-state", listen="127.0.0.1:1")
    app = create_app(Scheduler(settings))
    concrete = set()
    for method, path in _routes(list(app.routes)):
        if method in BODYLESS:
            continue
        if "{source}" in path:
            concrete |= {(method, path.replace("{source}", s)) for s in ("github", "gitlab")}
            concrete.add((method, path.replace("{source}", "generic")))
            continue
        concrete.add((method, re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS[m[1]], path)))
    return sorted(concrete)


def signed(path: str, body: bytes) -> dict[str, str]:
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    source = path.rsplit("/", 1)[-1]
    return {
        "github": {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push"},
        "gitlab": {"X-Gitlab-Token": WEBHOOK_SECRET, "X-Gitlab-Event": "Push Hook"},
        "generic": {"X-Reconciler-Signature-256": signature},
    }.get(source, {})


def changes(api: Controller) -> str:
    """What a route that ran would change: the operations and request counters."""
    lines = api.client.get("/metrics").text.splitlines()
    keep = ("reconciler_webhooks", "reconciler_events", "reconciler_cycles_requested")
    return "\n".join(x for x in lines if x.startswith(keep))


def test_every_body_route_is_found(tmp_path: Path) -> None:
    found = body_routes(tmp_path)
    paths = {path for _, path in found}
    for expected in (
        "/api/v1/sync",
        "/api/v1/requests",
        "/api/v1/rollouts/waves/resume",
        "/api/v1/events/sim",
        "/api/v1/webhooks/generic",
        "/signin",
        "/operations/sync",
    ):
        assert expected in paths, found


def test_every_body_route_refuses_oversized_and_deep_bodies(tmp_path: Path) -> None:
    routes = body_routes(tmp_path)
    fleet = Fleet.create(tmp_path, repo_files(1))
    env = {"RECONCILER_MAX_BODY_BYTES": str(LIMIT)}
    with controller(fleet, tmp_path, env=env) as api:
        api.wait_for_line("cycle")
        before = changes(api)
        for method, path in routes:
            body = b'{"x": "' + b"a" * (LIMIT - 8) + b'"}'
            assert len(body) == LIMIT + 1
            answer = api.client.request(method, path, content=body, headers=signed(path, body))
            assert answer.status_code == 413, (method, path, answer.status_code, answer.text)
            assert f"larger than {LIMIT} bytes" in answer.json()["detail"], (path, answer.text)
        assert changes(api) == before  # no route ran

    fleet.env["RECONCILER_MAX_BODY_BYTES"] = str(len(DEEP) + 1)
    with controller(fleet, tmp_path) as api:
        api.wait_for_line("cycle")
        signin = api.client.post("/signin", data={"token": TOKEN, "next": "/"})
        assert signin.status_code == 303 and api.client.cookies, signin.text
        for method, path in routes:
            assert path in DEEP_ANSWERS or path.startswith(TERRAFORM), (
                f"a new route takes a body: say what {method} {path} answers a deep body"
            )
            code, words = DEEP_ANSWERS.get(path, (401, "credentials required"))
            headers = {"Content-Type": "application/json", **signed(path, DEEP)}
            answer = api.client.request(method, path, content=DEEP, headers=headers)
            assert (answer.status_code, words in answer.text) == (code, True), (
                method,
                path,
                answer.status_code,
                answer.text[:300],
            )
        log = api.log.read_text()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
