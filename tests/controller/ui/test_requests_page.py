"""The portal's requests in the web UI: the list and one request, in Debian's Chromium.

Against a real `reconciler run` subprocess configured from the environment (see
`tests.controller.portal.run_support`: a git daemon, the recording fake forge standing in for
GitHub, which cannot run here). One request is planned and has its pull request;
another was merged and its pipeline failed: the page shows its phase, the history
with times, the plan link, the pull request, the progress and the failure's stage,
task and error. The reason and the error hold markup: shown as text, never run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.controller.portal.conftest import REQUEST, TOKENS
from tests.controller.portal.run_support import BURN_ERROR, RunningPortal, run_portal
from tests.controller.ui.conftest import Console, sign_in

pytestmark = pytest.mark.slow

HOSTILE_REASON = "<script>window.__pwned='reason'</script><i>now</i>"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningPortal, str, str]]:
    with run_portal(tmp_path_factory.mktemp("requests-ui")) as running, running.client() as api:
        planned = api.post("/api/v1/requests", json={**REQUEST, "reason": HOSTILE_REASON}).json()
        running.wait_phase(planned["id"], "planned")
        running.wait_for(
            lambda: api.get(f"/api/v1/requests/{planned['id']}").json().get("pullRequest"),
            "the pull request",
        )
        failing = {**REQUEST, "name": "db-01", "pipeline": "burn", "profiles": [],
                   "inputs": {"os": "ubuntu-24.04"}}  # fmt: skip
        failed = api.post("/api/v1/requests", json=failing).json()
        running.wait_phase(failed["id"], "planned")
        running.merge(f"request/{failed['id']}")
        running.sync()
        running.wait_phase(failed["id"], "failed")
        yield running, planned["id"], failed["id"]


def test_requests_list_and_pages(
    portal: tuple[RunningPortal, str, str], page: Page, console: Console
) -> None:
    running, planned_id, failed_id = portal
    sign_in(page, running.url, TOKENS["OPS_TOKEN"], then="/")
    page.click("nav >> text=Requests")
    expect(page).to_have_url(running.url + "/requests")
    rows = page.locator("#requests-table tbody tr")
    expect(rows).to_have_count(2)
    listed = {
        rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(3).inner_text()
        for i in range(2)
    }
    assert listed == {planned_id: "planned", failed_id: "failed"}
    page.screenshot(path=running.log.parent / "requests.png", full_page=True)

    page.click(f"text={planned_id}")
    expect(page).to_have_url(f"{running.url}/requests/{planned_id}")
    expect(page.locator("#request-phase")).to_have_text("planned")
    expect(page.locator("#request-reason")).to_have_text(HOSTILE_REASON)  # text, not markup
    expect(page.locator("#request-branch")).to_have_text(f"request/{planned_id}")
    plan_link = page.locator("#request-plan a")
    expect(plan_link).to_have_attribute("href", f"/plan#plans/request/{planned_id}.md")
    pull = page.locator("#request-pull a")
    expect(pull).to_have_text("#7")
    expect(pull).to_have_attribute("href", "https://github.example/acme/infra/pull/7")
    history = page.locator("#request-history tbody tr")
    expect(history).to_have_count(2)
    assert [history.nth(i).locator("td").nth(0).inner_text() for i in range(2)] == [
        "branch-pushed",
        "planned",
    ]
    assert all(STAMP.match(history.nth(i).locator("td").nth(1).inner_text()) for i in range(2))
    expect(page.locator("#request-failure")).to_have_count(0)
    plan_link.click()  # the branch's plan on the plan page, by its anchor
    expect(page.locator(f"[id='plans/request/{planned_id}.md'] summary")).to_be_visible()

    page.goto(f"{running.url}/requests/{failed_id}")
    expect(page.locator("#request-phase")).to_have_text("failed")
    expect(page.locator("#request-progress")).to_contain_text("Failed")
    expect(page.locator("#failure-stage")).to_have_text("burn-in")
    expect(page.locator("#failure-task")).to_have_text("stress-disks")
    expect(page.locator("#failure-error")).to_contain_text(BURN_ERROR)
    history = page.locator("#request-history tbody tr td:first-child")
    expect(history).to_have_text(["branch-pushed", "planned", "merged", "provisioning", "failed"])
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=running.log.parent / "request-failed.png", full_page=True)

    missing = page.request.get(f"{running.url}/requests/no-such-request")  # the session's cookie
    assert missing.status == 404 and "There is no request no-such-request" in missing.text()
