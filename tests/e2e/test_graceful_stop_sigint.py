"""SIGINT to `reconciler run` stops it like SIGTERM: tasks in flight finish and are
journaled, the plan keeps its keys, the journal says SIGINT stopped it, and the next
start resumes it without running anything finished again.

The same local job service and slow command tasks as `test_graceful_stop` (a real
`reconciler run` subprocess; asserted on the service's per-key counts, the effects
file and the journal). Stages finished before the stop are recorded as done: the
restart starts none of their work again.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.support import Fleet
from tests.e2e.test_graceful_stop import (  # noqa: F401
    MACHINES,
    Jobs,
    check_exactly_once,
    free_port,
    jobs,
    keys_in_journal,
    repo,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_sigint_to_run_is_resumed_by_the_next_start_and_finished_stages_stay_done(
    tmp_path: Path,
    jobs: Jobs,  # noqa: F811
) -> None:
    effects = tmp_path / "effects.txt"
    effects.touch()
    fleet = Fleet.create(tmp_path, repo(jobs.url, effects))
    log = tmp_path / "run.log"
    port = free_port()
    proc = fleet.start("run", "--listen", f"127.0.0.1:{port}", "--interval", "1h", log=log)
    try:
        # Wait until at least one resource's stage is done (its command's effect is
        # written) while others are still in flight.
        wait_until(lambda: len(effects.read_text().split()) >= 1)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    (plan,) = fleet.journal_plans()
    assert (plan["state"], plan["stopped"]) == ("running", "SIGINT")
    assert all(t["state"] == "finished" for t in fleet.journal_tasks())
    done_before = set(effects.read_text().split())
    started_before = dict(jobs.started)
    assert 0 < len(done_before) < MACHINES  # some resources done, some left for the restart
    keys_before = keys_in_journal(fleet)

    again = fleet.run("apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed an unfinished plan" in again.stdout
    check_exactly_once(fleet, jobs, effects, keys_before)
    # The jobs the stopped run had started were not started again (polled, not posted).
    assert all(jobs.started[key] == 1 for key in started_before)
