"""A canary secret, given by reference, leaks into no log, journal row, result or error."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.execute import Journal, idempotency_key, run_journaled

from .conftest import CANARY, CANARY_ENV, ApiServer, assert_no_canary, make_ctx, task


def test_canary_in_no_log_journal_result_or_error(api: ApiServer, tmp_path: Path) -> None:
    state = tmp_path / "state"

    async def provider_action(action: str, args: dict[str, Any], key: str) -> dict[str, Any]:
        raise PermanentError(f"BMC refused password {args['password']}")

    tasks = [
        task(
            name="leaky-command",
            type="command",
            argv=[sys.executable, "-c", "import os,sys; print(os.environ['T']); sys.exit(2)"],
            secretEnv={"T": f"env:{CANARY_ENV}"},
        ),
        task(
            name="leaky-http",
            type="http",
            url=f"{api.url}/nowhere?code=400&token=${{params.token}}",
            headers={"X-Api-Token": f"env:{CANARY_ENV}"},
            body={"echo": "${params.token}"},
        ),
        task(
            name="leaky-provider",
            type="provider",
            action="install-os",
            args={"password": "${params.token}"},
        ),
        task(name="leaky-argv", type="command", argv=["echo", "${params.token}"]),
    ]
    results = []
    with Journal.open(state) as journal:
        journal.record_plan("c" * 64, "rev", '{"note": "plan"}')
        for t in tasks:
            key = idempotency_key("c" * 64, "Machine/m1", "s", t.name)
            ctx = make_ctx(
                idempotency_key=key, plan_hash="c" * 64, stage="s", provider_action=provider_action
            )
            results.append(asyncio.run(run_journaled(journal, t, ctx, state_dir=state)))
    assert [r.ok for r in results] == [False] * len(tasks)
    # the secret really was used (the server got it), and shows as *** where it is kept
    assert any(CANARY in (r.headers.get("X-Api-Token") or "") for r in api.state.received)
    assert "BMC refused password ***" in results[2].message
    assert_no_canary(state, [r.to_json() for r in results])
    assert (state / "logs").is_dir() and list((state / "logs").rglob("*.log"))
