"""Shared fixtures: a minimal valid repository to break in one place per test."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BASE_FILES: dict[str, str] = {
    "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: sim}
spec: {type: simulator}
""",
    "stages.yaml": """\
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
  converges: [params.app]
  work:
    - {name: install, type: provider, action: configure, args: {app: "${params.app}"}}
""",
    "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: app}
spec:
  inputs:
    - {name: app, allowed: [web, db], default: web}
  steps:
    - stage: install-app
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bm}
spec:
  inputs:
    - {name: os, allowed: [ubuntu, rhel], required: true}
    - {name: rootPassword, secure: true}
    - {name: licence, secure: true}
  steps:
    - stage: install-os
    - include: app
""",
    "machines.yaml": """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m1}
spec:
  provider: sim
  pipeline: bm
  params: {os: ubuntu}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: m2}
spec:
  provider: sim
  pipeline: bm
  params: {os: rhel}
  dependsOn: [m1]
""",
}


@pytest.fixture
def base_files() -> dict[str, str]:
    return dict(BASE_FILES)


def as_bytes(files: dict[str, str]) -> dict[str, bytes]:
    return {path: text.encode() for path, text in files.items()}
