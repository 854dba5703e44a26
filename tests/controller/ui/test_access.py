"""Who may see and do what in the web UI, over HTTP against a real `reconciler run`.

Two controllers (subprocesses, a two-machine fleet): one with read access open and
no API token (pages open to all, nobody can sign in or sync), one with a token
and read access closed (pages need a session; the session lives in the server,
so a cookie replayed after sign-out is refused). Also: the security headers, the
packaged htmx, and `GET /api/v1/resources` pages, the same rows as the UI's.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.controller.ui.sessions import COOKIE
from tests.conftest import BASE_FILES
from tests.controller.monitoring.test_metrics_and_logs import running
from tests.controller.server.conftest import push
from tests.e2e.support import Fleet
from tests.servers.git import git

TOKEN = "access-test-token-0123456789"
READER_TOKEN = "access-reader-token-0123456789"
OPS_TOKEN = "access-ops-token-0123456789"
NAMED_TOKENS = (
    '{"dashboard": {"token": "env:READER_TOKEN", "scopes": ["read"]},'
    ' "ops": {"token": "env:OPS_TOKEN", "scopes": ["sync"]}}'
)
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
"""htmx 2.0.11's dist/htmx.min.js (see reconciler/controller/ui/static/README.md)."""


def _wait_reconciled(url: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/api/v1/resources", headers=headers or {}, timeout=5)
            found = answer.json().get("resources", []) if answer.status_code == 200 else []
            if len(found) == 2 and all(r["phase"] == "Ready" for r in found):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the first cycle did not reconcile both machines")


@pytest.fixture(scope="module")
def open_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("open")
    fleet = Fleet.create(tmp, dict(BASE_FILES))
    git("--git-dir", str(fleet.bare), "branch", "request/more-disks", "main")
    env = {"RECONCILER_API_READ_OPEN": "true", "RECONCILER_PLAN_BRANCHES": "request/*"}
    with running(fleet, tmp, env=env) as (url, _log):
        _wait_reconciled(url)
        yield url


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Fleet]]:
    tmp: Path = tmp_path_factory.mktemp("closed")
    fleet = Fleet.create(tmp, dict(BASE_FILES))
    env = {
        "ACCESS_TOKEN": TOKEN,
        "RECONCILER_API_TOKEN": "env:ACCESS_TOKEN",
        "READER_TOKEN": READER_TOKEN,
        "OPS_TOKEN": OPS_TOKEN,
        "RECONCILER_API_TOKENS": NAMED_TOKENS,
    }
    with running(fleet, tmp, env=env) as (url, _log):
        _wait_reconciled(url, {"Authorization": f"Bearer {TOKEN}"})
        yield url, fleet


@pytest.fixture
def closed_controller(closed: tuple[str, Fleet]) -> str:
    return closed[0]


def sign_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=10)
    answer = client.post("/signin", data={"token": TOKEN, "next": "/resources"})
    assert answer.status_code == 303 and answer.headers["location"] == "/resources"
    return client


