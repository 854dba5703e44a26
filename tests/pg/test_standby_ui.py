"""The web UI on a standby: signing in there, and Sync now forwarded to the leader.

Two real `reconciler run` replicas on one PostgreSQL database; a browser's requests
(httpx, with the `Origin` header a browser sends on a form POST) go to the standby only.
Assertions: the answers, the leader's record of the sync operation, the session rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_crash_resume import crash_repo
from tests.pg.support import TOKEN, PgFleet, Replica, start_replica, wait_for
from tests.servers.postgres import Cluster

pytestmark = pytest.mark.slow


def role(replica: Replica) -> str | None:
    found = replica.controller()
    return found["role"] if found else None


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def test_sign_in_and_sync_now_through_a_standby(tmp_path: Path, pg: Cluster) -> None:
    fleet = PgFleet.create_pg(tmp_path, crash_repo(2), pg)
    leader = start_replica(fleet, tmp_path, "a")
    standby: Replica | None = None
    try:
        wait_for(lambda: role(leader) == "leader", what="the first replica leads")
        standby = start_replica(fleet, tmp_path, "b")
        wait_for(lambda: role(standby) == "standby", what="the second stands by")
        origin = {"Origin": standby.url}
        with httpx.Client(base_url=standby.url, follow_redirects=False, timeout=20) as browser:
            signed = browser.post(
                "/signin", data={"token": TOKEN, "next": "/operations"}, headers=origin
            )
            assert signed.status_code == 303, signed.text
            assert signed.headers["location"] == "/operations"
            assert "x-reconciler-leader" not in signed.headers  # the standby's own answer
            assert len(fleet.sql("SELECT id FROM ui_sessions")) == 1
            page = browser.get("/operations")
            assert page.status_code == 200  # the session the standby made, read there
            csrf = csrf_of(page.text)
            synced = browser.post("/operations/sync", data={"csrf": csrf}, headers=origin)
            assert synced.status_code == 303, synced.text  # not 403: same origin, same session
            assert synced.headers["x-reconciler-leader"] == leader.url
            op_id = synced.headers["location"].rsplit("/", 1)[1]
            # Where the browser is sent next: the operation lives in the leader's memory,
            # so the standby asks the leader for it.
            shown = browser.get(f"/operations/{op_id}")
            assert shown.status_code == 200, shown.text
            assert op_id in shown.text and shown.headers["x-reconciler-leader"] == leader.url
        op = leader.get(f"/api/v1/operations/{op_id}")
        assert op.status_code == 200 and op.json()["trigger"] == "sync:ui"
        via_standby = standby.get(f"/api/v1/operations/{op_id}")
        assert via_standby.status_code == 200, via_standby.text
        assert via_standby.json()["id"] == op_id and via_standby.json()["trigger"] == "sync:ui"
    finally:
        leader.stop()
        if standby is not None:
            standby.stop()
