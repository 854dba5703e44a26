"""`reconciler init DIR`: a new declared repository that validates and applies as is.

An edge beside the CLI: writes files, nothing else. One document of every kind a
team starts with — a Provider (the simulator), Stages, a Pipeline offering inputs,
Profiles (the `global` one and a role), a Machine and a Policy — plus
`.reconcilerignore`, the combined JSON Schema under `schemas/`, editor settings
pointing at it, and each document file's modeline pointing at it too (relative to
that file, so it holds wherever the repository is cloned).
"""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.cli.schema import COMBINED, combined_schema, modeline_for

FILES: dict[str, str] = {
    "providers/lab.yaml": """\
# A connection to an infrastructure API. The simulator keeps a fleet in the
# controller's state directory; swap `type` (redfish, aws-ec2, http) for real hardware.
apiVersion: reconciler/v1
kind: Provider
metadata:
  name: lab
spec:
  type: simulator
  limits: {concurrency: 10}
""",
    "stages/stages.yaml": """\
# Stages: reusable units of work. `converges` names the fields a stage brings to
# their declared value; a change to one of them re-runs the stage (and what follows).
apiVersion: reconciler/v1
kind: Stage
metadata:
  name: power-on
spec:
  description: Boot the machine from the network.
  converges: [power]
  work:
    - {name: set-pxe, type: provider, action: set-boot, args: {device: pxe}}
    - {name: power-on, type: provider, action: power-on}
  validate:
    - name: powered
      type: wait-for
      condition: {field: power, equals: ["on"]}
      timeout: 10m
---
apiVersion: reconciler/v1
kind: Stage
metadata:
  name: install-os
spec:
  description: Install the operating system the machine asks for.
  converges: [params.os]
  destructive: true          # re-running it on an existing machine wipes its disk
  work:
    - name: install
      type: provider
      action: install-os
      args: {os: "${params.os}"}
      timeout: 1h
---
apiVersion: reconciler/v1
kind: Stage
metadata:
  name: install-app
spec:
  description: Install the application the machine serves.
  converges: [params.application]
  work:
    - name: install
      type: provider
      action: install-app
      args: {application: "${params.application}"}
""",
    "pipelines/server.yaml": """\
# A pipeline: the ordered stages a resource goes through, and the inputs it accepts
# (checked when the repository is validated: a request it does not offer fails there).
apiVersion: reconciler/v1
kind: Pipeline
metadata:
  name: server
spec:
  description: Power on, install an OS, then the application.
  inputs:
    - {name: os, required: true, allowed: [ubuntu-24.04, rhel-9]}
    - {name: application, allowed: [web, database, none], default: none}
  steps:
    - stage: power-on
    - stage: install-os
    - stage: install-app
""",
    "profiles/profiles.yaml": """\
# Profiles: named sets of params (and hooks). `global` applies to every resource.
apiVersion: reconciler/v1
kind: Profile
metadata:
  name: global
spec:
  params:
    os: ubuntu-24.04
---
apiVersion: reconciler/v1
kind: Profile
metadata:
  name: web
spec:
  description: A web server.
  params:
    application: web
""",
    "machines/machines.yaml": """\
# Machines: what exists. Params resolve first-match-wins: the machine's own, its
# profiles in order, the pipeline's, the global profile, the inputs' defaults.
apiVersion: reconciler/v1
kind: Machine
metadata:
  name: web-01
  labels: {role: web}
spec:
  provider: lab
  pipeline: server
  profiles: [web]
  bmc: {address: "10.0.0.11"}
""",
    "policy.yaml": """\
# The policy: guardrails for the whole repository.
apiVersion: reconciler/v1
kind: Policy
metadata:
  name: default
spec:
  prune: false                  # a resource removed from Git is reported, not destroyed
  selfHeal: false               # drift is reported, not corrected
  maxDestructiveActions: 1
""",
    ".reconcilerignore": """\
# Glob patterns of paths the controller does not read as documents.
playbooks/
docs/
""",
}


class NotEmpty(Exception):
    pass


def scaffold(target: Path) -> list[Path]:
    """Write the starter repository into `target` (absent or empty); the paths written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise NotEmpty(f"{target}: exists and is not an empty directory")
    written: list[Path] = []

    def write(relative: str, text: str) -> None:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    schema_path = f"schemas/{COMBINED}"
    write(schema_path, json.dumps(combined_schema(), indent=2) + "\n")
    for relative, text in FILES.items():
        if relative.endswith(".yaml"):
            text = modeline_for(target / relative, target / schema_path) + "\n" + text
        write(relative, text)
    settings = {
        "yaml.schemas": {f"./{schema_path}": ["*.yaml", "**/*.yaml"]},
        "files.associations": {".reconcilerignore": "ignore"},
    }
    write(".vscode/settings.json", json.dumps(settings, indent=2) + "\n")
    return written
