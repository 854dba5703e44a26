"""The command line's surface: setting flags on either side of the command, `-h`, what
each command's help says about its settings, flags a command ignores, completion.

Real subprocesses (`python -m reconciler`), as a user's shell runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.settings import Settings
from tests.conftest import BASE_FILES, ROOT
from tests.e2e.support import Fleet


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    full_env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "120", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=120,
    )


def test_setting_flags_go_before_or_after_the_command(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    state = str(fleet.state)
    applied = cli("apply", "--repo", str(fleet.bare), "--state-dir", state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = cli("status", "--repo", str(fleet.bare), "--state-dir", state)
    before = cli("--repo", str(fleet.bare), "--state-dir", state, "status")
    mixed = cli("--repo", str(fleet.bare), "status", "--state-dir", state)
    assert after.returncode == before.returncode == mixed.returncode == 0, after.stderr
    assert "Machine/m1" in after.stdout and "Ready" in after.stdout
    assert after.stdout == before.stdout == mixed.stdout


def test_a_duration_setting_in_seconds_from_the_environment(tmp_path: Path) -> None:
    # An environment variable is always a string: "3600" means seconds, as the message says.
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    env = {"RECONCILER_INTERVAL": "3600", "RECONCILER_EVENT_DEBOUNCE": "0.5"}
    planned = cli("plan", "--repo", str(fleet.bare), "--state-dir", str(fleet.state), env=env)
    assert planned.returncode == 2, planned.stdout + planned.stderr  # changes pending
    assert "invalid settings" not in planned.stderr
    refused = cli("plan", "--repo", str(fleet.bare), env={"RECONCILER_INTERVAL": "soon"})
    assert refused.returncode == 1 and "not a duration: 'soon'" in refused.stderr


def test_a_flag_after_the_command_wins(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, dict(BASE_FILES))
    done = cli("--state-dir", str(tmp_path / "first"), "apply", "--repo", str(fleet.bare),
               "--state-dir", str(tmp_path / "second"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "second" / "journal.sqlite").exists()
    assert not (tmp_path / "first").exists()


@pytest.mark.parametrize("command", ["validate", "plan", "apply", "run", "status", "audit",
                                     "demo", "schema", "init"])  # fmt: skip
def test_dash_h_is_help(command: str) -> None:
    short, long = cli(command, "-h"), cli(command, "--help")
    assert short.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert f"Usage: reconciler {command}" in short.stdout


def test_help_names_the_environment_variable_and_default_of_each_setting_read() -> None:
    apply = cli("apply", "-h").stdout
    for name, default in [
        ("RECONCILER_REPO", "none"),
        ("RECONCILER_BRANCH", "main"),
        ("RECONCILER_STATE_DIR", ".reconciler"),
        ("RECONCILER_STATUS_BRANCH", "reconciler/status"),
        ("RECONCILER_GIT_SSH_KEY", "none"),
        ("RECONCILER_GIT_KNOWN_HOSTS", "~/.ssh/known_hosts"),
        ("RECONCILER_GIT_AUTHOR_EMAIL", "reconciler@localhost"),
        ("RECONCILER_FORCE_PUSH_POLICY", "follow"),
    ]:
        assert name in apply, name
        after = apply.split(name, 1)[1][:200]
        assert f"default: {default}" in after, (name, after)
    assert "RECONCILER_LISTEN" not in apply  # apply does not listen
    run = cli("run", "-h").stdout
    missing = [f for f in Settings.model_fields if f"RECONCILER_{f.upper()}" not in run]
    assert missing == [], f"run reads every setting; its help lacks {missing}"
    assert "default: 127.0.0.1:8080" in run and "default: 60s" in run


def test_a_flag_the_command_ignores_is_an_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = cli("--listen", "0.0.0.0:9", "--repo", str(tmp_path), "--state-dir", str(state),
                 "apply")  # fmt: skip
    assert before.returncode == 64
    assert "reconciler apply: --listen is not used by apply (it is read by: run)" in before.stderr
    after = cli("apply", "--listen", "0.0.0.0:9", "--repo", str(tmp_path))
    assert after.returncode == 64
    assert "No such option: --listen" in after.stderr
    demo = cli("demo", "--repo", "x")
    assert demo.returncode == 64
    assert not state.exists(), "nothing ran"
    validate = cli("--repo", "x", "validate", "sample-repo")
    assert validate.returncode == 64
    assert "--repo is not used by validate" in validate.stderr


def test_a_bad_setting_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = cli("run", "--listen", "nonsense", "--repo", str(tmp_path))
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("reconciler: invalid settings: listen")


def test_shell_completion_installs(tmp_path: Path) -> None:
    done = cli("--install-completion", "bash", env={"HOME": str(tmp_path), "SHELL": "/bin/bash"})
    assert done.returncode == 0, done.stderr
    script = tmp_path / ".bash_completions" / "reconciler.sh"
    assert script.is_file()
    assert "_RECONCILER_COMPLETE" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    # What the installed script asks the program when TAB is pressed after "reconciler ap":
    answer = cli(env={"_RECONCILER_COMPLETE": "complete_bash", "COMP_WORDS": "reconciler ap",
                      "COMP_CWORD": "1"})  # fmt: skip
    assert answer.stdout.split() == ["apply"], answer.stdout + answer.stderr
