"""The production image (Dockerfile), built and run with rootless-style podman (vfs storage).

No image registry is reachable here, so the base is a Debian bookworm root made with
debootstrap and imported (`BASE_IMAGE` build argument); every instruction of the
Dockerfile after `FROM` is the one production builds. The pinned python:3.11-slim base
itself is not pulled or checked here (README, "Container", says so).

Smoke test: the demo inside the image, the Redfish, EC2 and Ansible extras importable,
the image's metadata (non-root user, volume, healthcheck, tini, `run`), then the
controller against a declared repository on a mounted volume: ready, healthy by its
own HEALTHCHECK, status committed, and `podman stop` (SIGTERM through tini) exits 0.

Skipped where podman, runc or debootstrap are not installed (`.ci/run` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_FILES, ROOT
from tests.repos import commit_tree

pytestmark = pytest.mark.slow

IMAGE = "localhost/reconciler:ci"
BASE = "localhost/reconciler-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,git,openssh-client,ca-certificates,tini"
CACHE = Path("/var/tmp/reconciler-ci")


def podman_env(tmp: Path) -> dict[str, str]:
    # This sandbox may not raise rlimits or use crun's cgroup handling: no default
    # ulimits, runc as the runtime.
    conf = tmp / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(env: dict[str, str], *args: str, timeout: float = 900, check: bool = True,
           ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        ["podman", "--storage-driver", "vfs", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=check,
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (.ci/run installs them)")
    env = podman_env(tmp_path_factory.mktemp("podman"))
    if podman(env, "image", "exists", BASE, check=False).returncode != 0:
        root = CACHE / "bookworm"
        if not (root / "usr" / "bin" / "python3").exists():
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    "bookworm",
                    str(root),
                    "http://deb.debian.org/debian",
                ],
                check=True,
                capture_output=True,
                timeout=900,
            )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "--storage-driver", "vfs", "import", "-", BASE],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
            env=env,
            timeout=600,
        )
        tar.wait()
    built = podman(
        env,
        "build", "--format", "docker", "--network", "host",
        # pip in the build trusts what this machine's pip trusts (its index's CA).
        "--volume", "/etc/ssl/certs:/etc/ssl/certs:ro",
        "--env", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        "--build-arg", f"BASE_IMAGE={BASE}",
        "--build-arg", "REVISION=ci",
        "-t", IMAGE, str(ROOT),
        check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    yield env


def test_image_metadata(image: dict[str, str]) -> None:
    (info,) = json.loads(podman(image, "image", "inspect", IMAGE).stdout)
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "reconciler"]
    assert config["Cmd"] == ["run"]
    assert "/var/lib/reconciler" in config["Volumes"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Labels"]["org.opencontainers.image.title"] == "reconciler"
    assert config["Labels"]["org.opencontainers.image.revision"] == "ci"
    assert any("/healthz" in part for part in info["Healthcheck"]["Test"])


def test_demo_and_extras_in_the_image(image: dict[str, str]) -> None:
    demo = podman(image, "run", "--rm", "--network", "none", IMAGE, "demo", check=False)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "resources: 10 Ready" in demo.stdout
    extras = podman(
        image, "run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c",
        "import os; from reconciler.providers import factory_for; "
        "[factory_for(t) for t in ('redfish', 'aws-ec2', 'http')]; "
        "import ansible, boto3, sushy; print(os.getuid())",
    )  # fmt: skip
    assert extras.stdout.strip() == "10001"
    playbook = podman(image, "run", "--rm", "--entrypoint", "ansible-playbook", IMAGE, "--version")
    assert playbook.stdout.startswith("ansible-playbook")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return int(answer.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_controller_runs_healthy_and_stops_on_sigterm(
    image: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    commit_tree(data / "infra.git", BASE_FILES, "Declare the fleet")
    # The image's user owns what it reads and writes: libgit2 refuses a repository
    # owned by another user, as git does ("dubious ownership").
    for path in [data, *data.rglob("*")]:
        os.chown(path, 10001, 10001)
    port = free_port()
    name = f"reconciler-smoke-{port}"
    podman(
        image, "run", "-d", "--name", name, "--network", "host",
        "-v", f"{data}:/data",
        "-e", "RECONCILER_REPO=/data/infra.git",
        "-e", f"RECONCILER_LISTEN=127.0.0.1:{port}",
        IMAGE,
    )  # fmt: skip
    try:
        assert wait_for(f"http://127.0.0.1:{port}/readyz") == 200
        health = podman(image, "healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        deadline = time.monotonic() + 120
        # git, not pygit2: the repository belongs to the image's user now.
        show = ["git", "-c", "safe.directory=*", "--git-dir", str(data / "infra.git"), "show",
                "reconciler/status:status/Machine/m1.yaml"]  # fmt: skip
        while (status := subprocess.run(show, capture_output=True, text=True)).returncode:
            assert time.monotonic() < deadline, podman(image, "logs", name).stderr[-3000:]
            time.sleep(0.5)
        assert "phase: Ready" in status.stdout
        podman(image, "stop", "--time", "30", name)
        (state,) = json.loads(podman(image, "inspect", name).stdout)
        assert state["State"]["ExitCode"] == 0, podman(image, "logs", name).stderr[-3000:]
    finally:
        podman(image, "rm", "-f", name, check=False)
