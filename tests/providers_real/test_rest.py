"""The generic REST provider against a real HTTP service on 127.0.0.1 (fake_http.WidgetApi)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import PermanentError, TemporaryError
from reconciler.model.kinds import ProviderSpec, Tls
from reconciler.providers.base import (
    ActionRequest,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    ProviderContext,
    ResourceRef,
)
from reconciler.providers.rest import RestProvider, select
from tests.servers.fake_http import WidgetApi

from .servers import Certificates

TOKEN = "canary-Api-Token-91be4"

SETTINGS: dict[str, Any] = {
    "observe": {
        "url": "/api/widgets/{name}",
        "select": {
            "size": "$.size",
            "state": "$.status.phase",
            "params.color": "$.color",
            "owner": "$.owner.key",
        },
    },
    "create": {
        "url": "/api/widgets",
        "body": {
            "name": "{name}",
            "size": "{declared.size}",
            "color": "{params.color}",
            "replicas": "{params.replicas}",
            "owner": {"key": "{key}", "repository": "{repository}", "managedBy": "{managedBy}"},
        },
    },
    "update": {"url": "/api/widgets/{name}", "body": {"size": "{declared.size}"}},
    "delete": {"url": "/api/widgets/{name}"},
    "actions": {"replace": {"method": "PUT", "url": "/api/widgets/{name}"}},
    "list": {
        "url": "/api/widgets",
        "items": "$.items",
        "key": "$.owner.key",
        "repository": "$.owner.repository",
        "next": "$.next",
        "select": {"size": "$.size"},
    },
    "maxRetries": 2,
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[WidgetApi]:
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)
    with WidgetApi(TOKEN) as running:
        yield running


def make(
    api: WidgetApi, state_dir: Path, repository: str = "repo-a", **overrides: Any
) -> RestProvider:
    spec = ProviderSpec(
        type="http",
        endpoint=api.url,
        credentials={"token": "env:TEST_API_TOKEN"},
        settings={**SETTINGS, **overrides},
    )
    return RestProvider(ProviderContext("widgets", spec, state_dir, repository))


def widget(name: str, size: str = "small", **params: Any) -> ResourceRef:
    params = {"color": "blue", "replicas": 2, **params}
    return ResourceRef(
        "Widget", name, f"Widget/{name}", declared={"size": size, "params": params}, params=params
    )


async def settle(provider: RestProvider, handle: OperationHandle) -> OperationStatus:
    for _ in range(10):
        status = await provider.poll(handle)
        if status.phase.done:
            return status
    raise AssertionError(f"{handle.operation_id} never finished")


def test_create_is_a_202_operation_polled_to_done_then_observed_and_patched(
    api: WidgetApi, tmp_path: Path
) -> None:
    async def run() -> None:
        provider = make(api, tmp_path)
        try:
            assert (await provider.observe([widget("w1")]))["Widget/w1"].exists is False
            handle = await provider.start(ActionRequest("create", widget("w1"), "p1/w1/create"))
            first = await provider.poll(handle)
            assert first.phase is OperationPhase.RUNNING  # 202 is not done
            assert "w1" not in api.widgets
            assert (await settle(provider, handle)).phase is OperationPhase.SUCCEEDED
            seen = (await provider.observe([widget("w1")]))["Widget/w1"]
            assert seen.fields == {
                "size": "small",
                "state": "ready",
                "params": {"color": "blue"},
                "owner": "Widget/w1",
            }
            assert api.widgets["w1"]["replicas"] == 2  # a whole placeholder keeps its type
            update = await provider.start(ActionRequest("resize", widget("w1", "large"), "p2/w1"))
            assert (await provider.poll(update)).phase is OperationPhase.SUCCEEDED
            seen = (await provider.observe([widget("w1")]))["Widget/w1"]
            assert seen.fields["size"] == "large"
            delete = await provider.start(ActionRequest("decommission", widget("w1"), "p3/w1"))
            assert (await settle(provider, delete)).phase is OperationPhase.SUCCEEDED
            assert (await provider.observe([widget("w1")]))["Widget/w1"].exists is False
            again = await provider.start(ActionRequest("delete", widget("w1"), "p4/w1"))
            assert (await provider.poll(again)).message == "already absent"
        finally:
            await provider.close()
        assert (
            api.calls("PATCH", "/api/widgets/w1") == 1 and api.calls("PUT", "/api/widgets/w1") == 0
        )
        writes = [r for r in api.received if r.method in ("POST", "PATCH", "DELETE")]
        keys = [r.header("Idempotency-Key") for r in writes]
        assert keys == ["p1/w1/create", "p2/w1", "p3/w1", "p4/w1"]

    asyncio.run(run())


def test_a_used_idempotency_key_is_never_sent_twice(api: WidgetApi, tmp_path: Path) -> None:
    request = ActionRequest("create", widget("w2"), "p1/w2/create")

    async def run() -> None:
        first = make(api, tmp_path)
        handle = await first.start(request)
        await first.close()
        again = make(api, tmp_path)  # a restarted process, same records
        try:
            assert await again.start(request) == handle
            assert (await settle(again, handle)).phase is OperationPhase.SUCCEEDED
        finally:
            await again.close()
        assert api.calls("POST", "/api/widgets") == 1
        lost = make(api, tmp_path / "lost")  # records lost: the API's own dedup answers
        try:
            assert (await settle(lost, await lost.start(request))).phase is OperationPhase.SUCCEEDED
        finally:
            await lost.close()
        assert len(api.widgets) == 1 and len(api.operations) == 1

    asyncio.run(run())


def test_retry_after_is_honoured_and_server_errors_are_temporary(
    api: WidgetApi, tmp_path: Path
) -> None:
    api.widgets["w3"] = {"name": "w3", "size": "small", "status": {"phase": "ready"}}
    api.faults[("GET", "/api/widgets/w3")] = [(429, {"Retry-After": "1"}), (502, {})]
    api.faults[("POST", "/api/widgets")] = [(500, {})]

    async def run() -> None:
        provider = make(api, tmp_path)
        try:
            began = time.monotonic()
            seen = await provider.observe([widget("w3")])
            waited = time.monotonic() - began
            assert seen["Widget/w3"].fields["size"] == "small"
            assert waited >= 1.0, "Retry-After: 1 was not honoured"
            assert api.calls("GET", "/api/widgets/w3") == 3

            # A 500 on create: nothing recorded, nothing created; the same key retries cleanly.
            request = ActionRequest("create", widget("w4"), "p1/w4/create")
            with pytest.raises(TemporaryError, match="500"):
                await provider.start(request)
            assert "w4" not in api.widgets and not api.operations
            handle = await provider.start(request)
            assert (await settle(provider, handle)).phase is OperationPhase.SUCCEEDED

            # Asked to wait longer than maxRetryAfter: raised at once, with the hint.
            api.faults[("PATCH", "/api/widgets/w4")] = [(503, {"Retry-After": "120"})]
            with pytest.raises(TemporaryError) as caught:
                await provider.start(ActionRequest("update", widget("w4"), "p2/w4"))
            assert caught.value.retry_after == 120
            api.faults[("GET", "/api/widgets/w3")] = [(503, {})] * 3
            with pytest.raises(TemporaryError, match="503"):
                await provider.observe([widget("w3")])
        finally:
            await provider.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    "paging",
    [
        {"url": "/api/widgets", "next": "$.next"},
        {"url": "/api/widgets?link=1", "next": None},
        {"url": "/api/widgets", "next": None, "pageParam": "page"},
    ],
    ids=["next-in-body", "link-header", "page-number"],
)
def test_list_owned_pages_through_everything_and_keeps_only_ours(
    api: WidgetApi, tmp_path: Path, paging: dict[str, Any]
) -> None:
    for name, owner in [
        ("a1", ("Widget/a1", "repo-a")),
        ("a2", ("Widget/a2", "repo-a")),
        ("b1", ("Widget/b1", "repo-b")),
        ("hand-made", None),
        ("z9", ("Widget/z9", "repo-a")),
    ]:
        api.widgets[name] = {"name": name, "size": "small"}
        if owner:
            api.widgets[name]["owner"] = {"key": owner[0], "repository": owner[1]}

    async def run() -> list[Any]:
        provider = make(api, tmp_path, list={**SETTINGS["list"], **paging})
        try:
            return list(await provider.list_owned())
        finally:
            await provider.close()

    owned = asyncio.run(run())
    assert [(o.key, o.kind, o.name, o.fields) for o in owned] == [
        ("Widget/a1", "Widget", "a1", {"size": "small"}),
        ("Widget/a2", "Widget", "a2", {"size": "small"}),
        ("Widget/z9", "Widget", "z9", {"size": "small"}),
    ]
    assert api.calls("GET", "/api/widgets") >= 3  # five items, two a page


@pytest.mark.parametrize(
    "paging",
    [
        {"url": "/api/widgets", "next": "$.next"},
        {"url": "/api/widgets?link=1", "next": None},
        {"url": "/api/widgets", "next": None, "pageParam": "page"},
    ],
    ids=["next-in-body", "link-header", "page-number"],
)
def test_discover_lists_only_the_items_nobody_owns(
    api: WidgetApi, tmp_path: Path, paging: dict[str, Any]
) -> None:
    for name, owner in [
        ("a1", ("Widget/a1", "repo-a")),  # ours: declared or an orphan, never discovered
        ("b1", ("Widget/b1", "repo-b")),  # another repository's
        ("hand-made", None),
        ("legacy", None),
    ]:
        api.widgets[name] = {"name": name, "size": "large"}
        if owner:
            api.widgets[name]["owner"] = {"key": owner[0], "repository": owner[1]}

    async def run() -> list[Any]:
        provider = make(api, tmp_path, list={**SETTINGS["list"], **paging})
        try:
            return list(await provider.discover([widget("a1")]))
        finally:
            await provider.close()

    found = asyncio.run(run())
    assert [(d.kind, d.name, dict(d.identity), dict(d.facts)) for d in found] == [
        ("Resource", "hand-made", {"id": "hand-made"}, {"size": "large"}),
        ("Resource", "legacy", {"id": "legacy"}, {"size": "large"}),
    ]


def test_settings_are_validated_with_clear_messages(api: WidgetApi, tmp_path: Path) -> None:
    cases = [
        ({"observe": {"select": {"size": "$.size"}}}, "settings.observe.url: Field required"),
        ({"observe": {"url": "/x", "select": {"size": "size"}}}, "a path starts with $"),
        ({"observ": {"url": "/x"}}, "settings.observ: Extra inputs are not permitted"),
        ({"maxRetries": -1}, "settings.maxRetries"),
    ]
    for settings, message in cases:
        spec = ProviderSpec(type="http", endpoint=api.url, settings={**SETTINGS, **settings})
        if "observ" in settings:
            spec = ProviderSpec(type="http", endpoint=api.url, settings=settings)
        with pytest.raises(PermanentError) as caught:
            RestProvider(ProviderContext("widgets", spec, tmp_path, "repo-a"))
        assert message in str(caught.value)
        assert str(caught.value).startswith("provider widgets (http): ")


def test_bad_requests_are_permanent_and_the_token_never_shows(
    api: WidgetApi,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    async def run() -> None:
        provider = make(api, tmp_path)
        try:
            api.widgets["w5"] = {"name": "w5", "size": "small"}
            for request, message in (
                (
                    ActionRequest("create", widget("w6", color=None), "e1"),
                    "params.color has no value",
                ),
                (ActionRequest("power-on", widget("w6"), "e2"), "maps no request to action"),
                (ActionRequest("replace", widget("w5"), "e3"), "405"),
            ):
                with pytest.raises(PermanentError, match=message) as caught:
                    await provider.start(request)
                texts.append(str(caught.value))
            seen = await provider.observe([widget("w5"), widget("w6")])
            texts.append(json.dumps({k: v.to_dict() for k, v in seen.items()}))
        finally:
            await provider.close()
        wrong = tmp_path / "wrong-token"
        wrong.write_text("not-the-token")
        spec = ProviderSpec(
            type="http", endpoint=api.url, credentials={"token": f"file:{wrong}"}, settings=SETTINGS
        )
        bad = RestProvider(ProviderContext("widgets", spec, tmp_path / "bad", "repo-a"))
        try:
            with pytest.raises(PermanentError, match="401") as caught:
                await bad.observe([widget("w5")])
            texts.append(str(caught.value))
        finally:
            await bad.close()

    asyncio.run(run())
    captured = capsys.readouterr()
    everything = "\n".join([*texts, caplog.text, captured.out, captured.err])
    assert "Widget/w5" in everything and "httpx" in caplog.text  # real output looked at
    assert TOKEN not in everything
    assert TOKEN not in (tmp_path / "http-widgets.db").read_bytes().decode("latin-1")


def test_select_reads_json_paths() -> None:
    document = {"a": {"b": [{"c": 1}, {"c": 2}]}, "labels": {"reconciler/key": "Widget/x"}}
    assert select(document, "$.a.b[*].c") == [1, 2]
    assert select(document, "$.a.b[-1].c") == 2
    assert select(document, "$.labels['reconciler/key']") == "Widget/x"
    assert select(document, '$.labels["reconciler/key"]') == "Widget/x"
    assert select(document, "$.missing.deeper") is None
    assert select(document, "$") == document


def test_tls_is_verified_against_the_declared_ca_bundle(
    tmp_path: Path, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)

    async def observe(api: WidgetApi, tls: Tls) -> Any:
        spec = ProviderSpec(
            type="http",
            endpoint=api.url,
            credentials={"token": "env:TEST_API_TOKEN"},
            settings=SETTINGS,
            tls=tls,
        )
        provider = RestProvider(ProviderContext("widgets", spec, tmp_path, "repo-a"))
        try:
            return (await provider.observe([widget("w1")]))["Widget/w1"]
        finally:
            await provider.close()

    with WidgetApi(TOKEN, tls=(certificates.cert, certificates.key)) as api:
        with pytest.raises(PermanentError, match=r"certificate was refused.*tls\.caBundle"):
            asyncio.run(observe(api, Tls()))
        trusted = asyncio.run(observe(api, Tls(caBundle=f"file:{certificates.ca}")))
        assert trusted.exists is False  # the API answered (404): TLS held
        unverified = asyncio.run(observe(api, Tls(verify=False)))
        assert unverified.exists is False
