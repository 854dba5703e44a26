"""The web UI in a real browser (Debian's Chromium, headless) against `reconciler run`.

What an operator, a reviewer and an auditor see: sign-in with the API token (and
what the cookie is), every page rendering the sample fleet, the resource list's
filters and pages, a resource's timeline naming who asked and who approved, a
hostile label and failure message shown as text (no script runs, no secret
shows), task logs served from the state directory only, and a Sync that needs
the session and its CSRF token and whose operation updates live, without a
reload. Screenshots of each page go to the module's temporary folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.controller.ui.conftest import (
    ADA,
    EXPECTED,
    GRACE,
    HOSTILE_ERROR,
    HOSTILE_LABEL,
    LINUS,
    SECRET,
    TOKEN,
    Console,
    Controller,
    sign_in,
)

pytestmark = pytest.mark.slow


def shot(page: Page, controller: Controller, name: str, *, top: bool = False) -> None:
    """The whole page; with `top`, its first screen too (`NAME-top.png`, as in docs/)."""
    page.screenshot(path=controller.shots / f"{name}.png", full_page=True)
    if top:
        page.screenshot(path=controller.shots / f"{name}-top.png")


def test_sign_in_and_every_page(
    controller: Controller, page: Page, context: BrowserContext, console: Console
) -> None:
    # Read access is closed: a page sends the browser to the sign-in form.
    page.goto(controller.url + "/resources?phase=Failed")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    page.fill("#token", "not-the-token")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).to_have_text("That is not the API token.")
    assert context.cookies() == []
    page.fill("#token", TOKEN)
    page.click("#signin-submit")
    expect(page).to_have_url(controller.url + "/resources?phase=Failed")
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert TOKEN not in cookie["value"] and TOKEN not in page.content()

    page.goto(controller.url + "/")
    revision = controller.get_json("/readyz")["revision"]
    expect(page.locator("#revision-in-force")).to_have_text(revision)
    expect(page.locator("#phases")).to_contain_text("11 resources by phase")
    expect(page.locator("#phases .count").first).to_have_text("1Failed")  # worst first
    expect(page.locator("#providers")).to_contain_text("lab-sim")
    expect(page.locator("#cycles tbody tr").first).to_contain_text("full")
    expect(page.locator("#idle")).to_be_visible()
    shot(page, controller, "overview", top=True)

    page.goto(controller.url + "/resources")
    rows = page.locator("#resources tbody tr")
    expect(rows).to_have_count(11)
    names = [rows.nth(i).locator("td").nth(1).locator("a").inner_text() for i in range(11)]
    assert names == [key.split("/")[1] for key in sorted(EXPECTED)]
    shot(page, controller, "resources")

    page.goto(controller.url + "/resources/Machine/r01-node01")
    expect(page.locator("#conditions")).to_contain_text("Reconciled")
    stages = page.locator("#pipeline .stage")
    expect(stages.first).to_have_attribute("data-stage", "discover")
    assert stages.count() >= 4
    expect(page.locator("#pipeline .stage.state-pending")).to_have_count(0)
    expect(page.locator("#fields")).to_contain_text("params.os")
    expect(page.locator("#logs summary")).to_contain_text("task logs, the newest written")
    expect(page.locator("#logs tbody tr")).not_to_have_count(0)
    expect(page.locator("#timeline .asked-by").first).to_have_text(LINUS)  # loaded after
    shot(page, controller, "resource", top=True)

    for path, text in (
        ("/plan", "Plan"),
        ("/drift", "No drift"),
        ("/operations", "startup"),
    ):
        page.goto(controller.url + path)
        expect(page.locator("main")).to_contain_text(text)
        shot(page, controller, path.strip("/"))


def test_filters_and_pages(controller: Controller, page: Page, console: Console) -> None:
    sign_in(page, controller.url, then="/resources?per=4")
    expect(page.locator("#matching")).to_have_text("11 of 11 resources, 1 to 4 shown")
    first = page.locator("#resources tbody tr td:nth-child(2) a").all_inner_texts()
    page.click("#next-page")
    expect(page.locator("#matching")).to_have_text("11 of 11 resources, 5 to 8 shown")
    second = page.locator("#resources tbody tr td:nth-child(2) a").all_inner_texts()
    assert first == ["bastion", "edge-ingress-a", "edge-ingress-b", "hostile-01"]
    assert second == ["r01-node01", "r01-node02", "r01-node03", "r01-node04"]

    page.select_option("select[name=phase]", "Failed")
    page.click("#apply-filters")
    expect(page.locator("#matching")).to_have_text("1 of 11 resources, 1 to 1 shown")
    expect(page.locator("#resources tbody tr td:nth-child(2) a")).to_have_text("hostile-01")

    page.goto(controller.url + "/resources")
    page.fill("input[name=label]", "role=storage")
    page.select_option("select[name=kind]", "Machine")
    page.click("#apply-filters")
    storage = page.locator("#resources tbody tr td:nth-child(2) a").all_inner_texts()
    assert storage == ["r02-node01", "r02-node02", "r02-node03"]

    page.goto(controller.url + "/resources")
    page.fill("input[name=q]", "EDGE")
    page.click("#apply-filters")
    assert page.locator("#resources tbody tr td:nth-child(2) a").all_inner_texts() == [
        "edge-ingress-a",
        "edge-ingress-b",
    ]
    page.goto(controller.url + "/resources?provider=nowhere")
    expect(page.locator("#resources")).to_contain_text("No resource matches.")


def test_timeline_names_who_asked_and_who_approved(
    controller: Controller, page: Page, console: Console
) -> None:
    sign_in(page, controller.url, then="/resources/Machine/r01-node01/timeline")
    action = page.locator("#timeline li.action").first
    expect(action.locator(".asked-by")).to_have_text(LINUS)
    expect(action.locator(".approved-by")).to_have_text(ADA)  # Grace reviews storage only
    expect(action).to_contain_text("Declare the sample fleet")
    expect(page.locator("#timeline li.status").first).to_contain_text("Ready")
    expect(page.locator("#last-run tbody tr")).not_to_have_count(0)  # folded: present, closed
    page.goto(controller.url + "/resources/Machine/r02-node01/timeline")
    expect(page.locator("#timeline li.action .approved-by").first).to_have_text(GRACE)
    shot(page, controller, "timeline")


def test_hostile_label_and_message_render_as_text(
    controller: Controller, page: Page, console: Console
) -> None:
    sign_in(page, controller.url, then="/resources/Machine/hostile-01")
    expect(page.locator("#failure-error")).to_contain_text(HOSTILE_ERROR)
    expect(page.locator(".labels")).to_contain_text(f"note={HOSTILE_LABEL}")
    expect(page.locator("#pipeline .stage.state-failed")).to_have_attribute(
        "data-stage", "hostile-check"
    )
    expect(page.locator("#timeline li.action").first).to_be_visible()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main b:text('bold')").count() == 0
    html = page.content()
    assert SECRET not in html and "the root password is ***" in html
    shot(page, controller, "hostile")

    page.goto(controller.url + "/resources?phase=Failed")
    expect(page.locator("#resources")).to_contain_text(HOSTILE_LABEL)
    assert page.evaluate("window.__pwned") is None

    # Its task log: served redacted, as text, from the state directory only.
    page.goto(controller.url + "/resources/Machine/hostile-01")
    page.click("#failure-log")
    body = page.locator("body").inner_text()
    assert "the root password is ***" in body and SECRET not in body
    assert HOSTILE_ERROR in body
    assert page.evaluate("window.__pwned") is None
    for sneaky in ("..%2F..%2F..%2Fjournal.sqlite", "%2E%2E/%2E%2E/%2E%2E/lease"):
        answer = page.request.get(f"{controller.url}/resources/Machine/hostile-01/logs/{sneaky}")
        assert answer.status == 404, sneaky


def test_task_logs_through_the_api_need_the_token(controller: Controller) -> None:
    listing = controller.get_json("/api/v1/resources/Machine/hostile-01/logs")
    log = next(f for f in listing["logs"] if f["file"] == "work-probe.log")  # the newest
    request = urllib.request.Request(controller.url + log["url"])
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
        assert answer.headers["Content-Type"].startswith("text/plain")
    assert "the root password is ***" in text and SECRET not in text


def test_sync_needs_the_session_and_updates_live(
    controller: Controller, page: Page, context: BrowserContext, console: Console
) -> None:
    page.goto(controller.url + "/signin")
    anonymous = page.request.post(
        controller.url + "/operations/sync", form={"csrf": "x"}, max_redirects=0
    )
    assert anonymous.status == 303
    assert anonymous.headers["location"].startswith("/signin")

    sign_in(page, controller.url, then="/operations")
    forged = page.request.post(controller.url + "/operations/sync", form={"csrf": "forged"})
    assert forged.status == 403

    # Someone at a console changes a machine: the sync reports it as drift.
    subprocess.run(
        [sys.executable, "-m", "reconciler.providers.simulator", "drift", "--state-dir",
         str(controller.state), "Machine/r01-node02", "params.os", '"rhel-9"'],
        env=controller.env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    page.click("#sync-now")
    expect(page).to_have_url(re.compile(r"/operations/[0-9a-f]{32}$"))
    page.evaluate("window.__same_page = true")
    expect(page.locator("#op-phase")).to_have_text("running", timeout=20_000)
    running = page.locator("#op-running tbody tr", has_text="Machine/hostile-01")
    expect(running).to_contain_text("hostile-check", timeout=20_000)  # its 2 s task
    expect(page.locator("#op-counts")).to_contain_text("1 running")
    shot(page, controller, "operation-running")
    expect(page.locator("#op-phase")).to_have_text("failed", timeout=60_000)
    expect(page.locator("#op-errors")).to_contain_text("Machine/hostile-01")
    assert page.evaluate("window.__same_page") is True  # updated in place, no reload
    expect(page.locator("#operation")).not_to_have_attribute("hx-trigger", re.compile("."))
    shot(page, controller, "operation")

    page.goto(controller.url + "/drift")
    row = page.locator("#drift-table tbody tr", has_text="Machine/r01-node02")
    expect(row).to_contain_text("params.os")
    expect(row).to_contain_text('"rhel-9"')
    expect(row).to_contain_text("reported only")
    shot(page, controller, "drift")
