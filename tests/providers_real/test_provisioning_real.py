"""Provisioning truth against real emulators, through the real CLI.

`reconciler apply` runs as a subprocess on a bare repository; what is asserted is
read from the other side: sushy-emulator's Redfish systems (power state, boot
override), moto's EC2 instances (type, state, count), the REST service's objects,
and the status branch. Each test starts its own emulator (power changes and
instances must not leak into other tests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest
import yaml

from tests.e2e.support import Fleet, rows
from tests.repos import commit_change
from tests.servers.fake_http import WidgetApi

from .conftest import _start_sushy
from .servers import AWS_SECRET, BMC_PASSWORD, BMC_USER, SYSTEMS

pytestmark = pytest.mark.slow

NODE_A, NODE_B, NODE_C = (s["uuid"] for s in SYSTEMS)


@pytest.fixture
def bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A sushy-emulator of this test's own: node-a Off, node-b On, node-c Off."""
    yield from _start_sushy(tmp_path_factory.mktemp("bmc"))


def system(url: str, uuid: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/redfish/v1/Systems/{uuid}", auth=(BMC_USER, BMC_PASSWORD))
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


def power_of(url: str, uuid: str, want: str, timeout: float = 30.0) -> str:
    """The system's PowerState once it reads `want` (the emulator applies a reset after a
    random delay of up to 11 s), or what it reads at the deadline."""
    deadline = time.monotonic() + timeout
    state = system(url, uuid)["PowerState"]
    while state != want and time.monotonic() < deadline:
        time.sleep(0.5)
        state = system(url, uuid)["PowerState"]
    return state  # type: ignore[no-any-return]


def statuses(fleet: Fleet) -> dict[str, dict[str, Any]]:
    repo = pygit2.Repository(str(fleet.bare))
    tree = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit).tree
    out = {}
    for kind in tree["status"]:
        if kind.name != "controller.yaml":
            for entry in repo[kind.id]:
                data = yaml.safe_load(repo[entry.id].data)
                out[f"{data['kind']}/{data['name']}"] = data
    return out


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def change(fleet: Fleet, path: str, text: str) -> None:
    commit_change(fleet.bare, {path: text}, f"Change {path}")


def tasks_of(fleet: Fleet, key: str) -> list[str]:
    found = rows(
        fleet.state / "journal.sqlite",
        f"SELECT stage, task FROM tasks WHERE resource = '{key}' ORDER BY rowid",
    )
    return [f"{r['stage']}/{r['task']}" for r in found]


# --- bare metal: Redfish -------------------------------------------------------------

REDFISH_STAGES = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: discover}
spec:
  converges: [bmc]
  work:
    - {name: set-pxe, type: provider, action: set-boot, args: {device: pxe}}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: power}
spec:
  converges: [power]
  work:
    - {name: set-power, type: provider, action: set-power, timeout: 2m}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bare-metal}
spec:
  steps: [{stage: discover}, {stage: power}]
