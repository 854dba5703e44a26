"""The simulator's console as people and tests run it: ``python -m
reconciler.providers.simulator`` in a process of its own, its effect read back through
the provider (what the controller sees), in a fresh connection."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.providers.base import ActionRequest, ResourceRef
from reconciler.providers.simulator import SimulatorProvider
from tests.conftest import ROOT

MACHINE = ResourceRef(
    kind="Machine",
    name="r01-node02",
    key="Machine/r01-node02",
    declared={"params": {"os": "ubuntu-24.04"}, "bmc": {"address": "10.1.0.12"}},
    params={"os": "ubuntu-24.04"},
)


def console(*args: str) -> subprocess.CompletedProcess[str]:
    """The console in a subprocess, running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "reconciler.providers.simulator", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def observed(state: Path) -> dict:
    """The machine's fields as the provider observes them, in a connection of its own."""
    sim = SimulatorProvider.open(state)
    try:
        return dict(asyncio.run(sim.observe([MACHINE]))[MACHINE.key].fields)
    finally:
        asyncio.run(sim.close())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory holding one machine, powered on and installed by the provider."""
    sim = SimulatorProvider.open(tmp_path)
    for action, key in (("power-on", "p"), ("install-os", "i")):
        request = ActionRequest(action=action, resource=MACHINE, idempotency_key=key)
        asyncio.run(sim.start(request))
    asyncio.run(sim.close())
    return tmp_path


def test_drift_changes_what_the_provider_observes(state: Path) -> None:
    assert observed(state)["power"] == "on"
    off = console("drift", "--state-dir", str(state), MACHINE.key, "power", '"off"')
    assert (off.returncode, off.stdout, off.stderr) == (0, "", "")
    # Not JSON: the plain string. A dotted path reaches into params.
    plain = console("drift", "--state-dir", str(state), MACHINE.key, "params.os", "rhel-9")
    assert plain.returncode == 0, plain.stderr
    disks = console("drift", "--state-dir", str(state), MACHINE.key, "params.disks", "8")
    assert disks.returncode == 0, disks.stderr

    fields = observed(state)
    assert fields["power"] == "off"
    assert fields["params"]["os"] == "rhel-9"
    assert fields["params"]["disks"] == 8
    sim = SimulatorProvider.open(state)
    drifts = [e["detail"] for e in sim.action_log() if e["event"] == "drift"]
    asyncio.run(sim.close())
    assert drifts == [
        {"field": "power", "value": "off"},
        {"field": "params.os", "value": "rhel-9"},
        {"field": "params.disks", "value": 8},
    ]


def test_drift_of_a_missing_resource_is_an_error_and_changes_nothing(state: Path) -> None:
    before = observed(state)
    done = console("drift", "--state-dir", str(state), "Machine/none", "power", "off")
    assert done.returncode == 1
    assert done.stderr == "error: simulator: Machine/none does not exist\n"
    assert done.stdout == ""
    assert observed(state) == before
    assert '"drift"' not in console("log", "--state-dir", str(state)).stdout


def test_log_prints_the_provider_action_log_as_json_lines(state: Path) -> None:
    console("drift", "--state-dir", str(state), MACHINE.key, "power", "off")
    done = console("log", "--state-dir", str(state))
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    sim = SimulatorProvider.open(state)
    assert [json.loads(line) for line in lines] == sim.action_log()
    asyncio.run(sim.close())
    assert [json.loads(line)["event"] for line in lines] == [
        "started", "succeeded", "started", "succeeded", "drift",
    ]  # fmt: skip
    # Compact, keys sorted: one grep-able line per event.
    assert lines[-1].startswith('{"action":"drift","at":')


def test_a_command_line_without_a_command_gets_usage_and_exit_2(tmp_path: Path) -> None:
    done = console()
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m reconciler.providers.simulator")
    assert "Traceback" not in done.stderr
    missing = console("drift", "--state-dir", str(tmp_path), MACHINE.key)
    assert missing.returncode == 2
    assert "the following arguments are required: field, value" in missing.stderr


def test_loading_the_provider_type_leaves_the_console_unloaded() -> None:
    # The provider never imports the console (tests/test_layers.py sees one room here).
    code = (
        "import sys\n"
        "from reconciler.providers import factory_for\n"
        "factory = factory_for('simulator')\n"
        "print(factory.__module__)\n"
        "print(sorted(m for m in sys.modules if m.startswith('reconciler.providers.simulator')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    module, loaded = done.stdout.splitlines()
    assert module == "reconciler.providers.simulator.provider"
    assert loaded == "['reconciler.providers.simulator', 'reconciler.providers.simulator.provider']"


def test_a_state_dir_that_cannot_be_opened_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("not a directory\n")
    for args in (("log",), ("drift", MACHINE.key, "power", "off")):
        done = console(args[0], "--state-dir", str(not_a_dir), *args[1:])
        assert done.returncode == 1, args
        assert done.stderr.startswith("error: "), done.stderr
        assert str(not_a_dir) in done.stderr
        assert "Traceback" not in done.stderr
    assert not_a_dir.read_text() == "not a directory\n"
