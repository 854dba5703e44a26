"""The scheduler comes back when what a cycle left waiting is due (`Requeue`), not at the
next interval: a failed resource when its backoff ends, a destructive action when its
change window opens. Against the real server on 127.0.0.1 and the simulator; the
interval is an hour, so only the requeue can bring the cycle back."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.controller.server.conftest import declare, push, repo_files, running, settings_for

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def failing_files() -> dict[str, str]:
    files = repo_files(1, failure_rate=1.0)
    files["policy.yaml"] = """\
apiVersion: reconciler/v1
kind: Policy
metadata: {name: default}
spec: {failureBackoff: {initial: 1s, maximum: 1s}}
"""
    return files


def test_a_failed_resource_is_tried_again_when_its_backoff_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = declare(tmp_path, failing_files())
    with running(settings_for(bare, tmp_path / "state"), monkeypatch) as api:

        def attempts() -> int:
            answer = api.client.get("/api/v1/resources/Machine/m00")
            failure = answer.json().get("failure") if answer.status_code == 200 else None
            return int(failure["attempts"]) if failure else 0

        assert api.wait_for(lambda: attempts() >= 3), "tried again at each backoff's end"
        requeued = [op for op in api.scheduler.operations.recent() if op.trigger == "requeue"]
        assert len(requeued) >= 2 and all(
            op.phase in ("succeeded", "failed") for op in requeued[1:]
        )
        assert api.scheduler.cycles_run >= 3  # the startup cycle and the requeued ones


def windowed_files(os_name: str, window_day: str) -> dict[str, str]:
    files = repo_files(1, os_name=os_name)
    files["stages.yaml"] = files["stages.yaml"].replace(
        "spec:\n  converges", "spec:\n  destructive: true\n  converges"
    )
    files["policy.yaml"] = f"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {{name: default}}
spec:
  maxDestructiveActions: 5
  changeWindows: [{{days: [{window_day}], start: "02:00", end: "03:00", timezone: UTC}}]
"""
    return files


def test_a_destructive_action_left_for_a_change_window_brings_the_controller_back_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = datetime.now(UTC)
    in_two_days = (today + timedelta(days=2)).date()
    day = DAYS[in_two_days.weekday()]  # closed today: it opens in two days at 02:00
    bare = declare(tmp_path, repo_files(1))
    settings = settings_for(bare, tmp_path / "state", api_read_open=True)
    with running(settings, monkeypatch) as api:
        api.idle()
        assert api.scheduler.come_back is None  # nothing waits
        push(bare, windowed_files("rhel", day), "Re-image, in the window")
        op = api.operation(api.client.post("/api/v1/sync").json()["id"])
        assert op["phase"] == "succeeded", op
        expected = datetime(in_two_days.year, in_two_days.month, in_two_days.day, 2, 0, tzinfo=UTC)
        assert api.scheduler.come_back == (expected, "a change window opens")
        overview = api.client.get("/").text
        line = re.search(r'<p id="come-back">(.*?)</p>', overview, re.S)
        assert line is not None, overview
        assert expected.strftime("%Y-%m-%d %H:%M:%S UTC") in line[1]
        assert "a change window opens" in line[1]
