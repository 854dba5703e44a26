"""An approval gate cannot be waited out: the rules that judge a change are the rules
in force (the last revision whose changes to them were approved), not the head's own.

Against a real git daemon, the controller's cycles run in-process (`run_apply`, what
the CLI calls); asserted on the status branch and the simulator's action log. One
commit that relaxes the rules and makes the gated change stays blocked however many
cycles run at that head; an approval under the old rules lets both through.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tests.e2e.test_pull_requests import ADA, GRACE, POLICY, Fleet, fleet  # noqa: F401

RULES = json.loads(json.dumps(POLICY))
RULES["spec"]["approvals"]["reviewers"].append({"paths": ["policy.yaml"], "names": [GRACE]})


def started(on: Fleet, key: str) -> list[str]:
    db = sqlite3.connect(f"file:{on.settings.state_dir / 'simulator.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT action FROM action_log WHERE event = 'started' AND key = ? ORDER BY seq",
            (key,),
        ).fetchall()
    finally:
        db.close()
    return [r[0] for r in rows]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_relaxing_the_rules_in_the_gated_commit_does_not_unblock_it(fleet: Fleet) -> None:  # noqa: F811
    fleet.set_policy(RULES)
    fleet.commit("Declare the sample fleet")
    fleet.push()
    fleet.apply(code=2)
    fleet.commit(f"Approve the initial fleet\n\nApproved-by: {ADA}\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply()
    assert fleet.status("Machine/r02-node01")["phase"] == "Ready"

    # One commit drops the storage protection and changes a storage machine's
    # application (not destructive: gated only because it is protected).
    relaxed = json.loads(json.dumps(RULES))
    relaxed["spec"]["protected"] = [{"name": "Machine/r01-node01"}]
    fleet.set_policy(relaxed)
    fleet.edit("profiles/profiles.yaml", "application: ceph-osd", "application: none")
    fleet.commit("Unprotect storage and change its application")
    fleet.push()
    before = started(fleet, "Machine/r02-node01")
    for _ in range(3):  # the same head, again and again: still the old rules
        fleet.apply(code=2)
        node = fleet.status("Machine/r02-node01")
        assert node["phase"] == "Stalled"
        assert f"needs approval from {GRACE} (protected" in condition(node, "Stalled")["message"]
    assert started(fleet, "Machine/r02-node01") == before
    plan_text = fleet.cli("plan", code=2)
    assert "the approval rules changed in Git (protected)" in plan_text

    # Grace (the policy's reviewer, and storage's) approves: the new rules are in force.
    fleet.commit(f"Approve unprotecting storage\n\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply()
    assert fleet.status("Machine/r02-node01")["phase"] == "Ready"
    assert started(fleet, "Machine/r02-node01")[len(before) :] == ["install-app"]

    # Turning approvals off in the commit that re-images a protected machine: held too.
    off = json.loads(json.dumps(relaxed))
    off["spec"]["approvals"]["required"] = False
    fleet.set_policy(off)
    fleet.edit(
        "machines/rack-r01.yaml",
        "    rootPassword: env:R01_ROOT_PASSWORD\n",
        "    rootPassword: env:R01_ROOT_PASSWORD\n    os: rhel-9\n",
    )
    fleet.commit("Approvals off, and re-image r01-node01")
    fleet.push()
    node01 = started(fleet, "Machine/r01-node01")
    fleet.apply(code=2)
    fleet.apply(code=2)
    assert fleet.status("Machine/r01-node01")["phase"] == "Stalled"
    assert started(fleet, "Machine/r01-node01") == node01
    # Ada approves the re-image: under the rules in force (approvals on) that is all it
    # needs. Turning approvals off still waits for the policy's reviewer.
    fleet.commit(f"Approve the re-image\n\nApproved-by: {ADA}")
    fleet.push()
    fleet.apply()
    assert "install-os" in started(fleet, "Machine/r01-node01")[len(node01) :]
    assert fleet.status("Machine/r01-node01")["observed"]["params"]["os"] == "rhel-9"
    assert "the approval rules changed in Git (approvals.required)" in fleet.cli("plan")
    fleet.commit(f"Approve turning approvals off\n\nApproved-by: {GRACE}")
    fleet.push()
    fleet.apply()
    assert "the approval rules changed" not in fleet.cli("plan")
