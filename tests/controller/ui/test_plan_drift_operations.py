"""The plan, resource, drift and operations pages against a real `reconciler run` subprocess.

One controller for the module, three machines on the simulator (its `install-os`
and `configure` slowed to a few seconds by the provider's `latency` setting, so a
stage is seen running). The first cycle provisions them; then one commit re-images two of
them (`install-os` is `destructive`), one of which the Policy protects, and
changes the third's application:

- the plan page lists the blocked action, then the destructive one, then every
  action by wave, each with its stages and its why (`reconciler plan`'s lines);
- the resource page, in Chromium, shows the re-imaged machine's pipeline running
  (the stage and its task) and, polled without a reload, done; its timeline shows
  the plan hash and each task's start, end and result, as `reconciler audit` does;
- drift made at the simulator's console shows on the drift page and the resource
  page with since when it was first seen (kept across cycles) and that self-heal
  (off) only reports it;
- a signed generic webhook and a provider event show on the operations page with
  their trigger;
- a provider event is an operation of its own: its page, in Chromium, shows the
  targeted reconcile's self-heal running and, without a reload, done.

The tests run in file order: each builds on what the one before did.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from reconciler.report.audit import parse_time
from tests.controller.monitoring.test_metrics_and_logs import running
from tests.controller.server.conftest import push
from tests.controller.ui.conftest import Console
from tests.e2e.support import Fleet

pytestmark = pytest.mark.slow

TOKEN = "plan-drift-ops-token-0123456789"
HOOK_SECRET = "plan-drift-ops-hook-secret"
HOSTILE_SUBJECT = "Re-image <b>two</b> & <script>window.__pwned=1</script>"


def files(
    os_a: str = "ubuntu", os_z: str = "ubuntu", app: str = "web", *, heal: bool = False
) -> dict[str, str]:
    return {
        "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec:
  type: simulator
  settings: {latency: {install-os: 6s, configure: 3s, default: 0s}}
""",
        "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  destructive: true
  converges: [params.os]
  work:
    - {name: install, type: provider, action: install-os}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-app}
spec:
  converges: [params.app]
  work:
    - {name: configure, type: provider, action: configure, args: {app: "${params.app}"}}
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: app}
spec:
  inputs: [{name: app, allowed: [web, db], default: web}]
  steps: [{stage: install-app}]
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bm}
spec:
  inputs: [{name: os, allowed: [ubuntu, rhel], required: true}]
  steps: [{stage: install-os}]
""",
        "machines.yaml": f"""\
apiVersion: reconciler/v1
kind: Machine
metadata: {{name: m-base}}
spec: {{provider: sim, pipeline: app, params: {{app: {app}}}}}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {{name: a-reimage}}
spec: {{provider: sim, pipeline: bm, params: {{os: {os_a}}}, dependsOn: [m-base]}}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {{name: z-locked}}
spec: {{provider: sim, pipeline: bm, params: {{os: {os_z}}}}}
""",
        "policy.yaml": f"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {{name: default}}
spec:
  selfHeal: {"true" if heal else "false"}
  maxDestructiveActions: 5
  protected: [{{name: Machine/z-locked}}]
""",
    }


@dataclass
class Run:
    url: str
    log: Path
    fleet: Fleet
    http: httpx.Client
    reimage: str
    """The commit re-imaging the machines."""
    sync: str = ""
    """The operation of the sync that applies it."""
    drift_since: str = ""
    """When the drift of Machine/m-base was first seen, as the pages stamp it."""

    def until(self, check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{what} did not happen; log:\n{self.log.read_text()[-3000:]}")

    def phase(self, key: str) -> str:
        answer = self.http.get(f"/api/v1/resources/{key}")
        return str(answer.json()["phase"]) if answer.status_code == 200 else ""

    def settled(self, op: str) -> bool:
        return self.http.get(f"/api/v1/operations/{op}").json()["phase"] in ("succeeded", "failed")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("pdo")
    fleet = Fleet.create(tmp, files())
    env = {
        "PDO_TOKEN": TOKEN,
        "PDO_HOOK": HOOK_SECRET,
        "RECONCILER_API_TOKEN": "env:PDO_TOKEN",
        "RECONCILER_WEBHOOK_SECRET": "env:PDO_HOOK",
        "RECONCILER_API_READ_OPEN": "true",
        "RECONCILER_EVENT_DEBOUNCE": "0.1s",
    }
    with running(fleet, tmp, env=env) as (url, log):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=20) as http:
            found = Run(url, log, fleet, http, reimage="")
            keys = ("Machine/m-base", "Machine/a-reimage", "Machine/z-locked")
            found.until(lambda: _up(http) and all(found.phase(k) == "Ready" for k in keys),
                        "the first cycle")  # fmt: skip
            found.reimage = push(fleet.bare, files("rhel", "rhel", "db"), HOSTILE_SUBJECT)
            found.sync = http.post("/api/v1/sync").json()["id"]
            yield found


