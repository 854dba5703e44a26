"""End to end: a secret reference that cannot be resolved stops a resource before it starts.

A real `reconciler plan` names the reference it would lack; a real `reconciler
apply` then never starts the pipeline of the machine whose *last* stage needs an
unset variable — the simulator's own action log shows no action for it, while
the machine beside it, needing nothing missing, runs to Ready — and its status
on the status branch says Failed, naming the reference and where it is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.support import Fleet

pytestmark = pytest.mark.slow

MISSING = "E2E_UNSET_CMDB_TOKEN"


def repo() -> dict[str, str]:
    machines = "---\n".join(
        f"apiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: {name}}}\n"
        f"spec: {{provider: sim, pipeline: {pipeline}, params: {{os: ubuntu}}}}\n"
        for name, pipeline in (("needs-token", "with-cmdb"), ("plain", "plain"))
    )
    return {
        "providers.yaml": "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: sim}\n"
        "spec: {type: simulator}\n",
        "stages.yaml": f"""\
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: install-os}}
spec:
  converges: [params.os]
  work: [{{name: install, type: provider, action: install-os, args: {{os: "${{params.os}}"}}}}]
---
apiVersion: reconciler/v1
kind: Stage
metadata: {{name: register}}
spec:
  work:
    - name: cmdb
      type: http
      url: http://127.0.0.1:9/cmdb
      auth: {{bearer: "env:{MISSING}"}}
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: with-cmdb}
spec:
  steps: [{stage: install-os}, {stage: register}]
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: plain}
spec:
  steps: [{stage: install-os}]
""",
        "machines.yaml": machines,
    }


def test_a_missing_reference_fails_the_resource_before_its_first_stage(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, repo())
    fleet.env.pop(MISSING, None)
    needed = "stage register, work task cmdb: auth.bearer"

    plan = fleet.run("plan")
    assert plan.returncode == 2, plan.stderr
    assert (
        f"warning: machines.yaml:1:1: secret reference env:{MISSING} cannot be resolved "
        f"(environment variable is not set); needed by Machine/needs-token ({needed})"
    ) in plan.stderr

    apply = fleet.run("apply")
    assert apply.returncode == 1, (apply.stdout, apply.stderr)
    started = [e["key"] for e in fleet.action_log() if e["event"] == "started"]
    assert started == ["Machine/plain"]  # nothing of needs-token ran, not even install-os
    assert not [t for t in fleet.journal_tasks() if t["resource"] == "Machine/needs-token"]

    statuses = json.loads(fleet.run("status", "--output", "json").stdout)
    assert statuses["Machine/plain"]["phase"] == "Ready"
    failed = statuses["Machine/needs-token"]
    assert failed["phase"] == "Failed"
    assert failed["failure"]["error"] == (
        f"not started: secret reference env:{MISSING} cannot be resolved "
        f"(environment variable is not set); needed by Machine/needs-token ({needed})"
    )

    shown = fleet.run("status", "Machine/needs-token")
    assert shown.returncode == 0 and f"env:{MISSING}" in shown.stdout, shown.stdout

    # Once the variable is set, the plan has nothing to warn about.
    fleet.env[MISSING] = "token-now-set-0123"
    again = fleet.run("plan")
    assert "warning" not in again.stderr, again.stderr
