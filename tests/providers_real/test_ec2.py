"""The EC2 provider against moto in server mode on 127.0.0.1.

moto ignores ``ClientToken``, so the crash test proves the provider's own
protection (the key tag looked up before launching), not the API's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import PermanentError, TemporaryError
from reconciler.model.kinds import ProviderSpec
from reconciler.providers.base import (
    ActionRequest,
    OperationHandle,
    OperationPhase,
    OperationStatus,
    ProviderContext,
    ResourceRef,
)

from .servers import AWS_SECRET

boto3 = pytest.importorskip("boto3", reason="pip install boto3 (the test extra)")

from reconciler.providers.ec2 import TAG_IDEMPOTENCY, TAG_KEY, Ec2Provider  # noqa: E402

REGION = "us-east-1"
AMI = "ami-0123456789abcdef0"


def make(
    endpoint: str, state_dir: Path, repository: str = "repo-a", **settings: Any
) -> Ec2Provider:
    spec = ProviderSpec(
        type="aws-ec2",
        endpoint=endpoint,
        region=REGION,
        credentials={"accessKeyId": "env:TEST_AWS_KEY", "secretAccessKey": "env:TEST_AWS_SECRET"},
        settings={"images": {"ubuntu-24.04": AMI}, **settings},
    )
    return Ec2Provider(ProviderContext("aws-test", spec, state_dir, repository))


def instance(name: str, size: str = "t3.micro", **labels: str) -> ResourceRef:
    declared = {"size": size, "image": "ubuntu-24.04", "region": REGION, "zone": "us-east-1a"}
    return ResourceRef("Instance", name, f"Instance/{name}", declared=declared, labels=labels)


def raw(endpoint: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def live_with_key(endpoint: str, key: str) -> list[dict[str, Any]]:
    reply = raw(endpoint).describe_instances(
        Filters=[
            {"Name": f"tag:{TAG_KEY}", "Values": [key]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
        ]
    )
    return [i for r in reply["Reservations"] for i in r["Instances"]]


async def settle(
    provider: Ec2Provider, handle: OperationHandle, limit: int = 20
) -> OperationStatus:
    for _ in range(limit):
        status = await provider.poll(handle)
        if status.phase.done:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"operation {handle.operation_id} still {status}")


def test_create_is_polled_to_running_and_observed_by_ownership_tags(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    ref = instance("edge-a", tier="edge")

    async def run() -> None:
        provider = make(ec2_endpoint, tmp_path)
        try:
            before = await provider.observe([ref])
            assert before["Instance/edge-a"].exists is False
            handle = await provider.start(ActionRequest("create", ref, "plan1/edge-a/create"))
            status = await settle(provider, handle)
            assert status.phase is OperationPhase.SUCCEEDED, status
            assert status.result["instanceId"].startswith("i-")
            seen = await provider.observe([ref, instance("edge-z")])
            fields = seen["Instance/edge-a"].fields
            assert seen["Instance/edge-z"].exists is False
        finally:
            await provider.close()
        assert fields["state"] == "running"
        assert (fields["size"], fields["image"], fields["zone"]) == (
            "t3.micro",
            "ubuntu-24.04",  # the AMI reads back as the declared image name: no drift
            "us-east-1a",
        )
        assert fields["tags"] == {"tier": "edge"}
        assert "duplicates" not in fields
        (launched,) = live_with_key(ec2_endpoint, "Instance/edge-a")
        tags = {t["Key"]: t["Value"] for t in launched["Tags"]}
        assert tags["managed-by"] == "reconciler"
        assert tags["reconciler/repository"] == "repo-a"
        assert tags[TAG_IDEMPOTENCY] == "plan1/edge-a/create"
        assert launched["ImageId"] == AMI

    asyncio.run(run())


def test_a_crash_between_run_instances_and_its_acknowledgement_launches_one_instance(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    ref = instance("edge-b")
    request = ActionRequest("create", ref, "plan7/edge-b/create")

    async def run() -> None:
        first = make(ec2_endpoint, tmp_path / "before-crash")
        await first.start(request)  # the handle is lost: the process "dies" here
        await first.close()
        # The restarted controller lost its records too (fresh state dir): only the
        # tags on the instance can tell it the launch already happened.
        second = make(ec2_endpoint, tmp_path / "after-crash")
        try:
            handle = await second.start(request)
            again = await second.start(request)  # and with its records: the same handle
            assert again == handle
            status = await settle(second, handle)
            assert status.phase is OperationPhase.SUCCEEDED
            assert (await second.poll(handle)).message == "running"
        finally:
            await second.close()
        assert len(live_with_key(ec2_endpoint, "Instance/edge-b")) == 1

    asyncio.run(run())


def test_instance_type_change_is_stop_modify_start_in_one_operation(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    ref = instance("edge-c")
    bigger = instance("edge-c", size="m5.large")

    async def run() -> None:
        provider = make(ec2_endpoint, tmp_path)
        try:
            await settle(provider, await provider.start(ActionRequest("create", ref, "c/create")))
            handle = await provider.start(ActionRequest("resize", bigger, "c/resize"))
        finally:
            await provider.close()
        # Poll from a new process with no records: the operation id says it all.
        fresh = make(ec2_endpoint, tmp_path / "fresh")
        try:
            status = await settle(fresh, handle)
            assert status.phase is OperationPhase.SUCCEEDED, status
            fields = (await fresh.observe([bigger]))["Instance/edge-c"].fields
        finally:
            await fresh.close()
        assert (fields["size"], fields["state"]) == ("m5.large", "running")
        assert len(live_with_key(ec2_endpoint, "Instance/edge-c")) == 1

    asyncio.run(run())


def test_orphans_are_found_by_tag_and_terminated(ec2_endpoint: str, tmp_path: Path) -> None:
    kept, orphan, theirs = instance("keep"), instance("orphan"), instance("theirs")

    async def run() -> None:
        ours = make(ec2_endpoint, tmp_path / "a")
        other = make(ec2_endpoint, tmp_path / "b", repository="repo-b")
        try:
            for provider, ref in ((ours, kept), (ours, orphan), (other, theirs)):
                handle = await provider.start(ActionRequest("create", ref, f"{ref.name}/create"))
                await settle(provider, handle)
            # Git now declares only `keep`: what else carries our tags is an orphan.
            owned = await ours.list_owned()
            assert [o.key for o in owned] == ["Instance/keep", "Instance/orphan"]
            assert all(o.repository == "repo-a" and o.kind == "Instance" for o in owned)
            declared = {kept.key}
            orphans = [o for o in owned if o.key not in declared]
            assert [o.name for o in orphans] == ["orphan"]

            handle = await ours.start(ActionRequest("decommission", orphan, "prune/orphan"))
            status = await settle(ours, handle)
            assert status.phase is OperationPhase.SUCCEEDED
            assert (await ours.observe([orphan]))["Instance/orphan"].exists is False
            assert [o.key for o in await ours.list_owned()] == ["Instance/keep"]
            # another repository's instance was never touched
            assert [o.key for o in await other.list_owned()] == ["Instance/theirs"]
            again = await ours.start(ActionRequest("delete", orphan, "prune2/orphan"))
            assert (await ours.poll(again)).message == "already absent"
        finally:
            await ours.close()
            await other.close()

    asyncio.run(run())


def test_errors_are_typed_and_the_secret_never_shows(
    ec2_endpoint: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    async def run() -> None:
        provider = make(ec2_endpoint, tmp_path)
        try:
            unknown_image = ResourceRef(
                "Instance", "x", "Instance/x", declared={"size": "t3.micro", "image": "debian-13"}
            )
            for request in (
                ActionRequest("create", unknown_image, "e1"),
                ActionRequest("resize", instance("never-created"), "e2"),
                ActionRequest("install-os", instance("x"), "e3"),
            ):
                with pytest.raises(PermanentError) as caught:
                    await provider.start(request)
                texts.append(str(caught.value))
            handle = await provider.start(ActionRequest("create", instance("ok"), "e4"))
            texts.append(json.dumps((await settle(provider, handle)).to_dict()))
        finally:
            await provider.close()
        down = make("http://127.0.0.1:9", tmp_path / "down", timeout=2)
        try:
            with pytest.raises(TemporaryError) as caught:
                await down.observe([instance("ok")])
            texts.append(str(caught.value))
        finally:
            await down.close()

    asyncio.run(run())
    assert "not an AMI id and not in settings.images" in texts[0]
    assert "has no instance" in texts[1]
    assert "unknown action 'install-os'" in texts[2]
    assert "unreachable" in texts[-1]
    captured = capsys.readouterr()
    everything = "\n".join([*texts, caplog.text, captured.out, captured.err])
    assert "Instance/x" in everything and "botocore" in caplog.text  # real output looked at
    assert AWS_SECRET not in everything


def test_power_off_resize_of_a_stopped_instance_and_power_on(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    ref = instance("edge-d")

    async def run() -> list[tuple[str, str]]:
        provider = make(ec2_endpoint, tmp_path)
        seen: list[tuple[str, str]] = []
        try:
            for action, target, key in (
                ("create", ref, "d/create"),
                ("power-off", ref, "d/off"),
                ("resize", instance("edge-d", size="c5.xlarge"), "d/resize"),
                ("power-on", ref, "d/on"),
            ):
                status = await settle(
                    provider, await provider.start(ActionRequest(action, target, key))
                )
                assert status.phase is OperationPhase.SUCCEEDED, (action, status)
                fields = (await provider.observe([ref]))["Instance/edge-d"].fields
                seen.append((fields["state"], fields["size"]))
            again = await provider.start(ActionRequest("power-on", ref, "d/on-again"))
            assert (await provider.poll(again)).message == "already running"
        finally:
            await provider.close()
        return seen

    assert asyncio.run(run()) == [
        ("running", "t3.micro"),
        ("stopped", "t3.micro"),
        ("stopped", "c5.xlarge"),  # it was stopped: the resize does not start it
        ("running", "c5.xlarge"),
    ]


def test_a_refused_instance_type_fails_the_resize_and_restarts_the_instance(
    ec2_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    ref = instance("edge-e")

    async def run() -> tuple[OperationStatus, dict[str, Any]]:
        provider = make(ec2_endpoint, tmp_path)
        try:
            await settle(provider, await provider.start(ActionRequest("create", ref, "e/create")))
            client = provider._client(REGION)

            def refuse(**kwargs: Any) -> None:  # moto accepts any type; real EC2 does not
                error = {"Code": "InvalidParameterValue", "Message": "x9.huge is not supported"}
                raise ClientError({"Error": error}, "ModifyInstanceAttribute")

            monkeypatch.setattr(client, "modify_instance_attribute", refuse)
            request = ActionRequest("resize", instance("edge-e", size="x9.huge"), "e/resize")
            status = await settle(provider, await provider.start(request))
            assert (await provider.poll(await provider.start(request))) == status  # stays failed
            return status, dict((await provider.observe([ref]))["Instance/edge-e"].fields)
        finally:
            await provider.close()

    status, fields = asyncio.run(run())
    assert status.phase is OperationPhase.FAILED
    assert "x9.huge is not supported" in status.message and "started again" in status.message
    assert (fields["state"], fields["size"]) == ("running", "t3.micro")


def test_duplicates_are_shown_and_a_decommission_terminates_them_all(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    ref = instance("edge-f")
    tags = [
        {"Key": "managed-by", "Value": "reconciler"},
        {"Key": "reconciler/repository", "Value": "repo-a"},
        {"Key": TAG_KEY, "Value": "Instance/edge-f"},
    ]
    for _ in range(2):  # e.g. launched by hand from a copied template
        raw(ec2_endpoint).run_instances(
            ImageId=AMI,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )

    async def run() -> None:
        provider = make(ec2_endpoint, tmp_path)
        try:
            fields = (await provider.observe([ref]))["Instance/edge-f"].fields
            assert len(fields["duplicates"]) == 1
            assert fields["duplicates"][0] != fields["instanceId"]
            created = await provider.start(ActionRequest("create", ref, "f/create"))
            assert (await provider.poll(created)).phase is OperationPhase.SUCCEEDED  # adopted
            gone = await provider.start(ActionRequest("decommission", ref, "f/delete"))
            assert (await settle(provider, gone)).phase is OperationPhase.SUCCEEDED
            assert (await provider.observe([ref]))["Instance/edge-f"].exists is False
        finally:
            await provider.close()
        assert live_with_key(ec2_endpoint, "Instance/edge-f") == []

    asyncio.run(run())
