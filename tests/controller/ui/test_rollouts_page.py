"""A rollout's progress on the plan page, in a real browser, against `reconciler run`.

A profile change over 3 racks x 2 machines (one at a time per rack, a canary) is
applied with the CLI while two machines' install fails: two failures pause the
rollout. A controller started on that state shows, on `/plan`, the rollout paused and
why, its resources waiting (held back by the pause); resumed through the API, the
fragment (polled, swapped in place) shows resources running, then the rollout done
and no longer paused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ROOT
from tests.controller.ui.conftest import TOKEN, Console, Controller, sign_in
from tests.e2e.support import Fleet
from tests.e2e.test_rollouts import commit, policy
from tests.servers.git import free_port

pytestmark = pytest.mark.slow

RACKS, PER_RACK = 3, 2


def files(flags: Path, os_name: str = "ubuntu") -> dict[str, str]:
    machines = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: r{r}-m{m}}}\n"
        f"spec: {{provider: sim, pipeline: bm, profiles: [fleet], rack: r{r}}}\n"
        for r in range(RACKS)
        for m in range(PER_RACK)
    )
    return {
        # install-os takes 3 s: the polled fragment sees machines running.
        "providers.yaml": (
            "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
            "spec: {type: simulator, settings: {latency: {install-os: 3s}}}\n"
        ),
        "stages.yaml": f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: install-os}}
spec:
  converges: [params.os]
  destructive: true
  work:
    - {{name: install, type: provider, action: install-os}}
    - name: check
      type: command
      argv: [{sys.executable}, -c, "import os, sys; sys.exit(os.path.exists(sys.argv[1]))",
             "{flags}/${{resource.name}}"]
      retry: {{attempts: 1}}
""",
        "pipelines.yaml": (
            "apiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: bm}\n"
            "spec: {steps: [{stage: install-os}]}\n"
        ),
        "profiles.yaml": (
            "apiVersion: reconciler/v1\nkind: Profile\nmetadata: {name: fleet}\n"
            f"spec: {{params: {{os: {os_name}}}}}\n"
        ),
        "machines.yaml": machines,
        "policy.yaml": policy(),
    }


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("rollout-ui")
    flags = tmp / "flags"
    flags.mkdir()
    fleet = Fleet.create(tmp, files(flags))
    assert fleet.run("apply").returncode == 0
    for name in ("r1-m0", "r2-m0"):
        (flags / name).touch()
    commit(fleet, {"profiles.yaml": files(flags, "rhel")["profiles.yaml"]}, "Move to RHEL")
    done = fleet.run("apply", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr  # two failed: paused
    for flag in flags.iterdir():
        flag.unlink()

    port = free_port()
    log = tmp / "controller.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UI_TEST_TOKEN": TOKEN}
    env["RECONCILER_API_TOKEN"] = "env:UI_TEST_TOKEN"
    for name in ("RECONCILER_CONFIG", "RECONCILER_API_READ_OPEN"):
        env.pop(name, None)
    argv = fleet.argv("run", "--listen", f"127.0.0.1:{port}", "--interval", "1h")
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
    shots = tmp / "screenshots"
    shots.mkdir()
    try:
        found = Controller(f"http://127.0.0.1:{port}", fleet.state, log, env, shots)
        found.wait_for(lambda: _first_plan(found), "the first cycle's plan", timeout=60)
        yield found
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _first_plan(controller: Controller) -> bool:
    try:
        return bool(controller.get_json("/api/v1/plan"))
    except OSError:  # 404 (urllib's HTTPError) until the first cycle has planned
        return False


def test_the_plan_page_shows_a_paused_rollout_then_its_progress_after_resume(
    paused: Controller, page: Page, console: Console
) -> None:
    sign_in(page, paused.url, then="/plan")
    expect(page).to_have_url(paused.url + "/plan")
    rollout = page.locator("#rollout-policy")
    expect(rollout.locator(".rollout-paused")).to_have_text(
        "paused: 2 resource(s) failed (pauseOnFailure)"
    )
    expect(rollout.locator(".rollout-counts")).to_contain_text("0 running")
    expect(rollout.locator(".rollout-counts")).to_contain_text("0 failed")
    held = rollout.locator("tr.rollout-waiting", has_text="Machine/r2-m1")
    expect(held).to_contain_text("rack=r2")
    expect(held).to_contain_text("rollout policy is paused")
    page.screenshot(path=paused.shots / "plan-rollout-paused.png", full_page=True)

    page.evaluate("window.__same_page = true")
    answer = httpx.post(
        paused.url + "/api/v1/rollouts/policy/resume",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 202, answer.text
    expect(rollout.locator("tr.rollout-running").first).to_be_visible(timeout=60_000)
    page.screenshot(path=paused.shots / "plan-rollout-running.png", full_page=True)
    expect(rollout.locator(".rollout-counts")).to_contain_text(
        "0 running · 0 waiting · 0 failed", timeout=90_000
    )
    expect(rollout.locator(".rollout-paused")).to_have_count(0)
    assert page.evaluate("window.__same_page") is True  # swapped in place, no reload
