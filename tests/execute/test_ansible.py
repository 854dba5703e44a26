"""The ansible runner with a real local ansible-playbook run."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from reconciler.execute import TaskLog, run_task

from .conftest import CANARY, assert_no_canary, make_ctx, task

HAVE_ANSIBLE = (Path(sys.executable).parent / "ansible-playbook").exists() or bool(
    shutil.which("ansible-playbook")
)
pytestmark = pytest.mark.skipif(
    not HAVE_ANSIBLE, reason="ansible-core is not installed (pip install -e '.[test]')"
)

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write what we were given
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'host': inventory_hostname, 'os': os, 'size': size, 'greeting': greeting,
                      'key': reconciler_idempotency_key, 'token_len': token | length} | to_json }}"
    - name: say the token
      ansible.builtin.debug:
        msg: "token={{ token }}"
"""

FAILING = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: fine
      ansible.builtin.debug: {msg: ok}
    - name: break on purpose
      ansible.builtin.fail: {msg: "disk not found"}
"""


def test_playbook_runs_locally_with_vars_and_redacted_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    repo = tmp_path / "repo"
    (repo / "playbooks").mkdir(parents=True)
    (repo / "playbooks/app.yaml").write_text(PLAYBOOK)
    out = tmp_path / "out.json"
    t = task(
        type="ansible",
        playbook="playbooks/app.yaml",
        extraVars={"out": str(out), "greeting": "hello ${resource.name}"},
        timeout=60,
    )
    log = TaskLog.open(tmp_path / "state", "p" * 64, "Machine/m1", "install-app", "play")
    ctx = make_ctx(repo_dir=repo, log=log)
    result = asyncio.run(run_task(t, ctx))
    log.close()
    assert result.ok, result.message
    written = json.loads(out.read_text())
    assert written == {
        "host": "m1",
        "os": "ubuntu",
        "size": 3,
        "greeting": "hello m1",
        "key": ctx.idempotency_key,
        "token_len": len(CANARY),
    }
    assert result.outputs["recap"]["m1"]["failed"] == 0
    log_text = Path(result.log_path or "").read_text()
    assert "token=***" in log_text and "PLAY RECAP" in log_text
    assert_no_canary(tmp_path / "state", result.to_json())
    assert list(temp.iterdir()) == []  # the vars file (with the secret) is gone


def test_failed_playbook_names_the_task(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(FAILING)
    t = task(type="ansible", playbook="site.yaml", timeout=60)
    result = asyncio.run(run_task(t, make_ctx(repo_dir=tmp_path)))
    assert not result.ok and result.attempts == 1
    assert "task 'break on purpose' on m1" in result.message
    assert "disk not found" in result.message


def test_playbook_outside_repo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "evil.yaml").write_text(FAILING)
    t = task(type="ansible", playbook="../evil.yaml")
    result = asyncio.run(run_task(t, make_ctx(repo_dir=tmp_path / "repo")))
    assert not result.ok and "outside the repository" in result.message
