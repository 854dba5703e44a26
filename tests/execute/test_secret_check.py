"""Secret references checked before work starts: every kind of use is found and named.

The pure half (`declared_uses`, `resource_uses`, `unresolvable`) on a repository
loaded by the real loader, with a literal `Resolvable`; the edge (`environment`)
against real variables and files; and `reconciler validate --check-secrets`
through the CLI. What `apply` does with it is in tests/e2e/test_secret_refs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.execute.secret_check import (
    declared_uses,
    environment,
    precheck,
    resource_uses,
    unresolvable,
)
from reconciler.load.load import load_files
from tests.conftest import ROOT

REPO = {
    "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: rest}
spec:
  type: http
  endpoint: https://api.example.com
  credentials: {token: "env:REST_TOKEN"}
  tls: {caBundle: "file:/etc/ca/rest.pem"}
""",
    "policy.yaml": """\
apiVersion: reconciler/v1
kind: Policy
metadata: {name: policy}
spec:
  notifications:
    - {url: "https://chat.example.com/hook", secret: "env:CHAT_SECRET"}
""",
    "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: install}
spec:
  pre-notify:
    - {name: announce, type: notify, url: "https://hooks.example.com/x", secret: "env:HOOK"}
  work:
    - name: image
      type: provider
      action: install-os
      args: {os: "${params.os}", rootPassword: "${params.rootPassword}"}
    - name: script
      type: command
      argv: [/bin/true]
      env: {OS: "${params.os}"}
      secretEnv: {DB_PASSWORD: "env:DB_PASSWORD"}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: register}
spec:
  work:
    - name: cmdb
      type: http
      url: "https://cmdb.example.com/${params.os}"
      auth: {bearer: "env:CMDB_TOKEN"}
      headers: {X-Api-Key: "file:/run/cmdb.key", X-Trace: "${params.trace}"}
    - name: legacy
      type: http
      url: "https://legacy.example.com/"
      auth: {username: admin, password: "env:LEGACY_PASSWORD"}
""",
    "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: node}
spec:
  inputs:
    - {name: os}
    - {name: trace}
    - {name: rootPassword, secure: true}
    - {name: unusedSecret, secure: true}
  steps: [{stage: install}, {stage: register}]
""",
    "machines.yaml": """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m1}
spec:
  provider: rest
  pipeline: node
  params: {os: ubuntu, trace: "on-1", rootPassword: "env:M1_ROOT", unusedSecret: "env:NOT_USED"}
""",
}


def desired():  # type: ignore[no-untyped-def]
    result = load_files({k: v.encode() for k, v in REPO.items()})
    assert result.ok, result.diagnostics
    return result.desired


def test_every_kind_of_reference_is_found_with_where_it_is_used() -> None:
    found = {(u.ref, u.owner, u.where) for u in declared_uses(desired())}
    assert found == {
        ("env:REST_TOKEN", "Provider/rest", "credentials.token"),
        ("file:/etc/ca/rest.pem", "Provider/rest", "tls.caBundle"),
        ("env:CHAT_SECRET", "Policy", "notifications[0].secret"),
        ("env:HOOK", "Machine/m1", "stage install, pre_notify task announce: secret"),
        (
            "env:M1_ROOT",
            "Machine/m1",
            "stage install, work task image: args uses params.rootPassword",
        ),
        ("env:DB_PASSWORD", "Machine/m1", "stage install, work task script: secretEnv.DB_PASSWORD"),
        ("env:CMDB_TOKEN", "Machine/m1", "stage register, work task cmdb: auth.bearer"),
        ("file:/run/cmdb.key", "Machine/m1", "stage register, work task cmdb: headers.X-Api-Key"),
        ("env:LEGACY_PASSWORD", "Machine/m1", "stage register, work task legacy: auth.password"),
    }  # env:NOT_USED: a secure param no task uses is never resolved


def test_a_resource_needs_only_what_its_planned_stages_use() -> None:
    m1 = desired().resources["Machine/m1"]
    refs = {u.ref for u in resource_uses(m1, ["register"])}
    assert refs == {"env:CMDB_TOKEN", "file:/run/cmdb.key", "env:LEGACY_PASSWORD"}
    everything = {u.ref for u in resource_uses(m1)}
    assert {"env:HOOK", "env:M1_ROOT", "env:DB_PASSWORD"} <= everything


