"""A canary secret, given by reference, leaks into no log, journal row, result or error."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.execute import Journal, idempotency_key, run_journaled
from tests.servers.fake_http import ApiServer

from .conftest import (
    CANARY,
    CANARY_ENV,
    TRICKY,
    TRICKY_ENV,
    assert_no_canary,
    files_under,
    make_ctx,
    secret_leaks,
    task,
)


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
    assert any(CANARY in (r.headers.get("X-Api-Token") or "") for r in api.received)
    assert "BMC refused password ***" in results[2].message
    assert_no_canary(state, [r.to_json() for r in results])
    assert (state / "logs").is_dir() and list((state / "logs").rglob("*.log"))


# --- a secret made of what encodings change, straddling every cut ------------------

SNIPPET_CUT = 300  # web.ERROR_SNIPPET_LIMIT: the error message's snippet of a body
LOGGED_CUT = 4096  # web.LOGGED_BODY_LIMIT: the task log's copy of a body


def straddling(cut: int) -> list[int]:
    """Start offsets that put a cut at several places inside the secret."""
    return [cut - k for k in (1, 5, 12, len(TRICKY) - 1)]


def test_tricky_secret_straddling_every_cut_leaks_nowhere(api: ApiServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    tasks = []
    for cut in (SNIPPET_CUT, LOGGED_CUT):
        for at in straddling(cut):
            for form in ("text", "json"):
                query = f"at={at}&code=400" + ("&json=1" if form == "json" else "")
                tasks.append(
                    task(
                        name=f"bearer-{form}-{at}",
                        type="http",
                        url=f"{api.url}/echo?{query}&token=${{params.tricky}}",
                        auth={"bearer": f"env:{TRICKY_ENV}"},
                        body={"pad": "p" * (at - 20), "tricky": "${params.tricky}"},
                    )
                )
        tasks.append(
            task(
                name=f"basic-{cut}",
                type="http",
                url=f"{api.url}/echo?at={cut - 7}&code=401",
                auth={"username": "ada", "password": f"env:{TRICKY_ENV}"},
            )
        )
    tasks.append(  # a retried 5xx: the snippet goes into progress notes too
        task(
            name="retried",
            type="http",
            url=f"{api.url}/echo?at={SNIPPET_CUT - 3}&code=503",
            auth={"bearer": f"env:{TRICKY_ENV}"},
            retry={"attempts": 2, "initialBackoff": 0.01},
        )
    )
    results = []
    with Journal.open(state) as journal:
        journal.record_plan("t" * 64, "rev", '{"note": "plan"}')
        for t in tasks:
            key = idempotency_key("t" * 64, "Machine/m1", "s", t.name)
            ctx = make_ctx(
                idempotency_key=key,
                plan_hash="t" * 64,
                stage="s",
                params={"os": "ubuntu", "tricky": f"env:{TRICKY_ENV}"},
                secure_params=frozenset({"tricky"}),
            )
            results.append(asyncio.run(run_journaled(journal, t, ctx, state_dir=state)))
    # The secret really travelled and came back: in headers, the path and the body.
    echoes = api.requests("POST", "/echo") + api.requests("GET", "/echo")
    assert len(echoes) == len(tasks) + 1  # the 503 was tried twice
    assert all(json.loads(r.body)["tricky"] == TRICKY for r in echoes if r.body)
    bearers = [r.headers["Authorization"] for r in echoes if "Bearer" in r.headers["Authorization"]]
    assert bearers and set(bearers) == {f"Bearer {TRICKY}"}
    assert [r.ok for r in results] == [False] * len(tasks)
    assert all("answered 40" in r.message or "answered 503" in r.message for r in results)
    places: dict[str, bytes | str] = {
        f"result {t.name}": json.dumps(r.to_json()) for t, r in zip(tasks, results, strict=True)
    }
    places |= files_under(state)
    assert any(p.endswith(".log") for p in places), "task logs were written"
    assert secret_leaks(TRICKY, places) == []
