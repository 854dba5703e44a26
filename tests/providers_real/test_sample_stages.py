"""The sample repository's hardware stages run by the executor's task runner on a real BMC.

`discover` (set PXE boot, power on, wait for power on) and `inventory` (collect,
wait for disks) of ``sample-repo/stages/hardware.yaml``, as written there, through
`reconciler.execute.runners.run_task` and `reconciler.providers.operations`, against
the Redfish provider on sushy-emulator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.execute.context import TaskContext
from reconciler.execute.runners import run_task
from reconciler.model.kinds import ProviderSpec, Stage
from reconciler.providers.base import ActionRequest, ProviderContext, ResourceRef
from reconciler.providers.operations import observe_one, run_action

from .servers import BMC_PASSWORD, BMC_USER

pytest.importorskip("sushy", reason="pip install sushy (the test extra)")

from reconciler.providers.redfish import RedfishProvider

HARDWARE = Path(__file__).resolve().parents[2] / "sample-repo" / "stages" / "hardware.yaml"


@pytest.mark.slow
def test_sample_discover_and_inventory_stages_end_validated_on_a_real_bmc(
    sushy_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_BMC_USER", BMC_USER)
    monkeypatch.setenv("TEST_BMC_PASSWORD", BMC_PASSWORD)
    stages = {
        document["metadata"]["name"]: Stage.model_validate(document).spec
        for document in yaml.safe_load_all(HARDWARE.read_text())
        if document
    }
    spec = ProviderSpec(
        type="redfish",
        endpoint=sushy_emulator,
        credentials={"username": "env:TEST_BMC_USER", "password": "env:TEST_BMC_PASSWORD"},
    )
    machine = ResourceRef(
        "Machine", "r01-node01", "Machine/r01-node01", declared={"bmc": {"systemId": "node-a"}}
    )

    async def run() -> list[tuple[str, str, Any]]:
        provider = RedfishProvider(ProviderContext("lab-bmc", spec, tmp_path))

        async def action(name: str, args: dict[str, Any], key: str) -> Any:
            request = ActionRequest(name, machine, key, args)
            return await run_action(provider, request, poll_interval=0.5)

        async def observe() -> Any:
            return await observe_one(provider, machine)

        ran = []
        try:
            for stage in ("discover", "inventory"):
                for task in [*stages[stage].work, *stages[stage].validate_]:
                    ctx = TaskContext(
                        resource_key=machine.key,
                        resource_kind=machine.kind,
                        resource_name=machine.name,
                        idempotency_key=f"plan-1/{machine.key}/{stage}/{task.name}",
                        stage=stage,
                        provider_action=action,
                        observe=observe,
                    )
                    ran.append((stage, task.name, await run_task(task, ctx)))
            return ran
        finally:
            await provider.close()

    ran = asyncio.run(asyncio.wait_for(run(), 60))
    assert [(stage, name) for stage, name, _ in ran] == [
        ("discover", "set-pxe"),
        ("discover", "power-on"),
        ("discover", "powered"),
        ("inventory", "collect"),
        ("inventory", "has-disks"),
    ]
    failed = [(s, n, r.message) for s, n, r in ran if not r.ok]
    assert not failed, failed
    collect = ran[3][2]
    assert collect.operation_id and collect.operation_id.startswith("redfish-")
    inventory = collect.outputs["result"]["inventory"]
    assert sorted(d["sizeGB"] for d in inventory["disks"]) == [960, 1920]
    assert ran[1][2].outputs["result"] in ({"power": "on"}, {})  # {} when it was on already
