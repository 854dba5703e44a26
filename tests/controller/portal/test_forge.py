"""Pull (merge) requests for portal requests, against a local HTTP server that records calls.

GitHub and GitLab cannot run here (no network, no package of either), so a small
HTTP server on 127.0.0.1 answers their REST routes the way their documentation
says (status codes and the fields reconciler reads) and records every call; the
rest is real: the git daemon, the running controller, its branch plans.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.controller.portal.conftest import REQUEST, TOKENS, Fleet, start_fleet
from tests.servers.git import git

pytestmark = pytest.mark.slow

FORGE_TOKEN = "forge-token-0123456789"


class Recorder:
    """The calls a fake forge received, and what it answers."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.existing: dict[str, Any] | None = None
        """GitLab: an open merge request that already exists (the first POST gets 409)."""

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/repos/acme/infra/pulls":
            return 201, {"number": 7, "html_url": "https://github.example/acme/infra/pull/7"}
        if method == "PATCH" and path == "/repos/acme/infra/pulls/7":
            return 200, {"number": 7}
        base = "/api/v4/projects/acme%2Finfra/merge_requests"
        if method == "POST" and path == base:
            if self.existing is not None:
                return 409, {"message": ["Another open merge request already exists"]}
            return 201, {
                "iid": 3,
                "web_url": "https://gitlab.example/acme/infra/-/merge_requests/3",
            }
        if method == "GET" and path.startswith(base + "?"):
            return 200, [self.existing] if self.existing else []
        if method == "PUT" and path.startswith(base + "/"):
            return 200, {"iid": int(path.rsplit("/", 1)[1])}
        return 404, {"message": "Not Found"}


@contextmanager
def fake_forge() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            recorder.calls.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers),
                 "body": body}
            )  # fmt: skip
            status, answer = recorder.answer(self.command, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()


def push_to_branch(fleet: Fleet, branch: str, old: str, new: str) -> None:
    """A person changes the request on its branch (a reviewer's fix)."""
    git("fetch", "-q", "origin", cwd=fleet.work)
    git("checkout", "-q", "-B", branch, f"origin/{branch}", cwd=fleet.work)
    path = fleet.work / "requests" / "machine" / "web-07.yaml"
    path.write_text(path.read_text().replace(old, new))
    git("commit", "-q", "-am", "Ubuntu after all", cwd=fleet.work)
    git("push", "-q", "origin", f"HEAD:{branch}", cwd=fleet.work)
    git("checkout", "-q", "main", cwd=fleet.work)


def test_github_pull_request_carries_the_plan_and_follows_the_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_TOKEN", FORGE_TOKEN)
    with fake_forge() as (url, forge), start_fleet(
        tmp_path, monkeypatch, forge="github", forge_url=url, forge_project="acme/infra",
        forge_token="env:FORGE_TOKEN",
    ) as fleet:  # fmt: skip
        portal = fleet.client(TOKENS["PORTAL_TOKEN"])
        request_id = portal.post("/api/v1/requests", json=REQUEST).json()["id"]
        branch = f"request/{request_id}"
        planned = fleet.wait_phase(request_id, "planned")
        opened = fleet.api.wait_for(
            lambda: portal.get(f"/api/v1/requests/{request_id}").json().get("pullRequest")
        )
        assert opened == {"number": 7, "url": "https://github.example/acme/infra/pull/7",
                          "shown": planned["plan"]["hash"]}  # fmt: skip
        posts = [c for c in forge.calls if c["method"] == "POST"]
        assert len(posts) == 1
        call = posts[0]
        assert call["path"] == "/repos/acme/infra/pulls"
        assert call["headers"]["Authorization"] == f"Bearer {FORGE_TOKEN}"
        assert call["headers"]["Accept"] == "application/vnd.github+json"
        body = call["body"]
        assert body["head"] == branch and body["base"] == "main"
        assert body["title"] == "Request Machine/web-07 (pipeline server)"
        plan_md = fleet.show("reconciler/status", f"plans/{branch}.md")
        assert plan_md in body["body"]  # the plan, as the controller wrote it for reviewers
        assert "+ Machine/web-07  create: install-os" in body["body"]
        assert "Requested by Grace Hopper <grace@example.com>" in body["body"]

        # The branch moves: planned again, and the description follows.
        push_to_branch(fleet, branch, "os: rhel-9", "os: ubuntu-24.04")
        assert fleet.sync()["phase"] == "succeeded"

        def patched() -> list[dict[str, Any]]:
            portal.get(f"/api/v1/requests/{request_id}")
            return [c for c in forge.calls if c["method"] == "PATCH"]

        patches = fleet.api.wait_for(patched)
        assert patches[0]["path"] == "/repos/acme/infra/pulls/7"
        new_plan = fleet.show("reconciler/status", f"plans/{branch}.md")
        assert new_plan != plan_md and new_plan in patches[0]["body"]["body"]
        assert len([c for c in forge.calls if c["method"] == "POST"]) == 1  # never a second
        # The forge's token shows nowhere else.
        answer = portal.get(f"/api/v1/requests/{request_id}").text
        assert FORGE_TOKEN not in answer
        assert FORGE_TOKEN not in (fleet.tmp / "state" / "requests.sqlite").read_bytes().decode(
            "latin-1"
        )


def test_gitlab_merge_request_found_again_after_a_lost_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_TOKEN", FORGE_TOKEN)
    with fake_forge() as (url, forge), start_fleet(
        tmp_path, monkeypatch, forge="gitlab", forge_url=f"{url}/api/v4",
        forge_project="acme/infra", forge_token="env:FORGE_TOKEN",
    ) as fleet:  # fmt: skip
        # A merge request for the branch exists already (opened before a crash lost the answer).
        forge.existing = {
            "iid": 12,
            "web_url": "https://gitlab.example/acme/infra/-/merge_requests/12",
        }
        portal = fleet.client(TOKENS["PORTAL_TOKEN"])
        request_id = portal.post("/api/v1/requests", json=REQUEST).json()["id"]
        fleet.wait_phase(request_id, "planned")
        link = fleet.api.wait_for(
            lambda: portal.get(f"/api/v1/requests/{request_id}").json().get("pullRequest")
        )
        assert link["number"] == 12 and link["url"].endswith("/merge_requests/12")
        methods = [(c["method"], c["path"].split("?")[0]) for c in forge.calls]
        base = "/api/v4/projects/acme%2Finfra/merge_requests"
        assert methods == [("POST", base), ("GET", base), ("PUT", f"{base}/12")]
        post = forge.calls[0]
        assert post["headers"]["PRIVATE-TOKEN"] == FORGE_TOKEN
        assert post["body"]["source_branch"] == f"request/{request_id}"
        assert post["body"]["target_branch"] == "main"
        assert "+ Machine/web-07  create: install-os" in forge.calls[2]["body"]["description"]
        assert "source_branch=request%2F" in forge.calls[1]["path"]
