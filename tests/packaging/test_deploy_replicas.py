"""examples/deploy/ for replicas and workers on PostgreSQL: the systemd drop-in that makes
`reconciler.service` a replica, the worker template unit, and the Kubernetes manifest
with two `run` replicas and a worker Deployment per site — checked against this checkout.

The units go through `systemd-analyze verify` (a throwaway root holding them, the
system's own units and a stand-in for the installed program; the drop-in in its
`reconciler.service.d/`), which reports unknown keys and bad values. The manifest is
parsed as YAML; its settings are validated by `Settings` itself (names and values), the
worker's arguments by the real CLI's `worker --help`, and every secret is a reference
whose target exists. A real cluster and a real systemd boot cannot run here.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from reconciler.settings import Settings
from tests.conftest import ROOT

DEPLOY = ROOT / "examples" / "deploy"
DROP_IN = DEPLOY / "reconciler.service.d" / "database.conf"
WORKER_UNIT = DEPLOY / "reconciler-worker@.service"


def test_units_verify_with_the_drop_in_and_a_worker_instance(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    root = tmp_path / "root"
    system = root / "etc" / "systemd" / "system"
    (system / "reconciler.service.d").mkdir(parents=True)
    shutil.copy(DEPLOY / "reconciler.service", system)
    shutil.copy(WORKER_UNIT, system)
    shutil.copy(DROP_IN, system / "reconciler.service.d")
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system",
                    symlinks=True)  # fmt: skip
    program = root / "opt" / "reconciler" / "bin" / "reconciler"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    checked = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            f"--root={root}",
            "reconciler.service",
            "reconciler-worker@dc1.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == "", checked.stderr  # unknown keys and bad values are warnings


def unit_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in lines
        if line.startswith("Environment=")
    )


def credentials(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {
        line.removeprefix("LoadCredential=").split(":", 1)[0]
        for line in lines
        if line.startswith("LoadCredential=")
    }


def check_database_settings(env: dict[str, str], loaded: set[str]) -> None:
    """The URL names no password; the password is a `file:` reference to a credential
    the unit loads (systemd's %d: the service's credentials folder)."""
    assert urlsplit(env["RECONCILER_DATABASE_URL"]).password is None
    ref = env["RECONCILER_DATABASE_PASSWORD"]
    assert ref.startswith("file:%d/"), ref
    assert ref.removeprefix("file:%d/") in loaded
    unknown = [n for n in env if n.removeprefix("RECONCILER_").lower() not in Settings.model_fields]
    assert unknown == [], f"not settings of this version: {unknown}"


def test_the_drop_in_makes_the_service_a_replica_on_the_database() -> None:
    env = unit_env(DROP_IN)
    check_database_settings(env, credentials(DROP_IN))
    host = env["RECONCILER_ADVERTISE_URL"].replace("%H", "replica-a.example.com")
    settings = Settings(  # the values as the program reads them (the name of the host: %H)
        database_url=env["RECONCILER_DATABASE_URL"],
        database_password=env["RECONCILER_DATABASE_PASSWORD"].replace("%d", "/run/creds"),
        execute=env["RECONCILER_EXECUTE"],
        listen=env["RECONCILER_LISTEN"],
        advertise_url=host,
    )
    assert settings.execute == "workers"
    assert not settings.listen.startswith("127.")  # the other replicas reach the leader


def worker_options() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_worker_unit_runs_one_worker_per_site() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(WORKER_UNIT)
    service = parser["Service"]
    argv = service["ExecStart"].split()
    assert Path(argv[0]).name == "reconciler" and argv[1] == "worker"
    assert argv[argv.index("--site") + 1] == "%i"  # the instance is the site
    flags = [a for a in argv[2:] if a.startswith("--")]
    help_text = worker_options()
    assert all(flag in help_text for flag in flags), (flags, help_text)
    assert service["KillSignal"] == "SIGTERM"
    env = unit_env(WORKER_UNIT)
    assert env["RECONCILER_STATE_DIR"] == "/var/lib/" + service["StateDirectory"]
    check_database_settings(env, credentials(WORKER_UNIT))


def manifest() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes-replicas.yaml").read_text()))


def container_settings(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    return container, env


def check_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod's settings are valid `Settings`; each secret reference has its target.
    Returns the settings' values by field name."""
    container, env = container_settings(pod)
    names = [e["name"] for e in container["env"]]
    values: dict[str, Any] = {}
    for name, entry in env.items():
        if not name.startswith("RECONCILER_"):
            continue
        value = entry["value"]
        for used in re.findall(r"\$\((\w+)\)", value):  # defined before use, as k8s needs
            assert names.index(used) < names.index(name), (used, name)
            value = value.replace(f"$({used})", "10.0.0.7")
        values[name.removeprefix("RECONCILER_").lower()] = value
    Settings(**values)  # unknown names and bad values are refused here
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for field in ("database_password", "api_token", "git_ssh_key"):
        if field not in values:
            continue
        scheme, target = values[field].split(":", 1)
        if scheme == "env":
            assert "secretKeyRef" in env[target]["valueFrom"], field
        else:
            folder, file_name = target.rsplit("/", 1)
            volume = volumes[mounts[folder]["name"]]
            assert file_name in {i["path"] for i in volume["secret"]["items"]}, field
    assert urlsplit(values["database_url"]).password is None
    assert "database_password" in values
    state = mounts[values["state_dir"]]["name"]
    assert "emptyDir" in volumes[state]  # each process its own: the shared part is the database
    return values


def test_kubernetes_two_replicas_and_a_worker_deployment_per_site() -> None:
    docs = manifest()
    deployments = [d for d in docs if d["kind"] == "Deployment"]

    def command(d: dict[str, Any]) -> str:
        return str(d["spec"]["template"]["spec"]["containers"][0]["args"][0])

    runs = [d for d in deployments if command(d) == "run"]
    workers = [d for d in deployments if command(d) == "worker"]
    assert len(runs) + len(workers) == len(deployments)
    (run,) = runs
    assert run["spec"]["replicas"] == 2
    pod = run["spec"]["template"]["spec"]
    values = check_pod(pod)
    assert values["execute"] == "workers"
    assert values["advertise_url"].startswith("http://10.0.0.7:")  # the pod's own address
    assert values["listen"].endswith(":" + values["advertise_url"].rsplit(":", 1)[1])
    container, _env = container_settings(pod)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["selector"] == run["spec"]["selector"]["matchLabels"]

    assert workers, "no worker Deployment"
    help_text = worker_options()
    for worker in workers:
        spec = worker["spec"]
        assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
        labels = spec["template"]["metadata"]["labels"]
        assert not service["spec"]["selector"].items() <= labels.items()  # no API on workers
        worker_pod = spec["template"]["spec"]
        container, _env = container_settings(worker_pod)
        args = container["args"]
        assert args[0] == "worker"
        site = args[args.index("--site") + 1]
        assert spec["selector"]["matchLabels"]["reconciler/site"] == site
        assert all(a in help_text for a in args[1:] if a.startswith("--")), args
        check_pod(worker_pod)
        assert worker_pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsUser"]
