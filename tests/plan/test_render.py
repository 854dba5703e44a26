"""Plan rendering: the terminal view, JSON, and Markdown cut to fit a PR comment."""

from __future__ import annotations

import json

from reconciler.plan.gates import plan_values
from reconciler.plan.plan import Plan
from reconciler.plan.render import render_json, render_markdown, render_text, summary_line
from reconciler.secrets import REDACTOR
from tests import plan_values as pv


def mixed_plan() -> Plan:
    new = pv.resource("new")
    changed = pv.resource("changed", params={"os": "rhel-9"}, depends_on=["Machine/new"])
    drifted = pv.resource("drifted")
    d = pv.desired(
        [new, changed, drifted],
        policy_spec=pv.policy(prune=True, protected=["Machine/kept"]),
    )
    before = pv.resource("changed", params={"os": "ubuntu-24.04"})
    drift_fields = pv.converged(drifted) | {"params": {"os": "esxi-8"}}
    seen = pv.observed(
        d,
        absent=[new.key],
        fields={changed.key: pv.converged(before), drifted.key: drift_fields},
        owned=[pv.orphan("old"), pv.orphan("kept")],
    )
    last = {
        changed.key: pv.record(before),
        drifted.key: pv.record(drifted),
    }
    return plan_values(d, seen, last_applied=last)


def test_text_groups_by_wave_with_symbols_and_a_summary():
    text = render_text(mixed_plan())
    assert text.splitlines()[0].startswith("Plan for revision abc1234 (prune on, self-heal off")
    wave1, wave2 = text.index("Wave 1:"), text.index("Wave 2:")
    assert wave1 < text.index("+ Machine/new  create: discover → inventory") < wave2
    assert wave1 < text.index("! Machine/drifted  drift (report only)") < wave2
    assert text.index("~ Machine/changed  update: install-os") > wave2
    assert "[DESTRUCTIVE]" in text
    assert '    params.os: "ubuntu-24.04" → "rhel-9"  (changed in Git)' in text
    assert "- Machine/old  decommission  [DESTRUCTIVE]" in text
    assert "BLOCKED: protected by policy; not approved" in text
    assert text.rstrip().splitlines()[-1] == (
        "Plan: 1 to create, 1 to update, 1 to destroy, 1 drifted (report only), 1 blocked"
        " — 2 destructive"
    )


def test_in_sync_summary():
    d = pv.desired([pv.resource("a")])
    p = plan_values(d, pv.observed(d), last_applied=pv.provisioned(d))
    assert summary_line(p) == "In sync: 1 resources match their declared state, nothing to do."
    assert "Wave" not in render_text(p)


def test_json_is_the_plan_value():
    p = mixed_plan()
    data = json.loads(render_json(p))
    assert data["contentHash"] == p.content_hash
    assert Plan.from_json(render_json(p)) == p


def test_markdown_fits_and_says_what_was_cut():
    big = [pv.resource(f"node-{i:04d}") for i in range(600)]
    d = pv.desired(big)
    p = plan_values(d, pv.observed(d, absent=list(d.resources)))
    summary, full = render_markdown(p, limit=20_000)
    assert len(summary) <= 20_000
    assert "**Plan: 600 to create" in summary
    assert "more action(s) not shown here" in summary
    assert summary.count("```") % 2 == 0
    assert len(full) > 20_000 and "node-0599" in full and "Truncated" not in full
    small, same = render_markdown(mixed_plan())
    assert small == same and "Truncated" not in small


def test_rendering_is_pure_redaction_is_left_to_the_edges():
    """The renderers do not consult the process-wide redactor (ARCHITECTURE.md: pure
    steps have no globals): the same plan renders the same text whatever secrets the
    process has resolved. Secrets are scrubbed where the text leaves the process —
    `reconciler plan` output in every format (tests/e2e/test_canary.py), the UI's
    /plan/text and /plan/markdown (tests/e2e/test_canary_api.py)."""
    d = pv.desired([pv.resource("a", params={"os": "canary-7f3a9"})])
    seen = pv.observed(d, fields={"Machine/a": {"params": {"os": "canary-7f3a9x"}}})
    p = plan_values(d, seen)
    before = (render_text(p), render_json(p), *render_markdown(p))
    REDACTOR.add("canary-7f3a9")
    assert (render_text(p), render_json(p), *render_markdown(p)) == before
    assert all("canary-7f3a9" in text for text in before)
