"""What people on call get from `reconciler run`: one log line per cycle, failures at
error level with their reasons, and the metrics the examples/monitoring/ rules and
dashboard use — every name they reference scraped from a running controller.

`reconciler run` is a real subprocess against a bare repository on disk; the test
reads its stderr (JSON lines) and its /metrics over HTTP.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE_FILES, ROOT
from tests.e2e.support import Fleet

MONITORING = ROOT / "examples" / "monitoring"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@contextmanager
def running(fleet: Fleet, tmp: Path, *, env: dict[str, str] | None = None,
            repo: str | None = None) -> Iterator[tuple[str, Path]]:  # fmt: skip
    port = free_port()
    log = tmp / f"run-{port}.log"
    args = ["run", "--listen", f"127.0.0.1:{port}", "--interval", "1h"]
    argv = fleet.argv(*args)
    if repo is not None:
        argv[argv.index("--repo") + 1] = repo
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=out, env={**fleet.env, **(env or {})})
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def wait_for_line(log: Path, event: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in log_lines(log) if line.get("event") == event]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {event!r} line in {log.read_text()[-3000:]}")


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        return answer.read().decode()


def families(text: str) -> dict[str, str]:
    """Metric family name -> type, from the exposition's `# TYPE` lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": (),
}


def exported(name: str, known: dict[str, str]) -> bool:
    for family, kind in known.items():
        if name == family or name in {family + s for s in SUFFIXES.get(kind, ())}:
            return True
    return False


def test_one_info_line_per_cycle_and_every_metric_the_examples_use(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    head = subprocess.run(["git", "--git-dir", str(fleet.bare), "rev-parse", "main"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with running(fleet, tmp_path) as (url, log):
        line = wait_for_line(log, "cycle")
        text = scrape(url)
    assert line["level"] == "info"
    assert line["revision"] == head[:12]
    assert line["scope"] == "full"
    assert (line["planned"], line["succeeded"], line["failed"], line["blocked"]) == (2, 2, 0, 0)
    assert isinstance(line["duration_s"], float)
    assert not [x for x in log_lines(log) if x.get("event") == "cycle failed"]

    known = families(text)
    used = set()
    for path in MONITORING.iterdir():
        used |= set(re.findall(r"\breconciler_[a-z_]+", path.read_text()))
    assert len(used) > 10
    missing = sorted(name for name in used if not exported(name, known))
    assert missing == [], (
        f"examples/monitoring uses metrics the controller does not export: {missing}"
    )

    # The samples behind them, after one cycle that created two machines.
    assert 'reconciler_resource_ready{kind="Machine",name="m1",provider="sim"} 1.0' in text
    assert "reconciler_resource_series_capped 0.0" in text
    assert re.search(
        r'reconciler_task_duration_seconds_count\{provider="sim",stage="install-os"\} 2\.0', text
    )
    assert re.search(
        r'reconciler_stage_duration_seconds_count\{provider="sim",stage="install-app"\} 2\.0', text
    )
    observe_calls = r'_request_duration_seconds_count\{operation="observe",provider="sim"\} [1-9]'
    assert re.search("reconciler_provider" + observe_calls, text)
    for phase in ("fetch", "load", "observe", "plan", "execute", "write"):
        assert f'reconciler_cycle_phase_duration_seconds_count{{phase="{phase}"}} 1.0' in text, (
            phase
        )
    assert 'reconciler_drifted_resources{kind="Machine"} 0.0' in text


def test_per_resource_series_are_capped(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    with running(fleet, tmp_path, env={"RECONCILER_METRICS_RESOURCE_SERIES": "1"}) as (url, log):
        wait_for_line(log, "cycle")
        text = scrape(url)
    assert "reconciler_resource_series_capped 1.0" in text
    assert "reconciler_resource_ready{" not in text
    assert 'reconciler_resources{phase="Ready"} 2.0' in text  # the aggregates stay


def test_an_unreachable_repository_is_an_error_line_with_its_reason(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    # A remote nothing listens on (a local path that does not exist is refused at start).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    gone = f"git://127.0.0.1:{closed}/gone.git"
    with running(fleet, tmp_path, repo=gone) as (url, log):
        line = wait_for_line(log, "cycle failed")
        text = scrape(url)
    assert line["level"] == "error"
    assert line["reason"] == "RemoteUnavailable"
    assert line["revision"] is None
    assert any("gone.git" in error for error in line["errors"])
    assert not [x for x in log_lines(log) if x.get("event") == "cycle"]
    assert 'reconciler_source_errors_total{reason="RemoteUnavailable"} 1.0' in text


def test_alert_rules_pass_promtool() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: prometheus; .ci/run installs it)")
    checked = subprocess.run(["promtool", "check", "rules", str(MONITORING / "alerts.yaml")],
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_panels_query_prometheus() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    targets = [t for p in dashboard["panels"] for t in p["targets"]]
    assert targets and all(t["expr"] and t["datasource"]["type"] == "prometheus" for t in targets)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
