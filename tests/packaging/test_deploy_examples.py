"""examples/deploy/: the systemd unit and the Kubernetes manifest, parsed and checked
against what the program and the image really are.

The unit goes through `systemd-analyze verify` (in a throwaway root holding the unit,
the system's own units and a stand-in for the installed program), which reports
unknown keys and bad values; the manifest is parsed as YAML and its fields that
matter are compared with the settings, routes and image user of this checkout.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.settings import Settings
from tests.conftest import ROOT

DEPLOY = ROOT / "examples" / "deploy"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "reconciler.service")
    return parser


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    shutil.copy(DEPLOY / "reconciler.service", root / "etc" / "systemd" / "system")
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system",
                    symlinks=True)  # fmt: skip
    program = root / "opt" / "reconciler" / "bin" / "reconciler"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", "reconciler.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == "", checked.stderr  # unknown keys and bad values are warnings


def test_systemd_unit_runs_the_controller_with_its_state() -> None:
    service = unit()["Service"]
    argv = service["ExecStart"].split()
    assert Path(argv[0]).name == "reconciler" and argv[1:] == ["run"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["StateDirectory"] == "reconciler"
    lines = (DEPLOY / "reconciler.service").read_text().splitlines()
    env = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in lines
        if line.startswith("Environment=")
    )
    assert env["RECONCILER_STATE_DIR"] == "/var/lib/" + service["StateDirectory"]
    assert all(name.removeprefix("RECONCILER_").lower() in Settings.model_fields for name in env)


def manifest() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    return {d["kind"]: d for d in docs}


def test_kubernetes_manifest(tmp_path: Path) -> None:
    docs = manifest()
    deployment = docs["Deployment"]["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"]["type"] == "Recreate"  # one controller per state volume
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["run"]
    env = {e["name"]: e for e in container["env"]}
    settings = {n: e for n, e in env.items() if n.startswith("RECONCILER_")}
    unknown = [
        n for n in settings if n.removeprefix("RECONCILER_").lower() not in Settings.model_fields
    ]
    assert unknown == [], f"not settings of this version: {unknown}"

    # Secrets are references whose targets exist: env:NAME -> a variable from a Secret,
    # file:PATH -> a file of a mounted Secret volume.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for name in ("RECONCILER_API_TOKEN", "RECONCILER_WEBHOOK_SECRET", "RECONCILER_GIT_SSH_KEY"):
        ref = settings[name]["value"]
        scheme, target = ref.split(":", 1)
        if scheme == "env":
            assert "secretKeyRef" in env[target]["valueFrom"], name
        else:
            folder, file_name = target.rsplit("/", 1)
            volume = volumes[mounts[folder]["name"]]
            assert file_name in {i["path"] for i in volume["secret"]["items"]}, name

    # The state directory is the persistent volume.
    state = settings["RECONCILER_STATE_DIR"]["value"]
    claim = volumes[mounts[state]["name"]]["persistentVolumeClaim"]["claimName"]
    assert docs["PersistentVolumeClaim"]["metadata"]["name"] == claim

    # Probes on the routes the server has, on the port it listens on.
    port = int(settings["RECONCILER_LISTEN"]["value"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert ports["http"] == port
    from reconciler.controller.scheduler import Scheduler
    from reconciler.controller.server import create_app

    # A repository and a state directory: the portal's Git and request store need them.
    served = Settings(repo="https://git.example.com/infra.git", state_dir=tmp_path)
    routes = {getattr(r, "path", None) for r in create_app(Scheduler(served)).routes}
    assert {"/healthz", "/readyz", "/metrics"} <= routes

    # The pod's user is the image's (Dockerfile USER), and owns the volume (fsGroup).
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    assert pod["securityContext"]["runAsUser"] == int(user.group(1))
    assert pod["securityContext"]["fsGroup"] == int(user.group(2))
    assert docs["Service"]["spec"]["selector"] == deployment["selector"]["matchLabels"]