"""


def redfish_repo(url: str) -> dict[str, str]:
    machines = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Machine\nmetadata: {{name: {name}}}\n"
        f"spec:\n  provider: lab-bmc\n  pipeline: bare-metal\n  power: on\n"
        f"  bmc: {{systemId: {uuid}}}\n{extra}"
        for name, uuid, extra in (
            ("node-a", NODE_A, ""),
            ("node-b", NODE_B, "  adopt: true\n"),  # on at the BMC: taken over as it is
            ("node-c", NODE_C, "  adopt: true\n"),  # off at the BMC: adoption waits
        )
    )
    provider = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: lab-bmc}\n"
        f"spec:\n  type: redfish\n  endpoint: {url}\n"
        "  credentials: {username: env:TEST_BMC_USER, password: env:TEST_BMC_PASSWORD}\n"
        "  settings: {powerTimeout: 1m, inventoryTtl: 0s}\n"
    )
    return {"providers.yaml": provider, "stages.yaml": REDFISH_STAGES, "machines.yaml": machines}


def test_bmc_machines_are_provisioned_adopted_and_their_power_drift_is_caught(
    bmc: str, tmp_path: Path
) -> None:
    env = {"TEST_BMC_USER": BMC_USER, "TEST_BMC_PASSWORD": BMC_PASSWORD}
    fleet = Fleet.create(tmp_path, redfish_repo(bmc), env=env)
    first = fleet.run("apply")
    # node-c waits for adoption (its power differs): nothing failed, but not all is done.
    assert first.returncode == 2, first.stdout + first.stderr
    assert BMC_PASSWORD not in first.stdout + first.stderr
    status = statuses(fleet)
    # node-a existed on the BMC (Off): its pipeline ran, as the emulator shows.
    assert status["Machine/node-a"]["phase"] == "Ready"
    assert power_of(bmc, NODE_A, "On") == "On"
    assert system(bmc, NODE_A)["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    assert status["Machine/node-a"]["observed"]["bootOverride"]["target"] == "pxe"
    assert tasks_of(fleet, "Machine/node-a") == ["discover/set-pxe", "power/set-power"]
    # node-b was on and matches: adopted, nothing sent to its BMC.
    assert status["Machine/node-b"]["phase"] == "Ready"
    assert status["Machine/node-b"]["lastApplied"]["adopted"] is True
    assert tasks_of(fleet, "Machine/node-b") == []
    # node-c is off but declared on: adoption waits, naming the field.
    assert status["Machine/node-c"]["phase"] == "Stalled"
    waiting = condition(status["Machine/node-c"], "Stalled")
    assert waiting["reason"] == "AdoptionWaiting"
    assert "power changed in Git" in waiting["message"] and '"off"' in waiting["message"]
    assert system(bmc, NODE_C)["PowerState"] == "Off"

    # Someone at the BMC powers node-a off: drift, reported, not corrected.
    reset = httpx.post(
        f"{bmc}/redfish/v1/Systems/{NODE_A}/Actions/ComputerSystem.Reset",
        json={"ResetType": "ForceOff"},
        auth=(BMC_USER, BMC_PASSWORD),
    )
    assert reset.status_code in (200, 202, 204), reset.text
    assert power_of(bmc, NODE_A, "Off") == "Off"
    reported = fleet.run("apply")
    assert reported.returncode == 2, reported.stdout + reported.stderr  # node-c still waits
    node_a = statuses(fleet)["Machine/node-a"]
    assert node_a["phase"] == "Drifted"
    assert "power" in condition(node_a, "Drifted")["message"]
    assert system(bmc, NODE_A)["PowerState"] == "Off"

    # With selfHeal, only the stage converging power runs: the BMC is on again.
    change(
        fleet,
        "policy.yaml",
        "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: p}\nspec: {selfHeal: true}\n",
    )
    healed = fleet.run("apply")
    assert healed.returncode == 2, healed.stdout + healed.stderr
    assert tasks_of(fleet, "Machine/node-a") == [
        "discover/set-pxe",
        "power/set-power",
        "power/set-power",
    ]
    assert power_of(bmc, NODE_A, "On") == "On"
    assert statuses(fleet)["Machine/node-a"]["phase"] == "Ready"


def test_wrong_bmc_credentials_are_unknown_with_the_bmcs_own_answer(
    bmc: str, tmp_path: Path
) -> None:
    env = {"TEST_BMC_USER": BMC_USER, "TEST_BMC_PASSWORD": "not-the-password"}
    fleet = Fleet.create(tmp_path, redfish_repo(bmc), env=env)
    result = fleet.run("apply")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "UNKNOWN Machine/node-a" in result.stdout
    status = statuses(fleet)
    assert {s["phase"] for s in status.values()} == {"Unknown"}
    ready = condition(status["Machine/node-a"], "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "ObservationFailed")
    assert "401" in ready["message"] or "authentication" in ready["message"].lower()
    assert "not-the-password" not in result.stdout + result.stderr
    assert system(bmc, NODE_A)["PowerState"] == "Off"  # nothing was sent


# --- cloud: EC2 on moto ----------------------------------------------------------------

EC2_STAGES = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: create}
spec:
  converges: [size, image, zone]
  work:
    - {name: run-instance, type: provider, action: create}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: run-state}
spec:
  converges: [state]
  work:
    - {name: set-state, type: provider, action: set-state}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: cloud}
spec:
  steps: [{stage: create}, {stage: run-state}]
"""


