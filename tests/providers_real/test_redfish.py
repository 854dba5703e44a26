"""The Redfish provider against sushy-emulator (fake driver) on 127.0.0.1.

The fake driver lands a power change 1-11 s after the request, so only one test
waits for power; it runs both of its power changes at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.errors import PermanentError, TemporaryError
from reconciler.model.kinds import ProviderSpec, Tls
from reconciler.providers.base import (
    ActionRequest,
    Observation,
    ObservationUnknown,
    OperationPhase,
    ProviderContext,
    ResourceRef,
)

from .servers import BMC_PASSWORD, BMC_USER, SYSTEMS, Certificates

pytest.importorskip("sushy", reason="pip install sushy (the test extra)")

from reconciler.providers.redfish import RedfishProvider


@pytest.fixture
def bmc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_BMC_USER", BMC_USER)
    monkeypatch.setenv("TEST_BMC_PASSWORD", BMC_PASSWORD)


def make(endpoint: str, state_dir: Path, **spec: object) -> RedfishProvider:
    spec.setdefault(
        "credentials", {"username": "env:TEST_BMC_USER", "password": "env:TEST_BMC_PASSWORD"}
    )
    provider_spec = ProviderSpec(type="redfish", endpoint=endpoint, **spec)  # type: ignore[arg-type]
    return RedfishProvider(ProviderContext("dc-bmc", provider_spec, state_dir, "repo-a"))


def machine(name: str, **bmc: str) -> ResourceRef:
    return ResourceRef("Machine", name, f"Machine/{name}", declared={"bmc": bmc})


async def wait_done(provider: RedfishProvider, handle, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await provider.poll(handle)
        if status.phase.done or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.5)


def test_finds_systems_by_id_uuid_mac_or_name_and_reads_inventory(
    sushy_emulator: str, tmp_path: Path, bmc_env: None
) -> None:
    async def run() -> dict:
        provider = make(sushy_emulator, tmp_path)
        try:
            return dict(
                await provider.observe(
                    [
                        machine("rack1-a", systemId="node-a"),
                        machine("rack1-b", mac="00:5C:52:31:3B:02"),
                        machine("rack1-c", systemId=SYSTEMS[2]["uuid"]),
                        machine("node-c"),  # by name alone
                        machine("rack1-x", systemId="no-such-system"),
                        machine("rack1-y", mac="02:00:00:00:00:01"),
                    ]
                )
            )
        finally:
            await provider.close()

    seen = asyncio.run(run())
    a, b, c, by_name = (seen[f"Machine/{n}"] for n in ("rack1-a", "rack1-b", "rack1-c", "node-c"))
    assert all(isinstance(o, Observation) and o.exists for o in (a, b, c, by_name))
    assert a.fields["identity"]["uuid"] == SYSTEMS[0]["uuid"]
    assert b.fields["identity"]["name"] == "node-b"
    assert c.fields["identity"]["name"] == by_name.fields["identity"]["name"] == "node-c"
    # the declared identity reads back as declared: no drift on `bmc` once found
    assert a.fields["bmc"] == {"systemId": "node-a"}
    assert b.fields["bmc"] == {"mac": "00:5C:52:31:3B:02"}
    assert seen["Machine/rack1-x"] == Observation("Machine/rack1-x", False, {})
    assert seen["Machine/rack1-y"].exists is False

    for seen_system, system in ((a, SYSTEMS[0]), (b, SYSTEMS[1])):
        raw = httpx.get(
            f"{sushy_emulator}/redfish/v1/Systems/{system['uuid']}", auth=(BMC_USER, BMC_PASSWORD)
        ).json()
        assert seen_system.fields["power"] == raw["PowerState"].lower()
    inventory = a.fields["inventory"]
    assert [n["mac"] for n in inventory["nics"]] == ["00:5c:52:31:3a:9c"]
    assert [n["mac"] for n in b.fields["inventory"]["nics"]] == [
        "00:5c:52:31:3b:01",
        "00:5c:52:31:3b:02",
    ]
    assert sorted(d["sizeGB"] for d in inventory["disks"]) == [960, 1920]
    # what the fake driver does not serve is reported, not an error
    assert set(inventory["notOffered"]) >= {"cpus", "memoryGiB"}
    assert "cpus" not in inventory and inventory["errors"] == {}
    # node-b has no storage configured: the emulator answers 500 there, reported per section
    assert "disks" not in b.fields["inventory"]
    assert "storage" in b.fields["inventory"]["errors"]
    assert {m["id"] for m in a.fields["virtualMedia"]} == {"Cd", "Floppy"}
    json.dumps({k: v.to_dict() for k, v in seen.items()})  # a stable JSON form


@pytest.mark.slow
def test_set_boot_pxe_then_power_on_is_polled_across_a_restart_and_outside_changes_show(
    sushy_emulator: str, tmp_path: Path, bmc_env: None
) -> None:
    node_a = machine("rack1-a", systemId="node-a")
    node_b = machine("rack1-b", systemId="node-b")

    async def run() -> None:
        provider = make(sushy_emulator, tmp_path)
        boot = await provider.start(
            ActionRequest("set-boot", node_a, "plan1/set-pxe", {"device": "pxe"})
        )
        assert (await provider.poll(boot)).phase is OperationPhase.SUCCEEDED
        seen = (await provider.observe([node_a]))["Machine/rack1-a"]
        assert seen.fields["bootDevice"] == "pxe"

        power = await provider.start(ActionRequest("power-on", node_a, "plan1/power-on"))
        assert (await provider.poll(power)).phase is OperationPhase.RUNNING
        # Someone at the console switches node-b off behind the controller's back.
        async with httpx.AsyncClient(auth=(BMC_USER, BMC_PASSWORD)) as http:
            uuid = SYSTEMS[1]["uuid"]
            reply = await http.post(
                f"{sushy_emulator}/redfish/v1/Systems/{uuid}/Actions/ComputerSystem.Reset",
                json={"ResetType": "ForceOff"},
            )
            assert reply.status_code == 204
        await provider.close()

        # The process "restarts": a new provider object polls the journaled handle.
        again = make(sushy_emulator, tmp_path)
        try:
            same = await again.start(ActionRequest("power-on", node_a, "plan1/power-on"))
            assert same == power  # the same key never sends a second reset
            status = await wait_done(again, power)
            assert status.phase is OperationPhase.SUCCEEDED, status
            assert status.result == {"power": "on"}
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                seen_all = await again.observe([node_a, node_b])
                if seen_all["Machine/rack1-b"].fields["power"] == "off":
                    break
                assert asyncio.get_running_loop().time() < deadline, "node-b never read off"
                await asyncio.sleep(0.5)
            assert seen_all["Machine/rack1-a"].fields["power"] == "on"
            # already on: finishes at once, no reset sent
            noop = await again.start(ActionRequest("power-on", node_a, "plan2/power-on"))
            status = await again.poll(noop)
            assert (status.phase, status.message) == (OperationPhase.SUCCEEDED, "already on")
        finally:
            await again.close()

    asyncio.run(run())


@pytest.fixture
def image_server() -> Iterator[str]:
    class Image(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"\0" * 2048
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Image)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/boot.iso"
    finally:
        server.shutdown()
        server.server_close()


def test_virtual_media_insert_and_eject(
    sushy_emulator: str, tmp_path: Path, bmc_env: None, image_server: str
) -> None:
    node_c = machine("rack1-c", systemId="node-c")

    async def run() -> None:
        provider = make(sushy_emulator, tmp_path)
        try:
            op = await provider.start(
                ActionRequest("insert-media", node_c, "k/insert", {"image": image_server})
            )
            assert (await provider.poll(op)).phase is OperationPhase.SUCCEEDED
            media = (await provider.observe([node_c]))["Machine/rack1-c"].fields["virtualMedia"]
            cd = next(m for m in media if m["id"] == "Cd")
            assert cd["inserted"] is True
            op = await provider.start(ActionRequest("eject-media", node_c, "k/eject"))
            assert (await provider.poll(op)).result == {"ejected": ["Cd"]}
            media = (await provider.observe([node_c]))["Machine/rack1-c"].fields["virtualMedia"]
            assert not any(m["inserted"] for m in media)
        finally:
            await provider.close()

    asyncio.run(run())


def test_password_never_leaks_and_bad_requests_are_permanent(
    sushy_emulator: str,
    tmp_path: Path,
    bmc_env: None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    node_a = machine("rack1-a", systemId="node-a")
    texts: list[str] = []

    async def run() -> None:
        provider = make(sushy_emulator, tmp_path)
        try:
            seen = await provider.observe([node_a, machine("ghost", systemId="ghost")])
            texts.append(json.dumps({k: v.to_dict() for k, v in seen.items()}))
            for request in (
                ActionRequest("set-boot", node_a, "k1", {"device": "floppy-disk"}),
                ActionRequest("power-on", machine("ghost", systemId="ghost"), "k2"),
                ActionRequest("install-os", node_a, "k3"),
            ):
                with pytest.raises(PermanentError) as caught:
                    await provider.start(request)
                texts.append(str(caught.value))
            # the BMC fails to fetch the image: a 500, worth retrying later
            unreachable = {"image": "http://127.0.0.1:9/x.iso"}
            with pytest.raises(TemporaryError) as temporary:
                await provider.start(ActionRequest("insert-media", node_a, "k4", unreachable))
            texts.append(str(temporary.value))
            status = await provider.poll(
                await provider.start(ActionRequest("discover", node_a, "k5"))
            )
            texts.append(json.dumps(status.to_dict()))
        finally:
            await provider.close()

        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-password")
        bad = make(
            sushy_emulator,
            tmp_path / "b",
            credentials={"username": "env:TEST_BMC_USER", "password": f"file:{wrong}"},
        )
        try:
            seen = await bad.observe([node_a])
            assert isinstance(seen["Machine/rack1-a"], ObservationUnknown)
            assert "refused the credentials" in seen["Machine/rack1-a"].reason
            with pytest.raises(PermanentError, match="refused the credentials"):
                await bad.start(ActionRequest("power-on", node_a, "k6"))
        finally:
            await bad.close()

    asyncio.run(run())
    assert any("unknown boot device" in t for t in texts)
    assert any("no system on" in t for t in texts)
    assert any("unknown action 'install-os'" in t for t in texts)
    captured = capsys.readouterr()
    everything = "\n".join([*texts, caplog.text, captured.out, captured.err])
    assert "node-a" in everything  # the check below looks at real output
    assert BMC_PASSWORD not in everything
    assert BMC_PASSWORD not in (tmp_path / "redfish-dc-bmc.db").read_bytes().decode("latin-1")


def test_tls_verification_off_is_explicit_and_logged(
    tmp_path: Path, bmc_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = make("https://127.0.0.1:9", tmp_path, tls=Tls(verify=False))
    asyncio.run(provider.close())
    assert "tls verification is off" in capsys.readouterr().out
    assert make("https://127.0.0.1:9", tmp_path / "v")._verify is True


def test_an_unreachable_bmc_is_temporary_and_never_absent(tmp_path: Path, bmc_env: None) -> None:
    async def run() -> None:
        provider = make("http://127.0.0.1:9", tmp_path)
        try:
            with pytest.raises(TemporaryError, match="unreachable"):
                await provider.observe([machine("rack1-a", systemId="node-a")])
            with pytest.raises(TemporaryError):
                await provider.start(ActionRequest("power-on", machine("rack1-a"), "k"))
        finally:
            await provider.close()

    began = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - began < 10


def test_one_unreachable_bmc_makes_only_its_machines_unknown(
    sushy_emulator: str, tmp_path: Path, bmc_env: None
) -> None:
    here = machine("rack1-a", systemId="node-a")
    elsewhere = ResourceRef(
        "Machine", "far", "Machine/far", declared={"bmc": {"address": "http://127.0.0.1:9"}}
    )

    async def run() -> dict:
        provider = make(sushy_emulator, tmp_path)
        try:
            return dict(await provider.observe([here, elsewhere]))
        finally:
            await provider.close()

    seen = asyncio.run(run())
    assert seen["Machine/rack1-a"].exists is True
    assert isinstance(seen["Machine/far"], ObservationUnknown)
    assert "unreachable" in seen["Machine/far"].reason


def test_inventory_is_cached_but_power_is_always_read(
    sushy_emulator: str, tmp_path: Path, bmc_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.providers import redfish

    reads: list[str] = []
    real_nics = redfish._nics
    monkeypatch.setattr(
        redfish, "_nics", lambda system: reads.append(system.name) or real_nics(system)
    )
    node_c = machine("rack1-c", systemId="node-c")

    async def run() -> None:
        provider = make(sushy_emulator, tmp_path)
        uncached = make(sushy_emulator, tmp_path / "u", settings={"inventoryTtl": 0})
        try:
            for _ in range(3):
                seen = (await provider.observe([node_c]))["Machine/rack1-c"]
                assert seen.fields["inventory"]["nics"][0]["mac"] == "00:5c:52:31:3c:01"
            assert reads == ["node-c"]
            await provider.start(ActionRequest("inventory", node_c, "inv/1"))  # reads afresh
            assert reads == ["node-c", "node-c"]
            await uncached.observe([node_c])
            await uncached.observe([node_c])
            assert len(reads) == 4
        finally:
            await provider.close()
            await uncached.close()

    asyncio.run(run())


def test_tls_is_verified_against_the_declared_ca_bundle(
    sushy_emulator_tls: str,
    certificates: Certificates,
    tmp_path: Path,
    bmc_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node_a = machine("rack1-a", systemId="node-a")

    async def observe(tls: Tls, where: str) -> Any:
        provider = make(sushy_emulator_tls, tmp_path / where, tls=tls)
        try:
            return (await provider.observe([node_a]))["Machine/rack1-a"]
        finally:
            await provider.close()

    refused = asyncio.run(observe(Tls(), "default"))
    assert isinstance(refused, ObservationUnknown)
    assert "certificate was refused" in refused.reason and "tls.caBundle" in refused.reason
    trusted = asyncio.run(observe(Tls(caBundle=f"file:{certificates.ca}"), "ca"))
    assert trusted.exists and trusted.fields["identity"]["name"] == "node-a"
    capsys.readouterr()
    unverified = asyncio.run(observe(Tls(verify=False), "off"))
    assert unverified.exists
    assert "tls verification is off" in capsys.readouterr().out
