"""The model and resolution: params precedence, hook composition, pipelines, durations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reconciler.load.load import load_files
from reconciler.model import Machine, parse_duration
from tests.conftest import BASE_FILES, as_bytes

PROFILES = """\
apiVersion: reconciler/v1
kind: Profile
metadata: {name: global}
spec:
  params: {os: rhel, app: db}
  hooks:
    "*":
      pre-notify: [{name: g-all, type: notify, url: "http://hooks.local/g"}]
    install-os:
      pre-notify: [{name: g-os, type: notify, url: "http://hooks.local/g"}]
---
apiVersion: reconciler/v1
kind: Profile
metadata: {name: web}
spec:
  params: {app: web, os: ubuntu}
  hooks:
    install-os:
      pre-notify: [{name: p-os, type: notify, url: "http://hooks.local/p"}]
"""


def load(files: dict[str, str]):
    result = load_files(as_bytes(files))
    assert result.diagnostics == ()
    return result.desired


def test_params_resolve_resource_then_profiles_then_pipeline_then_global_then_defaults() -> None:
    files = {**BASE_FILES, "profiles.yaml": PROFILES}
    files["machines.yaml"] += """\
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m3}
spec:
  provider: sim
  pipeline: bm
  profiles: [web]
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m4}
spec:
  provider: sim
  pipeline: bm
"""
    desired = load(files)
    assert desired.resources["Machine/m1"].params["os"] == "ubuntu"  # its own
    assert desired.resources["Machine/m3"].params == {"app": "web", "os": "ubuntu"}  # profile
    assert desired.resources["Machine/m4"].params == {"app": "db", "os": "rhel"}  # global
    files["pipelines.yaml"] = files["pipelines.yaml"].replace(
        "  steps:\n    - stage: install-os",
        "  params: {app: web}\n  steps:\n    - stage: install-os",
    )
    assert load(files).resources["Machine/m4"].params["app"] == "web"  # pipeline beats global


def test_input_default_applies_last() -> None:
    desired = load(dict(BASE_FILES))
    assert desired.resources["Machine/m1"].params == {"os": "ubuntu", "app": "web"}


def test_hooks_compose_global_pipeline_stage_profiles_resource() -> None:
    files = {**BASE_FILES, "profiles.yaml": PROFILES}
    files["pipelines.yaml"] = files["pipelines.yaml"].replace(
        "  steps:\n    - stage: install-os",
        "  hooks:\n    install-os:\n      pre-notify:\n"
        "        - {name: pl-os, type: notify, url: 'http://hooks.local/pl'}\n"
        "  steps:\n    - stage: install-os",
    )
    files["stages.yaml"] = files["stages.yaml"].replace(
        "  work:\n    - {name: install, type: provider, action: install-os}",
        "  pre-notify:\n    - {name: own, type: notify, url: 'http://hooks.local/s'}\n"
        "  work:\n    - {name: install, type: provider, action: install-os}",
    )
    files["machines.yaml"] = files["machines.yaml"].replace(
        "  params: {os: ubuntu}\n",
        "  params: {os: ubuntu}\n  profiles: [web]\n  hooks:\n    install-os:\n"
        "      pre-notify: [{name: r-os, type: notify, url: 'http://hooks.local/r'}]\n",
        1,
    )
    desired = load(files)
    stage = desired.resources["Machine/m1"].stages[0]
    assert stage.name == "install-os"
    assert [t.name for t in stage.tasks["pre_notify"]] == [
        "g-all",
        "g-os",
        "pl-os",
        "own",
        "p-os",
        "r-os",
    ]
    other = desired.resources["Machine/m2"].stages[1]
    assert other.name == "install-app"
    assert [t.name for t in other.tasks["pre_notify"]] == ["g-all"]


def test_included_pipelines_are_spliced_and_chains_follow() -> None:
    files = dict(BASE_FILES)
    files["stages.yaml"] += """\
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: secure}
spec: {}
"""
    files["stages.yaml"] = files["stages.yaml"].replace(
        "  converges: [params.os]\n", "  converges: [params.os]\n  chain: [secure]\n"
    )
    desired = load(files)
    assert [s.name for s in desired.resources["Machine/m1"].stages] == [
        "install-os",
        "secure",
        "install-app",
    ]


def test_fingerprint_changes_with_declared_state_only() -> None:
    a = load(dict(BASE_FILES)).resources["Machine/m1"]
    b = load(dict(BASE_FILES)).resources["Machine/m1"]
    assert a.fingerprint() == b.fingerprint()
    files = dict(BASE_FILES)
    files["machines.yaml"] = files["machines.yaml"].replace("{os: ubuntu}", "{os: rhel}", 1)
    assert load(files).resources["Machine/m1"].fingerprint() != a.fingerprint()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("3600", 3600.0),
        ("2.5", 2.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-5s", -1, True, "5 minutes", "-3600", "1e3", ""])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_documents_are_frozen() -> None:
    machine = Machine.model_validate(
        {
            "apiVersion": "reconciler/v1",
            "kind": "Machine",
            "metadata": {"name": "m"},
            "spec": {"provider": "p", "pipeline": "q"},
        }
    )
    with pytest.raises(ValidationError):
        machine.spec.provider = "other"  # type: ignore[misc]


def test_names_are_dns_like() -> None:
    with pytest.raises(ValidationError, match="String should match pattern"):
        Machine.model_validate(
            {
                "apiVersion": "reconciler/v1",
                "kind": "Machine",
                "metadata": {"name": "Bad_Name"},
                "spec": {"provider": "p", "pipeline": "q"},
            }
        )
