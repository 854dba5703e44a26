"""Scope: which resources a new revision touches, and when everything must be planned."""

from __future__ import annotations

import dataclasses

from reconciler.load.desired import Desired
from reconciler.load.load import load_files
from reconciler.model.status import ResourceStatus
from reconciler.plan.scope import FullCycle, Scope, revision_scope

PROVIDER = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec: {type: simulator, settings: {latency: "0s"}}
"""
STAGES = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-os}
spec:
  converges: [params.os]
  work:
    - {name: install, type: provider, action: install-os}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install-app}
spec:
  work:
    - {name: install, type: provider, action: install-app}
"""
PIPELINES = """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bm}
spec:
  steps:
    - stage: install-os
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: app}
spec:
  steps:
    - stage: install-app
"""


def machine(name: str, *, os: str = "ubuntu", pipeline: str = "bm") -> str:
    return f"""\
apiVersion: reconciler/v1
kind: Machine
metadata: {{name: {name}}}
spec: {{provider: sim, pipeline: {pipeline}, params: {{os: {os}}}}}
"""


def files(**machines: str) -> dict[str, bytes]:
    out = {"providers.yaml": PROVIDER, "stages.yaml": STAGES, "pipelines.yaml": PIPELINES}
    out.update({f"machines/{name}.yaml": text for name, text in machines.items()})
    return {path: text.encode() for path, text in out.items()}


def desired(revision: str, repo: dict[str, bytes]) -> Desired:
    loaded = load_files(repo, revision=revision)
    assert loaded.ok and loaded.desired is not None, loaded.diagnostics
    return dataclasses.replace(loaded.desired, revision=revision)


def ready(d: Desired, **phases: str) -> dict[str, ResourceStatus]:
    return {
        key: ResourceStatus(kind=r.kind, name=r.name, phase=phases.get(r.name, "Ready"))
        for key, r in d.resources.items()
    }


FLEET = {f"m{i:02d}": machine(f"m{i:02d}") for i in range(12)}


def test_an_edit_an_addition_and_a_removal_are_the_whole_scope() -> None:
    before = desired("a", files(**FLEET))
    changed = {**FLEET, "m01": machine("m01", os="rhel"), "m20": machine("m20")}
    del changed["m02"]
    after = desired("b", files(**changed))
    scope = revision_scope(before, after, ready(before))
    assert isinstance(scope, Scope), scope
    assert scope.changed == {"Machine/m01", "Machine/m20"}
    assert scope.removed == {"Machine/m02"}
    assert scope.revisited == frozenset()
    assert scope.observed == {"Machine/m01", "Machine/m20"}
    assert scope.keys == {"Machine/m01", "Machine/m02", "Machine/m20"}
    assert scope.describe().startswith("incremental: 2 of 12 declared resources planned")


def test_resources_not_ready_or_asked_for_are_planned_again() -> None:
    before = desired("a", files(**FLEET))
    after = desired("b", files(**{**FLEET, "m01": machine("m01", os="rhel")}))
    statuses = ready(before, m03="Failed", m04="Stalled", m05="Decommissioned")
    del statuses["Machine/m06"]  # never reported
    scope = revision_scope(before, after, statuses, also={"Machine/m07", "Machine/gone"})
    assert isinstance(scope, Scope), scope
    assert scope.changed == {"Machine/m01"}
    assert scope.revisited == {"Machine/m03", "Machine/m04", "Machine/m06", "Machine/m07"}


def test_a_changed_pipeline_reaches_the_resources_that_use_it() -> None:
    fleet = {**FLEET, "m00": machine("m00", pipeline="app"), "m01": machine("m01", pipeline="app")}
    before = desired("a", files(**fleet))
    repo = files(**fleet)
    repo["stages.yaml"] = repo["stages.yaml"].replace(b"action: install-app", b"action: deploy")
    after = desired("b", repo)
    scope = revision_scope(before, after, ready(before))
    assert isinstance(scope, Scope), scope
    assert scope.changed == {"Machine/m00", "Machine/m01"}


def test_full_cycles_and_why() -> None:
    before = desired("a", files(**FLEET))
    statuses = ready(before)
    assert revision_scope(None, before, statuses) == FullCycle(
        "no revision reconciled yet in this process"
    )
    same = revision_scope(before, desired("a", files(**FLEET)), statuses)
    assert isinstance(same, FullCycle) and "no new revision" in same.reason

    repo = files(**FLEET)
    repo["policy.yaml"] = b"""\
apiVersion: reconciler/v1
kind: Policy
metadata: {name: default}
spec: {prune: true}
"""
    assert revision_scope(before, desired("b", repo), statuses) == FullCycle("the Policy changed")

    repo = files(**FLEET)
    repo["providers.yaml"] = repo["providers.yaml"].replace(b'"0s"', b'"1s"')
    assert revision_scope(before, desired("b", repo), statuses) == FullCycle("Provider sim changed")

    half = {**FLEET, **{f"m{i:02d}": machine(f"m{i:02d}", os="rhel") for i in range(7)}}
    big = revision_scope(before, desired("b", files(**half)), statuses)
    assert big == FullCycle("7 of 12 resources to plan: not worth narrowing")


def test_a_failure_is_held_until_its_retry_time_unless_git_changed_it() -> None:
    from datetime import UTC, datetime, timedelta

    from reconciler.model.status import Failure
    from reconciler.plan.scope import held_failures

    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    d = desired("a", files(**FLEET))

    def failed(name: str, retry_in: float, resolution: str | None = None) -> ResourceStatus:
        key = f"Machine/{name}"
        return ResourceStatus(
            kind="Machine",
            name=name,
            phase="Failed",
            failure=Failure(
                stage="install-os",
                task="install",
                error="BMC did not answer",
                retry_at=now + timedelta(seconds=retry_in),
                resolution=resolution or d.resources[key].resolution(),
            ),
        )

    statuses = ready(d)
    statuses["Machine/m00"] = failed("m00", 60)  # held
    statuses["Machine/m01"] = failed("m01", -1)  # due
    statuses["Machine/m02"] = failed("m02", 60, resolution="something since changed in Git")
    assert held_failures(d, statuses, now) == {"Machine/m00": now + timedelta(seconds=60)}