def ec2_repo(endpoint: str, size: str = "t3.micro") -> dict[str, str]:
    provider = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: lab-ec2}\n"
        f"spec:\n  type: aws-ec2\n  endpoint: {endpoint}\n  region: us-east-1\n"
        "  credentials: {accessKeyId: env:TEST_AWS_KEY, secretAccessKey: env:TEST_AWS_SECRET}\n"
        "  settings: {images: {ubuntu-24.04: ami-0123456789abcdef0}, operationTimeout: 2m}\n"
    )
    return {
        "providers.yaml": provider,
        "stages.yaml": EC2_STAGES,
        "instances.yaml": instance_doc(size),
    }


def instance_doc(size: str) -> str:
    return (
        "apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: web}\n"
        f"spec:\n  provider: lab-ec2\n  pipeline: cloud\n  size: {size}\n"
        "  image: ubuntu-24.04\n  zone: us-east-1a\n  state: running\n"
    )


def instances(endpoint: str) -> list[dict[str, Any]]:
    import boto3

    client = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIATESTTESTTEST",
        aws_secret_access_key=AWS_SECRET,
    )
    found = client.describe_instances(
        Filters=[
            {"Name": "tag:reconciler/key", "Values": ["Instance/web"]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
        ]
    )
    return [i for r in found["Reservations"] for i in r["Instances"]]


def stop(endpoint: str, instance_id: str) -> None:
    import boto3

    boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIATESTTESTTEST",
        aws_secret_access_key=AWS_SECRET,
    ).stop_instances(InstanceIds=[instance_id])


