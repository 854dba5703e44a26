"""The http and notify runners against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from reconciler.execute import TaskLog, run_task
from reconciler.execute.tasks.web import retry_after_seconds
from tests.servers.fake_http import ApiServer

from .conftest import (
    CANARY,
    CANARY_ENV,
    HOOK_SECRET,
    HOOK_SECRET_ENV,
    assert_no_canary,
    make_ctx,
    task,
)

FAST = {"attempts": 5, "initialBackoff": 0.01, "maxBackoff": 0.05}


def http_task(api: ApiServer, query: str, **fields: object) -> object:
    return task(
        type="http",
        url=f"{api.url}/jobs?{query}",
        body={"image": "${params.os}", "password": "${params.token}", "n": "${params.size}"},
        auth={"bearer": f"env:{CANARY_ENV}"},
        poll={"interval": 0.02},
        **{"retry": FAST, "timeout": 10, **fields},
    )


def test_202_polled_to_completion_through_500s_and_429s(api: ApiServer, tmp_path: Path) -> None:
    log = TaskLog.open(tmp_path, "p" * 64, "Machine/m1", "install-os", "call")
    ctx = make_ctx(log=log)
    acked: list[str] = []
    ctx = make_ctx(log=log, on_acknowledged=acked.append)
    result = asyncio.run(run_task(http_task(api, "fail=500,429,503&ra=0.05&polls=3"), ctx))
    log.close()

    assert result.ok, result.message
    assert result.attempts == 4  # three injected failures, then accepted
    assert result.outputs["body"]["status"] == "succeeded"
    assert result.operation_id is not None and result.operation_id.startswith(api.url)
    assert acked == [result.operation_id]
    posts = api.requests("POST", "/jobs")
    assert len(posts) == 4
    assert {p.headers["Idempotency-Key"] for p in posts} == {ctx.idempotency_key}
    assert json.loads(posts[-1].body) == {"image": "ubuntu", "password": CANARY, "n": 3}
    assert posts[-1].headers["Authorization"] == f"Bearer {CANARY}"
    polls = api.requests("GET", "/jobs/ops/")
    assert len(polls) == 3
    assert all(p.headers["Idempotency-Key"] == ctx.idempotency_key for p in polls)
    # the exchange is in the log, the secret is not
    text = Path(result.log_path or "").read_text()
    assert "POST" in text and "202 Accepted" in text and '"status": "running"' in text
    assert "authorization: ***" in text.lower()
    assert_no_canary(tmp_path, result.to_json())


def test_operation_failure_is_permanent(api: ApiServer) -> None:
    result = asyncio.run(run_task(http_task(api, "polls=2&outcome=failed"), make_ctx()))
    assert not result.ok
    assert "status='failed'" in result.message
    assert len(api.requests("POST", "/jobs")) == 1


def test_transient_poll_error_polls_again_without_reposting(api: ApiServer) -> None:
    result = asyncio.run(run_task(http_task(api, "polls=2&pollfail=503"), make_ctx()))
    assert result.ok, result.message
    assert len(api.requests("POST", "/jobs")) == 1
    assert len(api.requests("GET", "/jobs/ops/")) == 3


def test_client_error_is_permanent_without_retry(api: ApiServer) -> None:
    result = asyncio.run(run_task(http_task(api, "fail=400"), make_ctx()))
    assert not result.ok and result.attempts == 1
    assert "answered 400" in result.message
    assert len(api.requests("POST", "/jobs")) == 1


def test_attempts_exhausted(api: ApiServer) -> None:
    t = http_task(api, "fail=500,500,500,500,500,500")
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok and result.attempts == 5
    assert "gave up after 5 attempts" in result.message
    assert len(api.requests("POST", "/jobs")) == 5


def test_deadline_while_polling(api: ApiServer) -> None:
    t = http_task(api, "polls=100000&ra=0.05", timeout=0.6)
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok
    assert result.message.startswith("deadline exceeded after ")
    assert "while polling http://127.0.0.1:" in result.message


def test_200_with_status_field_is_not_completion(api: ApiServer) -> None:
    # 202 without Location but a running status: the URL itself is polled until done
    # (the fake answers "running" three times, then "succeeded").
    t = task(
        type="http",
        method="GET",
        url=f"{api.url}/status?code=202&status=running&until=3",
        poll={"interval": 0.02},
        timeout=60,
    )
    result = asyncio.run(run_task(t, make_ctx()))
    assert result.ok, result.message
    assert "succeeded" in result.message
    assert len(api.requests("GET", "/status")) == 4


def test_resume_from_operation_id_does_not_reissue(api: ApiServer) -> None:
    first = asyncio.run(run_task(http_task(api, "polls=3"), make_ctx(idempotency_key="k1")))
    assert first.ok
    ctx = make_ctx(idempotency_key="k1", operation_id=first.operation_id)
    again = asyncio.run(run_task(http_task(api, "polls=3"), ctx))
    assert again.ok and again.operation_id == first.operation_id
    assert len(api.requests("POST", "/jobs")) == 1


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_seconds(later) or 0) <= 30
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(earlier) == 0.0


def test_notify_is_signed_and_retried(api: ApiServer, tmp_path: Path) -> None:
    t = task(
        type="notify",
        url=f"{api.url}/hook?fail=503",
        secret=f"env:{HOOK_SECRET_ENV}",
        message="${resource.name} installed ${params.os}",
        retry=FAST,
    )
    log = TaskLog.open(tmp_path, "p" * 64, "Machine/m1", "install-os", "notify")
    result = asyncio.run(run_task(t, make_ctx(point="post-notify", log=log)))
    log.close()
    assert result.ok, result.message
    assert result.attempts == 2
    hooks = api.state.hooks
    assert [h["verified"] for h in hooks] == [True, True]
    body = json.loads(hooks[-1]["body"])
    assert body["event"] == "post-notify"
    assert body["message"] == "m1 installed ubuntu"
    assert body["resource"] == {"key": "Machine/m1", "kind": "Machine", "name": "m1"}
    assert body["idempotencyKey"].startswith("key-")
    expected = hmac.new(HOOK_SECRET.encode(), hooks[-1]["body"], hashlib.sha256).hexdigest()
    assert api.requests("POST", "/hook")[-1].headers["X-Reconciler-Signature-256"] == (
        f"sha256={expected}"
    )
    assert HOOK_SECRET not in Path(result.log_path or "").read_text()


def test_notify_with_wrong_signature_fails(api: ApiServer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WRONG_SECRET", "not-the-hook-secret")
    t = task(type="notify", url=f"{api.url}/hook", secret="env:WRONG_SECRET")
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok and "401" in result.message


def test_secure_param_refused_in_notify_message(api: ApiServer) -> None:
    t = task(type="notify", url=f"{api.url}/hook", message="token ${params.token}")
    result = asyncio.run(run_task(t, make_ctx()))
    assert not result.ok and "secure param 'token'" in result.message
    assert api.state.hooks == []
    assert_no_canary(result.to_json())


def test_retry_after_of_429_and_202_is_honoured_seconds_and_http_date(api: ApiServer) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    for hint, low, high in (("90", 90.0, 90.0), (quote(later), 110.0, 120.0)):
        slept: list[float] = []

        async def fake_sleep(seconds: float, slept: list[float] = slept) -> None:
            slept.append(seconds)  # a clock, not a server mock: no real waiting

        t = http_task(api, f"fail=429&ra={hint}", timeout=600)
        result = asyncio.run(run_task(t, make_ctx(), sleep=fake_sleep))
        assert result.ok, result.message
        # once after the 429, once before polling the 202's Location: both as told
        assert len(slept) == 2 and all(low <= s <= high for s in slept), slept


def test_basic_auth_from_a_reference_is_sent_and_not_logged(
    api: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_TEST_BASIC", "basic-pass-word")
    t = task(
        type="http",
        method="GET",
        url=f"{api.url}/status",
        auth={"username": "${resource.name}", "password": "env:RECONCILER_TEST_BASIC"},
    )
    log = TaskLog.open(tmp_path, "p" * 64, "Machine/m1", "s", "get")
    result = asyncio.run(run_task(t, make_ctx(log=log)))
    log.close()
    assert result.ok, result.message
    token = base64.b64encode(b"m1:basic-pass-word").decode()
    assert api.requests("GET", "/status")[0].headers["Authorization"] == f"Basic {token}"
    text = Path(result.log_path or "").read_text()
    assert token not in text and "basic-pass-word" not in text
