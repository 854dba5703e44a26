"""A declared repository planned against real emulators: loader -> registry -> observe ->
diff -> plan, with the redfish and aws-ec2 providers on sushy-emulator and moto.

The provider types are registered by entry points once the package is installed;
here they are added to the registry's built-ins, as an installed package would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconciler import providers as registry
from reconciler.load.load import load_directory
from reconciler.observe.observe import observe_desired, resource_ref
from reconciler.plan.diff import LastApplied, Status, diff
from reconciler.plan.plan import Operation, plan
from reconciler.providers.base import ActionRequest, OperationPhase, ProviderContext, ResourceRef

from .servers import BMC_PASSWORD, BMC_USER

pytest.importorskip("sushy", reason="pip install sushy (the test extra)")
pytest.importorskip("boto3", reason="pip install boto3 (the test extra)")

REPO = {
    "providers.yaml": """\
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: lab-bmc}}
spec:
  type: redfish
  endpoint: {bmc}
  credentials: {{username: env:TEST_BMC_USER, password: env:TEST_BMC_PASSWORD}}
---
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: lab-ec2}}
spec:
  type: aws-ec2
  endpoint: {ec2}
  region: us-east-1
  credentials: {{accessKeyId: env:TEST_AWS_KEY, secretAccessKey: env:TEST_AWS_SECRET}}
  settings: {{images: {{ubuntu-24.04: ami-0123456789abcdef0}}}}
""",
    "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: discover}
spec:
  converges: [bmc]
  work:
    - {name: set-pxe, type: provider, action: set-boot, args: {device: pxe}}
    - {name: power-on, type: provider, action: power-on}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: create}
spec:
  converges: [size, image, zone]
  work:
    - {name: run-instance, type: provider, action: create}
""",
    "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bare-metal}
spec:
  steps: [{stage: discover}]
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: cloud}
spec:
  steps: [{stage: create}]
""",
    "resources.yaml": """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: node-a}
spec:
  provider: lab-bmc
  pipeline: bare-metal
  bmc: {mac: "00:5c:52:31:3a:9c"}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: ghost}
spec:
  provider: lab-bmc
  pipeline: bare-metal
  bmc: {systemId: no-such-system}
---
apiVersion: reconciler/v1
kind: Instance
metadata: {name: web}
spec:
  provider: lab-ec2
  pipeline: cloud
  size: t3.micro
  image: ubuntu-24.04
  zone: us-east-1a
""",
}


def test_a_repository_is_planned_against_real_emulators(
    sushy_emulator: str,
    ec2_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_BMC_USER", BMC_USER)
    monkeypatch.setenv("TEST_BMC_PASSWORD", BMC_PASSWORD)
    for name, target in {
        "redfish": "reconciler.providers.redfish:RedfishProvider",
        "aws-ec2": "reconciler.providers.ec2:Ec2Provider",
    }.items():
        monkeypatch.setitem(registry.BUILTINS, name, target)
    repo = tmp_path / "repo"
    repo.mkdir()
    for name, text in REPO.items():
        if name == "providers.yaml":
            text = text.format(bmc=sushy_emulator, ec2=ec2_endpoint)
        (repo / name).write_text(text)
    loaded = load_directory(repo)
    assert loaded.ok, loaded.diagnostics
    desired = loaded.desired
    assert desired is not None
    state = tmp_path / "state"

    # An instance this repository launched earlier and no longer declares: an orphan.
    orphan = ResourceRef(
        "Instance", "old", "Instance/old", declared={"size": "t3.micro", "image": "ubuntu-24.04"}
    )

    async def run() -> None:
        ec2 = registry.open_provider(desired.providers["lab-ec2"], state_dir=state, repository="r")
        try:
            handle = await ec2.start(ActionRequest("create", orphan, "earlier/old"))
            assert (await ec2.poll(handle)).phase is OperationPhase.SUCCEEDED
        finally:
            await ec2.close()

    asyncio.run(run())
    observed = asyncio.run(observe_desired(desired, state_dir=state, repository="r"))
    assert observed.unknown_providers == {}
    changes = diff(desired, observed)
    status = {key: d.status for key, d in changes.resources.items()}
    assert status == {
        # Found by MAC on the BMC, its declared bmc reads back: it exists, but nothing
        # provisioned it yet. Existence is not provisioning.
        "Machine/node-a": Status.UNPROVISIONED,
        "Machine/ghost": Status.MISSING,
        "Instance/web": Status.MISSING,
        "Instance/old": Status.ORPHANED,
    }
    actions = {a.key: a for a in plan(desired, changes).actions}
    assert (actions["Machine/node-a"].operation, actions["Machine/node-a"].stages) == (
        Operation.CREATE,
        ("discover",),
    )
    assert actions["Machine/node-a"].exists is True
    assert "never provisioned by reconciler" in actions["Machine/node-a"].reasons[0]
    assert (actions["Machine/ghost"].operation, actions["Machine/ghost"].stages) == (
        Operation.CREATE,
        ("discover",),
    )
    assert (actions["Instance/web"].operation, actions["Instance/web"].stages) == (
        Operation.CREATE,
        ("create",),
    )
    assert actions["Instance/old"].operation is Operation.REPORT_ORPHAN  # prune is off

    # Create the instance through the provider; the next observation is in sync.
    async def create() -> None:
        context = ProviderContext("lab-ec2", desired.providers["lab-ec2"].spec, state, "r")
        ec2 = registry.factory_for("aws-ec2")(context)
        try:
            ref = resource_ref(desired.resources["Instance/web"])
            handle = await ec2.start(ActionRequest("create", ref, "plan/web/create"))
            assert (await ec2.poll(handle)).phase is OperationPhase.SUCCEEDED
        finally:
            await ec2.close()

    asyncio.run(create())
    observed = asyncio.run(observe_desired(desired, state_dir=state, repository="r"))
    # It exists now; only the journal's record of a completed pipeline makes it in sync.
    assert diff(desired, observed).resources["Instance/web"].status is Status.UNPROVISIONED
    record = LastApplied(
        fingerprint=desired.resources["Instance/web"].fingerprint(),
        declared=desired.resources["Instance/web"].declared(),
        resolution=desired.resources["Instance/web"].resolution(),
        stages=desired.resources["Instance/web"].stage_digests(),
    )
    found = diff(desired, observed, last_applied={"Instance/web": record})
    assert found.resources["Instance/web"].status is Status.IN_SYNC