def test_instance_resize_and_stopped_drift_end_as_declared_in_ec2(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    env = {"TEST_AWS_KEY": "AKIATESTTESTTEST", "TEST_AWS_SECRET": AWS_SECRET}
    fleet = Fleet.create(tmp_path, ec2_repo(ec2_endpoint), env=env)
    first = fleet.run("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    (launched,) = instances(ec2_endpoint)
    assert (launched["InstanceType"], launched["State"]["Name"]) == ("t3.micro", "running")

    # A declared size change ends with the instance of that type, or not Ready.
    change(fleet, "instances.yaml", instance_doc("t3.large"))
    resized = fleet.run("apply")
    assert resized.returncode == 0, resized.stdout + resized.stderr
    (after,) = instances(ec2_endpoint)
    assert after["InstanceId"] == launched["InstanceId"]  # the same instance, not a new one
    assert (after["InstanceType"], after["State"]["Name"]) == ("t3.large", "running")
    web = statuses(fleet)["Instance/web"]
    assert (web["phase"], web["observed"]["size"]) == ("Ready", "t3.large")

    # Stopped out of band: drift, reported; with selfHeal the state stage starts it.
    stop(ec2_endpoint, after["InstanceId"])
    reported = fleet.run("apply")
    assert reported.returncode == 0, reported.stdout + reported.stderr
    web = statuses(fleet)["Instance/web"]
    assert web["phase"] == "Drifted" and web["observed"]["state"] == "stopped"
    change(
        fleet,
        "policy.yaml",
        "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: p}\nspec: {selfHeal: true}\n",
    )
    healed = fleet.run("apply")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert [i["State"]["Name"] for i in instances(ec2_endpoint)] == ["running"]
    assert tasks_of(fleet, "Instance/web")[-1] == "run-state/set-state"

    # The same repository by another spelling: still one owner, no second instance.
    again = fleet.run_as(f"file://{fleet.bare}", "apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(instances(ec2_endpoint)) == 1


# --- other managed objects: kind Resource on a REST API ----------------------------------

TOKEN = "canary-Api-Token-5d2e1"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[WidgetApi]:
    with WidgetApi(TOKEN) as running:
        yield running


def test_a_resource_kind_is_created_drifts_and_is_pruned_on_a_rest_api(
    api: WidgetApi, tmp_path: Path
) -> None:
    provider = f"""\
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: ipam}}
spec:
  type: http
  endpoint: {api.url}
  credentials: {{token: env:TEST_API_TOKEN}}
  settings:
    observe:
      url: /api/widgets/{{name}}
      select: {{type: $.type, params.vlan: $.vlan}}
    create:
      url: /api/widgets
      body:
        name: "{{name}}"
        type: "{{declared.type}}"
        vlan: "{{params.vlan}}"
        owner: {{key: "{{key}}", repository: "{{repository}}"}}
    update: {{url: "/api/widgets/{{name}}", body: {{vlan: "{{params.vlan}}"}}}}
    delete: {{url: "/api/widgets/{{name}}"}}
    list: {{url: /api/widgets, items: $.items, key: $.owner.key, repository: $.owner.repository,
           next: $.next}}
"""
    stages = """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: allocate}
spec:
  converges: [type, params.vlan]
  work:
    - {name: create, type: provider, action: create}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: network}
spec:
  steps: [{stage: allocate}]
"""

    def resource(name: str, vlan: int) -> str:
        return (
            f"---\napiVersion: reconciler/v1\nkind: Resource\nmetadata: {{name: {name}}}\n"
            f"spec:\n  provider: ipam\n  pipeline: network\n  type: vlan\n"
            f"  params: {{vlan: {vlan}}}\n"
        )

    files = {
        "providers.yaml": provider,
        "stages.yaml": stages,
        "resources.yaml": resource("rack-r01-vlan", 120) + resource("rack-r02-vlan", 121),
    }
    fleet = Fleet.create(tmp_path, files, env={"TEST_API_TOKEN": TOKEN})
    first = fleet.run("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    assert {n: (w["type"], w["vlan"]) for n, w in api.widgets.items()} == {
        "rack-r01-vlan": ("vlan", 120),
        "rack-r02-vlan": ("vlan", 121),
    }
    assert {s["phase"] for s in statuses(fleet).values()} == {"Ready"}
    # Changed by hand on the API: drift of a Resource, reported like a machine's.
    api.widgets["rack-r01-vlan"]["vlan"] = 999
    drifted = fleet.run("apply")
    assert drifted.returncode == 0, drifted.stdout + drifted.stderr
    status = statuses(fleet)["Resource/rack-r01-vlan"]
    assert status["phase"] == "Drifted"
    assert "params.vlan" in condition(status, "Drifted")["message"]
    # Removed from Git with prune on: decommissioned on the API.
    change(fleet, "resources.yaml", resource("rack-r01-vlan", 999))
    change(
        fleet,
        "policy.yaml",
        "apiVersion: reconciler/v1\nkind: Policy\nmetadata: {name: p}\nspec: {prune: true}\n",
    )
    refused = fleet.run("apply")  # not on a terminal: destructive actions need --yes
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "apply refused: the plan holds 1 destructive action" in refused.stderr
    assert set(api.widgets) == {"rack-r01-vlan", "rack-r02-vlan"}
    pruned = fleet.run("apply", "--yes")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert set(api.widgets) == {"rack-r01-vlan"}, pruned.stdout + pruned.stderr
    assert TOKEN not in pruned.stdout + pruned.stderr