def finished(url: str, op_id: str) -> dict[str, Any]:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        op: dict[str, Any] = httpx.get(f"{url}/api/v1/operations/{op_id}", headers=bearer).json()
        if op["phase"] in ("succeeded", "failed"):
            return op
        time.sleep(0.2)
    raise AssertionError(f"operation {op_id} did not finish")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def test_read_open_pages_need_no_session_but_sync_does(open_controller: str) -> None:
    with httpx.Client(base_url=open_controller, follow_redirects=False, timeout=10) as client:
        for path in ("/", "/resources", "/resources/Machine/m1", "/plan", "/drift", "/operations"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            policy = answer.headers["content-security-policy"]
            assert "default-src 'none'; script-src 'self'" in policy
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert "Sign in to sync" in client.get("/").text
        assert 'id="sync-now"' not in client.get("/").text

        sync = client.post("/operations/sync", data={"csrf": "anything"})
        assert sync.status_code == 303 and sync.headers["location"].startswith("/signin")

        # No token configured: nobody can sign in, whatever they post.
        form = client.get("/signin").text
        assert "No API token is configured" in form
        answer = client.post("/signin", data={"token": "", "next": "/"})
        assert "no one can sign in" in answer.text
        assert COOKIE not in answer.headers.get("set-cookie", "")


def test_a_named_token_that_may_sync_signs_in(closed_controller: str) -> None:
    # (A read-only one is refused: see the throttle's test, where it counts as a wrong one.)
    with httpx.Client(base_url=closed_controller, follow_redirects=False, timeout=10) as client:
        accepted = client.post("/signin", data={"token": OPS_TOKEN, "next": "/plan"})
        assert accepted.status_code == 303 and accepted.headers["location"] == "/plan"
        assert COOKIE in accepted.headers["set-cookie"]


def test_closed_pages_need_a_session_held_by_the_server(closed_controller: str) -> None:
    with httpx.Client(base_url=closed_controller, follow_redirects=False, timeout=10) as anon:
        answer = anon.get("/resources?phase=Ready")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/signin?next=%2Fresources%3Fphase%3DReady"
        assert anon.get("/ui/live", headers={"HX-Request": "true"}).headers["hx-redirect"]
        anon.cookies.set(COOKIE, "forged.value.signature")
        assert anon.get("/resources").status_code == 303
        elsewhere = anon.post(
            "/signin", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
        )
        assert elsewhere.status_code == 403
        assert (
            anon.post("/signin", data={"token": TOKEN, "next": "//evil.example/"}).headers[
                "location"
            ]
            == "/"
        )

    client = httpx.Client(base_url=closed_controller, follow_redirects=False, timeout=10)
    set_cookie = client.post("/signin", data={"token": TOKEN}).headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert TOKEN not in set_cookie
    cookie = client.cookies[COOKIE]
    page = client.get("/resources")
    assert page.status_code == 200 and "Machine" in page.text and TOKEN not in page.text
    csrf = csrf_of(page.text)

    assert client.post("/signout", data={"csrf": "wrong"}).status_code == 403
    assert client.get("/resources").status_code == 200  # still signed in
    assert client.post("/signout", data={"csrf": csrf}).status_code == 303

    # The old cookie, replayed: the server forgot its session.
    with httpx.Client(base_url=closed_controller, follow_redirects=False, timeout=10) as replay:
        replay.cookies.set(COOKIE, cookie)
        assert replay.get("/resources").status_code == 303


def test_sync_with_the_session_and_its_csrf_token(closed_controller: str) -> None:
    client = sign_in(closed_controller)
    csrf = csrf_of(client.get("/operations").text)
    assert client.post("/operations/sync", data={"csrf": "forged"}).status_code == 403
    answer = client.post("/operations/sync", data={"csrf": csrf})
    assert answer.status_code == 303
    op_id = answer.headers["location"].rsplit("/", 1)[1]
    op = finished(closed_controller, op_id)
    assert (op["trigger"], op["phase"]) == ("sync:ui", "succeeded")
    assert f"/operations/{op_id}" in client.get("/operations").text


def test_htmx_is_packaged_and_cached(open_controller: str) -> None:
    answer = httpx.get(f"{open_controller}/ui/static/htmx.min.js", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(answer.content).hexdigest() == HTMX_SHA256
    again = httpx.get(
        f"{open_controller}/ui/static/htmx.min.js",
        headers={"If-None-Match": answer.headers["etag"]},
        timeout=10,
    )
    assert again.status_code == 304
    assert httpx.get(f"{open_controller}/ui/static/..%2Fviews.py", timeout=10).status_code == 404


def test_api_resources_pages_and_filters(open_controller: str) -> None:
    everything = httpx.get(f"{open_controller}/api/v1/resources", timeout=10).json()
    assert [r["name"] for r in everything["resources"]] == ["m1", "m2"]
    assert "total" not in everything
    page = httpx.get(f"{open_controller}/api/v1/resources?offset=1&limit=1", timeout=10).json()
    assert (page["total"], page["offset"], page["limit"]) == (2, 1, 1)
    assert [r["name"] for r in page["resources"]] == ["m2"]
    found = httpx.get(f"{open_controller}/api/v1/resources?q=m1", timeout=10).json()
    assert [r["name"] for r in found["resources"]] == ["m1"] and found["total"] == 1
    none = httpx.get(f"{open_controller}/api/v1/resources?phase=Failed", timeout=10).json()
    assert (none["total"], none["resources"]) == (0, [])
    bad = httpx.get(f"{open_controller}/api/v1/resources?limit=many", timeout=10)
    assert bad.status_code == 422


def test_plan_page_shows_the_watched_branches_plans(open_controller: str) -> None:
    page = httpx.get(f"{open_controller}/plan", timeout=10).text
    assert "plans/request/more-disks.md" in page
    assert "Plan: 2 to create" in page  # the current plan's summary line, as the CLI says it


def test_overview_says_why_the_revision_in_force_is_stale(closed: tuple[str, Fleet]) -> None:
    """Last in this module: the closed controller keeps an invalid head from here on."""
    url, fleet = closed
    before = httpx.get(f"{url}/readyz").json()["revision"]
    broken = "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m3}\n"
    broken += "spec: {provider: sim, pipeline: bm, '<script>x</script>': 1}\n"
    push(fleet.bare, {**BASE_FILES, "broken.yaml": broken}, "Break it")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    op = httpx.post(f"{url}/api/v1/sync", headers=bearer).json()
    assert finished(url, op["id"])["phase"] == "failed"

    page = sign_in(url).get("/").text
    assert f'id="revision-in-force">{before}<' in page
    assert "Stale: ValidationFailed" in page
    assert "broken.yaml:4:" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page


def test_wrong_tokens_close_sign_in_for_a_minute(closed_controller: str) -> None:
    """Last: 127.0.0.1 cannot sign in to the closed controller for a minute after this."""
    with httpx.Client(base_url=closed_controller, follow_redirects=False, timeout=10) as client:
        # A UI session can queue a sync, so a read-only named token is refused at sign-in.
        for guess in [READER_TOKEN] + ["guess"] * 9:
            answer = client.post("/signin", data={"token": guess})
            assert answer.status_code == 200 and "That is not the API token." in answer.text
            assert COOKIE not in answer.headers.get("set-cookie", "")
        refused = client.post("/signin", data={"token": TOKEN})
        assert refused.status_code == 429 and "Too many wrong tokens" in refused.text
        assert COOKIE not in refused.headers.get("set-cookie", "")
