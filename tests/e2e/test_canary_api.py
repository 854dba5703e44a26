"""The tricky secret, through the answers of a running controller: API and web UI.

tests/e2e/test_canary.py searches the CLI's output, the state files, the journal
and Git. This test runs the same repository (a secret of quote, backslash, ``%``,
``+`` and ``/`` that an API echoes back with every truncation cut inside it, as a
bearer token, a basic-auth password, in a query and in a JSON body) under a real
`reconciler run`, and searches what the controller *serves*: every JSON route
(`/api/v1/resources`, one resource, `/api/v1/plan`, the operations of the first
cycle and of a sync, each resource's task-log list and every task log) and every
page of the web UI a signed-in person can open (overview, resources, each
resource's page, pipeline, timeline and logs, plan in HTML, text and Markdown,
drift, operations). Neither the secret, nor its head or tail in any encoding the
redactor covers (`secret_leaks`), may appear in any answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.controller import TOKEN, Controller, controller
from tests.e2e.support import Fleet
from tests.e2e.test_canary import TRICKY_ENV, tricky_repo
from tests.execute.conftest import TRICKY, secret_leaks
from tests.servers.fake_http import ApiServer

pytestmark = pytest.mark.slow

UI_PAGES = ("/", "/resources", "/plan", "/plan/text", "/plan/markdown", "/drift", "/operations")
RESOURCE_PAGES = ("", "/pipeline", "/timeline")


def get(api: Controller, path: str, places: dict[str, bytes | str], client: httpx.Client) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    places[path] = answer.content
    return answer.text


def finished(api: Controller, op_id: str) -> dict:
    def done() -> dict | None:
        body = api.client.get(f"/api/v1/operations/{op_id}").json()
        return body if body["phase"] in ("succeeded", "failed") else None

    return api.wait_for(done, timeout=180)


def test_the_tricky_secret_is_in_no_answer_of_the_api_or_the_ui(tmp_path: Path) -> None:
    places: dict[str, bytes | str] = {}
    with ApiServer() as echo:
        fleet = Fleet.create(tmp_path, tricky_repo(echo.url), env={TRICKY_ENV: TRICKY})
        with controller(fleet, tmp_path) as api:
            api.wait_for(lambda: api.wait_for_line("cycle failed"), timeout=180)
            op = api.client.post("/api/v1/sync").json()
            first = finished(api, op["id"])
            places[f"/api/v1/operations/{op['id']}"] = json.dumps(first)
            assert first["phase"] == "failed", first

            c = api.client
            resources = json.loads(get(api, "/api/v1/resources", places, c))
            get(api, "/api/v1/plan", places, c)
            keys = sorted(f"{r['kind']}/{r['name']}" for r in resources["resources"])
            assert len(keys) == len(tricky_repo("")["machines.yaml"].split("---\n")), keys
            logs_seen = 0
            for key in keys:
                get(api, f"/api/v1/resources/{key}", places, c)
                listing = json.loads(get(api, f"/api/v1/resources/{key}/logs", places, c))
                for entry in listing["logs"]:
                    get(api, entry["url"], places, c)
                    logs_seen += 1

            with httpx.Client(base_url=api.url, timeout=30) as browser:
                signin = browser.post("/signin", data={"token": TOKEN, "next": "/"})
                assert signin.status_code == 303, signin.text
                for page in UI_PAGES:
                    get(api, page, places, browser)
                get(api, f"/operations/{op['id']}", places, browser)
                for key in keys:
                    for suffix in RESOURCE_PAGES:
                        get(api, f"/resources/{key}{suffix}", places, browser)
                    listing = json.loads(places[f"/api/v1/resources/{key}/logs"])
                    for entry in listing["logs"]:
                        get(api, f"/resources/{key}/logs/{entry['path']}", places, browser)
        echoes = echo.requests("POST", "/echo")

    # The secret really travelled and came back in the error bodies ...
    assert {json.loads(r.body)["tricky"] for r in echoes} == {TRICKY}
    assert logs_seen >= len(keys), "every machine's task log was read"
    failures = [
        text
        for where, text in places.items()
        if where.startswith("/api/v1/resources/Machine/") and where.count("/") == 5
    ]
    assert failures and all("answered 400" in str(t) and "***" in str(t) for t in failures)
    # ... and is in no answer, in no encoding.
    assert secret_leaks(TRICKY, places) == []
