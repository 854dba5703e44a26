"""`reconciler run` backs off a remote that refuses it, as the source's `retry_after` says.

A real smart-HTTP remote (lighttpd + git http-backend, basic auth) on 127.0.0.1
whose password changes under a running controller: the fetch is refused (401),
the source suggests the backoff cap (5 minutes), and the interval's ticks (every
0.1 s here) no longer reach the remote; a person's sync still does at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controller.server.conftest import repo_files, running, settings_for
from tests.repos import commit_tree
from tests.servers.git import Server, ServerUnavailable, git_http

USER = "deploy"
PASSWORD = "backoff-Pw-61d0c2"


@pytest.fixture
def http(tmp_path: Path) -> Iterator[Server]:
    try:
        with git_http(tmp_path / "srv", username=USER, password=PASSWORD) as server:
            yield server
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


def test_scheduled_cycles_wait_out_a_refusing_remote(
    http: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_tree(http.bare, repo_files(1), "Declare")
    monkeypatch.setenv("RECONCILER_TEST_GIT_PASSWORD", PASSWORD)
    settings = settings_for(
        http.bare,
        tmp_path / "state",
        repo=http.url,
        git_username=USER,
        git_password="env:RECONCILER_TEST_GIT_PASSWORD",
        interval=0.1,
    )
    with running(settings, monkeypatch) as api:
        api.wait_for(lambda: api.scheduler.cycles_run >= 1 and api.scheduler.ready)
        (http.root / "users").write_text(f"{USER}:rotated-elsewhere\n", encoding="utf-8")
        refused = 'reconciler_source_errors_total{reason="RemoteRefused"} 1.0'
        api.wait_for(lambda: refused in api.client.get("/metrics").text)
        refused_at = api.scheduler.cycles_run
        asked = len(api.scheduler.operations)
        # The interval keeps asking (every tick joins the one waiting cycle)...
        s = api.scheduler
        api.wait_for(lambda: len(s.operations) >= asked + 5 and not s.busy and s._cycle_wanted)
        # ...and nothing ran: the remote is left alone for its retry_after (5 minutes).
        assert api.scheduler.cycles_run == refused_at
        assert refused in api.client.get("/metrics").text  # refused once, not again
        waiting = api.scheduler.operations.get(api.scheduler._cycle_wanted[0])
        assert waiting is not None and waiting.phase == "pending"

        # A person asking does not wait: the sync runs (and answers the ticks' cycle too).
        op = api.client.post("/api/v1/sync").json()["id"]
        done = api.operation(op)
        assert api.scheduler.cycles_run == refused_at + 1
        assert done["phase"] == "failed"
        assert any("RemoteRefused" in e for e in done["errors"]), done["errors"]
        assert api.operation(waiting.id)["phase"] == "failed"