def _up(http: httpx.Client) -> bool:
    try:
        return http.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def test_the_resource_pipeline_runs_live_and_ends_done(
    run: Run, page: Page, console: Console
) -> None:
    fragment = "/resources/Machine/a-reimage/pipeline"
    run.until(lambda: "state-running" in run.http.get(fragment).text, "install-os running")
    page.goto(run.url + "/resources/Machine/a-reimage")  # install-os takes 6 s
    stage = page.locator('#pipeline .stage[data-stage="install-os"]')
    expect(page.locator("#pipeline h2 .badge.state-running")).to_have_text("running")
    expect(stage).to_have_class(re.compile(r"\bstate-running\b"))
    expect(stage.locator("li.current")).to_contain_text("work/install")
    page.evaluate("window.__same_page = true")
    # htmx polls the pipeline while it runs: done, with no reload.
    expect(stage).to_have_class(re.compile(r"\bstate-done\b"), timeout=30_000)
    expect(page.locator("#pipeline h2 .badge.state-running")).to_have_count(0)
    assert page.evaluate("window.__same_page") is True
    run.until(lambda: run.settled(run.sync), "the re-image sync's end")


def attention_and_waves(html: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The keys of the attention section in order, and (wave, key) of the by-wave list."""
    first = html.split('id="attention"')[1].split("</section>")[0]
    waves = html.split('id="waves"')[1].split("</section>")[0]
    keys = re.findall(r'<div class="action" data-key="([^"]+)"', first)
    by_wave: list[tuple[str, str]] = []
    wave = ""
    for heading, key in re.findall(r'Wave (\d+)</h3>|data-key="([^"]+)"', waves):
        wave = heading or wave
        if key:
            by_wave.append((wave, key))
    return keys, by_wave


def action_block(html: str, key: str, section: str) -> str:
    part = html.split(f'id="{section}"')[1].split("</section>")[0]
    return part.split(f'data-key="{key}"')[1].split('<div class="action"')[0]


def test_the_plan_lists_blocked_and_destructive_first_then_by_wave(run: Run) -> None:
    run.until(lambda: run.settled(run.sync), "the re-image sync's end")
    html = run.http.get("/plan").text
    keys, by_wave = attention_and_waves(html)
    assert keys == ["Machine/z-locked", "Machine/a-reimage"]  # blocked, then destructive
    assert by_wave == [
        ("1", "Machine/m-base"),
        ("1", "Machine/z-locked"),
        ("2", "Machine/a-reimage"),
    ]
    locked = action_block(html, "Machine/z-locked", "attention")
    assert "install-os" in locked and 'badge blocked">blocked' in locked
    assert "protected by policy; not approved" in locked  # why
    reimage = action_block(html, "Machine/a-reimage", "attention")
    assert ": install-os" in reimage and 'badge destructive">destructive' in reimage
    assert "blocked" not in reimage
    assert "params.os" in reimage and "rhel" in reimage  # the change that asks for it
    base = action_block(html, "Machine/m-base", "waves")
    assert ": install-app" in base and "params.app" in base and "destructive" not in base
    plan = run.http.get("/api/v1/plan").json()
    assert plan["revision"] == run.reimage
    summary = unescape(re.search(r'<b id="summary-line">([^<]*)</b>', html)[1])  # type: ignore[index]
    assert "blocked" in summary


def audit_of(run: Run, key: str) -> list[dict[str, Any]]:
    done = run.fleet.run_as(
        str(run.fleet.bare), "audit", key, "--output", "json", state=run.log.parent / "audit"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return list(json.loads(done.stdout)["entries"])


def test_the_timeline_shows_the_plan_hash_and_each_task(run: Run) -> None:
    run.until(lambda: run.settled(run.sync), "the re-image sync's end")
    html = run.http.get("/resources/Machine/a-reimage/timeline").text
    assert "<script>window.__pwned" not in html  # the commit's subject, as text
    assert "Re-image &lt;b&gt;two&lt;/b&gt; &amp; &lt;script&gt;" in html
    actions = [e for e in audit_of(run, "Machine/a-reimage") if e["kind"] == "action"]
    reimaged = next(e for e in actions if e["revision"] == run.reimage)
    assert reimaged["plan_hash"] == run.http.get("/api/v1/plan").json()["contentHash"]
    items = re.findall(r'<li class="action">(.*?)</li>', html, re.S)
    item = next(i for i in items if "Re-image &lt;b&gt;" in i)
    assert f'<dd class="mono">{reimaged["plan_hash"][:16]}</dd>' in item
    rows = re.findall(r"<tr><td>([^<]*)</td><td class=\"mono\">([^<]*)</td><td>([^<]*)</td>"
                      r"<td>([^<]*)</td><td>([^<]*)</td>", item)  # fmt: skip
    expected = [
        (t["stage"], t["task"], t["result"], stamp(t["started"]), stamp(t["finished"]))
        for t in reimaged["tasks"]
    ]
    assert rows == expected and rows[0][:3] == ("install-os", "work/install", "succeeded")


def stamp(moment: str) -> str:
    return parse_time(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def drift_row(html: str, key: str) -> str:
    table = html.split('id="drift-table"')[1].split("</table>")[0]
    return next(r for r in re.findall(r"<tr>(.*?)</tr>", table, re.S) if f">{key}</a>" in r)


def test_drift_since_when_first_seen_and_self_heal_off(run: Run) -> None:
    run.until(lambda: run.settled(run.sync), "the re-image sync's end")
    done = run.fleet.run_module(
        "reconciler.providers.simulator", "drift", "--state-dir", str(run.fleet.state),
        "Machine/m-base", "params.app", '"web"',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = run.http.post("/api/v1/sync").json()["id"]
    run.until(lambda: run.settled(first), "the drift cycle")
    row = drift_row(run.until(lambda: "m-base</a>" in (t := run.http.get("/drift").text) and t,
                              "drift reported"), "Machine/m-base")  # fmt: skip
    since = re.search(r'<td rowspan="1" title="([^"]+)">([^<]+)</td>', row)
    assert since is not None, row
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", since[1])
    assert since[2].endswith("ago") or since[2] == "just now"
    assert "params.app" in row and "reported only" in row

    # A later cycle still reports it since when it was first seen.
    time.sleep(1.1)  # a second later at least: a new `since` would show
    second = run.http.post("/api/v1/sync").json()["id"]
    run.until(lambda: run.settled(second), "the next cycle")
    again = drift_row(run.http.get("/drift").text, "Machine/m-base")
    assert f'title="{since[1]}"' in again
    run.drift_since = since[1]

    page = run.http.get("/resources/Machine/m-base").text
    panel = page.split('id="drift"')[1].split("</section>")[0]
    assert f"Differs from Git since {since[1]}" in panel
    assert "reported only (self-heal is off)" in panel
    assert "params.app" in panel


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Reconciler-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def test_webhook_and_provider_event_operations_show_their_trigger(run: Run) -> None:
    body = b'{"ref": "refs/heads/main"}'
    unsigned = httpx.post(f"{run.url}/api/v1/webhooks/generic", content=body,
                          headers={"Content-Type": "application/json"})  # fmt: skip
    assert unsigned.status_code == 401
    hook = httpx.post(f"{run.url}/api/v1/webhooks/generic", content=body, headers=signed(body))
    assert hook.status_code == 202, hook.text
    op = hook.json()["id"]
    run.until(lambda: run.settled(op), "the webhook's cycle")

    event = run.http.post("/api/v1/events/sim", json={"resource": "Machine/z-locked"})
    assert event.status_code == 202, event.text
    assert event.json()["queued"] == ["Machine/z-locked"]
    run.until(lambda: run.settled(event.json()["id"]), "the provider event's operation")

    table = run.http.get("/operations").text.split('id="operations-table"')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    row = next(r for r in rows if op[:12] in r)
    assert "<td>webhook:generic</td>" in row
    assert 'badge op-succeeded">succeeded' in row  # finished, with its phase
    (event_row,) = [r for r in rows if event.json()["id"][:12] in r]
    assert "<td>event:sim</td>" in event_row and 'badge op-succeeded">succeeded' in event_row
    assert 'href="/resources/Machine/z-locked"' in event_row
    targeted = run.http.get("/operations").text.split('id="targeted-table"')[1]
    (reconcile,) = [r for r in re.findall(r"<tr>(.*?)</tr>", targeted, re.S) if "z-locked" in r]
    assert "<td>event:sim</td>" in reconcile
    assert f'href="/operations/{event.json()["id"]}"' in reconcile


def test_self_heal_on_corrects_the_drift_and_says_so(run: Run) -> None:
    assert run.drift_since, "test_drift_since_when_first_seen_and_self_heal_off runs first"
    push(run.fleet.bare, files("rhel", "rhel", "db", heal=True), "Heal drift")
    op = run.http.post("/api/v1/sync").json()["id"]
    run.until(lambda: run.settled(op), "the self-heal cycle")
    observed = run.http.get("/api/v1/resources/Machine/m-base").json()["observed"]
    assert observed["params"]["app"] == "db"  # brought back to what Git declares

    row = drift_row(run.http.get("/drift").text, "Machine/m-base")
    assert f'title="{run.drift_since}"' in row  # since when it differed, still
    assert '<td rowspan="1">corrected</td>' in row
    page = run.http.get("/resources/Machine/m-base").text
    panel = page.split('id="drift"')[1].split("</section>")[0]
    assert f"Differs from Git since {run.drift_since}" in panel
    assert "corrected by self-heal" in panel


def test_a_provider_event_is_an_operation_with_live_progress(run: Run) -> None:
    # Not in Chromium: pytest-playwright runs its browser tests first, and this one needs
    # self-heal on. The page's htmx polls the fragment asked for here (hx-request).
    assert run.drift_since, "test_self_heal_on_corrects_the_drift_and_says_so runs first"
    done = run.fleet.run_module(
        "reconciler.providers.simulator", "drift", "--state-dir", str(run.fleet.state),
        "Machine/m-base", "params.app", '"web"',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    event = run.http.post("/api/v1/events/sim", json={"resource": "Machine/m-base"})
    assert event.status_code == 202, event.text
    location = event.headers["Location"]
    assert location == f"/api/v1/operations/{event.json()['id']}"

    def fragment() -> str:
        path = f"/operations/{event.json()['id']}"
        return run.http.get(path, headers={"HX-Request": "true"}).text

    live = run.until(lambda: 'id="op-running"' in (t := fragment()) and t, "self-heal running")
    assert 'id="op-phase">running' in live and 'hx-trigger="every 1s"' in live
    rows = live.split('id="op-running"')[1].split("</table>")[0]
    assert "Machine/m-base" in rows and "install-app" in rows  # the reconcile's stage, live
    assert 'href="/resources/Machine/m-base"' in live.split('id="op-resources"')[1]
    ended = run.until(lambda: 'id="op-phase">succeeded' in (t := fragment()) and t, "its end")
    assert "1 of 1 resources" in ended and "hx-trigger" not in ended  # polling stops

    answer = run.http.get(location).json()
    assert (answer["phase"], answer["trigger"]) == ("succeeded", "event:sim")
    assert answer["progress"] == {"done": 1, "total": 1}
    observed = run.http.get("/api/v1/resources/Machine/m-base").json()["observed"]
    assert observed["params"]["app"] == "db"  # the event's reconcile healed the drift
