"""Real parts for the portal's tests: a repository served by `git daemon`, a person's clone,
and the controller's API (scheduler + uvicorn on 127.0.0.1) following it.

The repository offers one pipeline in the catalog (`server`: an OS from two, a secure
root password, an optional size) over the simulator; `Fleet` is what a person does
with Git (merge a request branch, delete one) and what the test reads back from the
served repository (branches, commits, status files).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reconciler.settings import Settings
from tests.controller.server.conftest import Running, running, settings_for, write_files
from tests.servers.git import git, git_daemon

TOKENS = {
    "PORTAL_TOKEN": "portal-token-0123456789",
    "OPS_TOKEN": "ops-token-0123456789",
    "READER_TOKEN": "reader-token-0123456789",
    "INTAKE_TOKEN": "intake-token-0123456789",
}
API_TOKENS = {
    "backstage": {"token": "env:PORTAL_TOKEN", "scopes": ["read", "request"]},
    "ops": {"token": "env:OPS_TOKEN", "scopes": ["sync"]},
    "dashboard": {"token": "env:READER_TOKEN", "scopes": ["read"]},
    "intake": {"token": "env:INTAKE_TOKEN", "scopes": ["request"]},
}

FILES = {
    "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: lab}
spec: {type: simulator}
""",
    "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  converges: [params.os]
  work:
    - {name: install, type: provider, action: install-os}
""",
    "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: server}
spec:
  description: A bare-metal server with an operating system
  catalog:
    title: Bare-metal server
    description: A machine of the lab, installed with the OS you choose
    kinds: [Machine]
    tags: [compute, lab]
  inputs:
    - {name: os, allowed: [ubuntu-24.04, rhel-9], required: true, description: Operating system}
    - {name: rootPassword, secure: true}
    - {name: licence, secure: true, description: The vendor's licence key}
    - {name: disks, type: integer, default: 2}
  steps:
    - stage: install-os
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: internal}
spec:
  steps:
    - stage: install-os
""",
    "profiles.yaml": """\
apiVersion: reconciler/v1
kind: Profile
metadata: {name: web}
spec:
  description: Web servers
  params: {disks: 4}
""",
    "machines.yaml": """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: existing}
spec:
  provider: lab
  pipeline: server
  params: {os: ubuntu-24.04}
""",
}

REQUEST = {
    "kind": "Machine",
    "name": "web-07",
    "pipeline": "server",
    "provider": "lab",
    "profiles": ["web"],
    "inputs": {"os": "rhel-9", "rootPassword": "env:WEB07_ROOT"},
    "requester": {"name": "Grace Hopper", "email": "grace@example.com"},
    "reason": "A web server for the conference site",
}


@dataclass
class Fleet:
    """The served repository, a person's clone, and the running controller's API."""

    tmp: Path
    bare: Path
    work: Path
    settings: Settings
    monkeypatch: pytest.MonkeyPatch
    stack: ExitStack
    api: Running

    def restart(self) -> None:
        """Stop the controller and start a new one over the same state directory."""
        self.stack.close()
        self.stack = ExitStack()
        self.api = self.stack.enter_context(running(self.settings, self.monkeypatch))
        self.api.wait_for(lambda: self.api.scheduler.cycles_run >= 1)

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.api.url, headers=headers, timeout=20.0)

    def branches(self, pattern: str = "request/*") -> list[str]:
        out = git("--git-dir", str(self.bare), "for-each-ref", "--format=%(refname:short)",
                  f"refs/heads/{pattern}")  # fmt: skip
        return out.split()

    def show(self, ref: str, path: str) -> str:
        return git("--git-dir", str(self.bare), "show", f"{ref}:{path}")

    def log(self, ref: str, fmt: str) -> str:
        return git("--git-dir", str(self.bare), "log", "-1", f"--format={fmt}", ref)

    def status(self, key: str) -> dict[str, Any]:
        kind, name = key.split("/")
        return yaml.safe_load(self.show("reconciler/status", f"status/{kind}/{name}.yaml"))

    def merge(self, branch: str) -> str:
        git("fetch", "-q", "origin", cwd=self.work)
        git("checkout", "-q", "main", cwd=self.work)
        git("merge", "-q", "--no-ff", "-m", f"Merge {branch}", f"origin/{branch}", cwd=self.work)
        git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def delete_branch(self, branch: str) -> None:
        git("push", "-q", "origin", "--delete", branch, cwd=self.work)

    def sync(self) -> dict[str, Any]:
        """A cycle now (a person's `POST /sync`), to its end."""
        with self.client(TOKENS["OPS_TOKEN"]) as ops:
            op = ops.post("/api/v1/sync").json()["id"]
        return self.api.operation(op)

    def wait_phase(self, request_id: str, *phases: str, timeout: float = 40.0) -> dict[str, Any]:
        with self.client(TOKENS["PORTAL_TOKEN"]) as portal:

            def reached() -> dict[str, Any] | None:
                body = portal.get(f"/api/v1/requests/{request_id}").json()
                return body if body["phase"] in phases else None

            return self.api.wait_for(reached, timeout)


@contextmanager
def start_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> Iterator[Fleet]:
    """The served repository (the lab, one commit on main) and the controller running."""
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEB07_ROOT", "s3cret-root-password")
    with git_daemon(tmp_path / "srv") as server:
        work = tmp_path / "work"
        git("clone", "-q", str(server.bare), str(work), cwd=tmp_path)
        write_files(work, FILES)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "The lab", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        values: dict[str, Any] = {
            "repo": server.url,
            "plan_branches": "request/*",
            "api_tokens": API_TOKENS,
            "git_author_name": "reconciler-bot",
            "git_author_email": "bot@reconciler.example",
            **overrides,
        }
        settings = settings_for(tmp_path / "unused", tmp_path / "state", **values)
        stack = ExitStack()
        api = stack.enter_context(running(settings, monkeypatch))
        try:
            api.wait_for(lambda: api.scheduler.cycles_run >= 1)
            fleet = Fleet(tmp_path, server.bare, work, settings, monkeypatch, stack, api)
            yield fleet
        finally:
            fleet.stack.close() if "fleet" in locals() else stack.close()


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    with start_fleet(tmp_path, monkeypatch) as found:
        yield found


def wait(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")


__all__ = ["FILES", "REQUEST", "TOKENS", "Fleet", "start_fleet", "wait"]
