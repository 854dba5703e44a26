"""The wheel, as `pip install reconciler` gives it: built, installed into a fresh venv
with no source tree on the path, and `reconciler demo` run from an empty folder.

The venv has no system site-packages; its dependencies come from the package index
the machine's pip is configured with, as a user's would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from reconciler.cli.demo import DEMO_SINK_PORT
from tests.conftest import ROOT
from tests.e2e.test_demo import demo_port, port_free
from tests.servers.git import free_port

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    """The environment without anything pointing at this checkout or its venv."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("RECONCILER_")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    return env


def test_the_installed_wheel_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("reconciler-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "reconciler/_sample_repo/machines/rack-r01.yaml" in names
    assert "reconciler/_sample_repo/.reconcilerignore" in names
    for part in ("templates/base.html", "templates/resource.html", "static/htmx.min.js"):
        assert f"reconciler/controller/ui/{part}" in names, part

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import reconciler, sys; print(reconciler.__file__); print(sys.path)"],
        capture_output=True,
        text=True,
        cwd=empty,
        env=clean_env(),
        check=True,
    )
    assert where.stdout.startswith(str(venv)), where.stdout
    assert str(ROOT) not in where.stdout, "the source tree must not be on the path"

    with demo_port():
        while not port_free(DEMO_SINK_PORT):  # another program's demo: wait for it
            time.sleep(0.2)
        demo = subprocess.run(
            [str(venv / "bin" / "reconciler"), "demo"],
            capture_output=True,
            text=True,
            cwd=empty,
            env=clean_env(),
            timeout=300,
        )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "made .reconciler/demo/infra.git from sample-repo/" in demo.stdout
    assert "resources: 10 Ready" in demo.stdout
    assert (empty / ".reconciler" / "demo" / "infra.git" / "HEAD").exists()

    # The web UI from the installed package: its templates and htmx are package data.
    port = free_port()
    env = {**clean_env(), "RECONCILER_API_READ_OPEN": "true"}
    argv = [str(venv / "bin" / "reconciler"), "--repo", ".reconciler/demo/infra.git", "run"]
    argv += ["--listen", f"127.0.0.1:{port}", "--interval", "1h"]
    with (tmp_path / "run.log").open("wb") as out:
        process = subprocess.Popen(argv, cwd=empty, env=env, stdout=out, stderr=out)
    try:
        overview = _get_when_up(f"http://127.0.0.1:{port}/")
        htmx = _get_when_up(f"http://127.0.0.1:{port}/ui/static/htmx.min.js")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert "<h1>Overview</h1>" in overview.decode()
    assert htmx.startswith(b"var htmx=function()")


def _get_when_up(url: str, timeout: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return bytes(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