def test_unresolvable_names_each_reference_once_with_its_uses() -> None:
    asked: list[str] = []

    def resolvable(ref: str) -> str | None:
        asked.append(ref)
        return "environment variable is not set" if ref in {"env:CMDB_TOKEN", "env:HOOK"} else None

    missing = unresolvable(declared_uses(desired()), resolvable)
    assert sorted(asked) == sorted(set(asked))  # one question per reference
    assert [m.ref for m in missing] == ["env:CMDB_TOKEN", "env:HOOK"]
    assert str(missing[0]) == (
        "machines.yaml:1:1: secret reference env:CMDB_TOKEN cannot be resolved "
        "(environment variable is not set); needed by Machine/m1 "
        "(stage register, work task cmdb: auth.bearer)"
    )
    m1 = desired().resources["Machine/m1"]
    assert precheck(m1, ["install"], resolvable) == (
        "not started: secret reference env:HOOK cannot be resolved (environment variable is "
        "not set); needed by Machine/m1 (stage install, pre_notify task announce: secret)"
    )
    assert precheck(m1, [], resolvable) is None


def test_environment_reads_variables_and_files_and_registers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.secrets import REDACTOR

    monkeypatch.setenv("SECRET_CHECK_SET", "value-set-9f1c2d")
    (tmp_path / "ok.txt").write_text("value-file-77ab3e\n")
    (tmp_path / "bad.bin").write_bytes(b"\xff\xfe")
    check = environment(tmp_path)
    assert check("env:SECRET_CHECK_SET") is None
    assert check("env:SECRET_CHECK_UNSET_XYZ") == "environment variable is not set"
    assert check("file:ok.txt") is None
    assert check("file:missing.txt") == "No such file or directory"
    assert check("file:bad.bin") == "the file is not UTF-8 text"
    assert REDACTOR.forgotten("value-set-9f1c2d") and REDACTOR.forgotten("value-file-77ab3e")


NAMES = ("REST_TOKEN", "CHAT_SECRET", "HOOK", "M1_ROOT", "DB_PASSWORD", "LEGACY_PASSWORD")


def _validate(
    tmp_path: Path, env: dict[str, str], *args: str, repo: dict[str, str] = REPO
) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "repo"
    for name, text in repo.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    full = {k: v for k, v in os.environ.items() if k not in (*NAMES, "CMDB_TOKEN")}
    full |= {"PYTHONPATH": str(ROOT), **env}
    argv = [sys.executable, "-m", "reconciler", "validate", str(folder), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=full, timeout=60)


def test_validate_check_secrets_names_every_unresolvable_reference(tmp_path: Path) -> None:
    plain = _validate(tmp_path, {})
    assert plain.returncode == 0, plain.stderr  # without the option: documents only
    done = _validate(tmp_path, {"HOOK": "h", "CMDB_TOKEN": "t"}, "--check-secrets")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    refs = [line.split("secret reference ")[1].split(" ")[0] for line in lines]
    assert refs == [
        "env:CHAT_SECRET",
        "env:DB_PASSWORD",
        "env:LEGACY_PASSWORD",
        "env:M1_ROOT",
        "env:REST_TOKEN",
        "file:/etc/ca/rest.pem",
        "file:/run/cmdb.key",
    ]
    assert lines[0] == (
        "Policy: secret reference env:CHAT_SECRET cannot be resolved "
        "(environment variable is not set); needed by Policy (notifications[0].secret)"
    )
    assert lines[1].startswith("machines.yaml:1:1: secret reference env:DB_PASSWORD")
    assert "7 secret references cannot be resolved here" in done.stderr
    as_json = json.loads(_validate(tmp_path, {}, "--check-secrets", "--output", "json").stdout)
    assert as_json["valid"] is True
    missing = {m["reference"]: m for m in as_json["unresolvableSecrets"]}
    assert missing["env:CMDB_TOKEN"]["neededBy"] == [
        {"owner": "Machine/m1", "where": "stage register, work task cmdb: auth.bearer"}
    ]


def test_validate_check_secrets_passes_when_everything_resolves(tmp_path: Path) -> None:
    repo = dict(REPO)
    for old, name in {"/etc/ca/rest.pem": "ca.pem", "/run/cmdb.key": "cmdb.key"}.items():
        (tmp_path / name).write_text("x" * 8)
        repo = {k: v.replace(old, str(tmp_path / name)) for k, v in repo.items()}
    env = {n: "v" for n in (*NAMES, "CMDB_TOKEN")}
    done = _validate(tmp_path, env, "--check-secrets", repo=repo)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout == ""
