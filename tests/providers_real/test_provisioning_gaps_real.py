"""Ownership, lost provider state and unreachable providers, against real emulators.

`reconciler apply` runs as a subprocess on a bare repository; what is asserted is read
from the other side: moto's EC2 instances (count, owner tags), sushy-emulator's
systems, the status branch. moto cannot refuse wrong credentials (it accepts any key
unless IAM enforcement is switched on for the whole server, which would break the
other tests sharing it), so "EC2 down" is an endpoint nothing listens on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest
import yaml

from tests.e2e.support import Fleet

from .conftest import _start_sushy
from .servers import AWS_SECRET, BMC_PASSWORD, BMC_USER, SYSTEMS, free_port

pytestmark = pytest.mark.slow

NODE_A = SYSTEMS[0]["uuid"]
AWS_ENV = {"TEST_AWS_KEY": "AKIATESTTESTTEST", "TEST_AWS_SECRET": AWS_SECRET}


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


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


# --- EC2 on moto -------------------------------------------------------------------------

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
kind: Pipeline
metadata: {name: cloud}
spec:
  steps: [{stage: create}]
"""


def ec2_repo(endpoint: str, *names: str) -> dict[str, str]:
    provider = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: lab-ec2}\n"
        f"spec:\n  type: aws-ec2\n  endpoint: {endpoint}\n  region: us-east-1\n"
        "  credentials: {accessKeyId: env:TEST_AWS_KEY, secretAccessKey: env:TEST_AWS_SECRET}\n"
        "  settings: {images: {ubuntu-24.04: ami-0123456789abcdef0}, operationTimeout: 2m}\n"
    )
    instances = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: {name}}}\n"
        "spec:\n  provider: lab-ec2\n  pipeline: cloud\n  size: t3.micro\n"
        "  image: ubuntu-24.04\n  zone: us-east-1a\n"
        for name in names
    )
    return {"providers.yaml": provider, "stages.yaml": EC2_STAGES, "instances.yaml": instances}


def instances(endpoint: str) -> list[dict[str, Any]]:
    """Every instance moto holds that is not terminated, whoever made it."""
    import boto3

    client = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIATESTTESTTEST",
        aws_secret_access_key=AWS_SECRET,
    )
    found = client.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}]
    )
    return [i for r in found["Reservations"] for i in r["Instances"]]


def tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_ec2_lost_its_state_and_nothing_is_launched_again(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    fleet = Fleet.create(tmp_path, ec2_repo(ec2_endpoint, "web", "db"), env=AWS_ENV)
    first = fleet.run("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(instances(ec2_endpoint)) == 2
    httpx.post(f"{ec2_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    assert instances(ec2_endpoint) == []

    lost = fleet.run("apply")  # a fresh process: the guard's memory is in the state dir
    assert lost.returncode == 1, lost.stdout + lost.stderr
    assert instances(ec2_endpoint) == []  # not re-launched
    status = statuses(fleet)
    assert {k: s["phase"] for k, s in status.items()} == {
        "Instance/web": "Unknown",
        "Instance/db": "Unknown",
    }
    condition = ready(status["Instance/web"])
    assert (condition["status"], condition["reason"]) == ("Unknown", "ObservationFailed")
    assert "reported none of the 2 resources it reported existing before" in condition["message"]


def test_ec2_one_repository_spelled_three_ways_launches_once(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    fleet = Fleet.create(tmp_path, ec2_repo(ec2_endpoint, "web"), env=AWS_ENV)
    spellings = (str(fleet.bare), os.path.relpath(fleet.bare, tmp_path), f"file://{fleet.bare}")
    for spelling in spellings:
        done = fleet.run_as(spelling, "apply", cwd=tmp_path)
        assert done.returncode == 0, f"{spelling}: {done.stdout}{done.stderr}"
    (only,) = instances(ec2_endpoint)
    owner = json.loads((fleet.state / "owner.json").read_text())["owner"]
    assert owner == f"file://{os.path.realpath(fleet.bare)}#main"
    assert tags(only)["reconciler/repository"] == owner
    assert tags(only)["reconciler/key"] == "Instance/web"
    assert statuses(fleet)["Instance/web"]["phase"] == "Ready"


def test_ec2_a_state_directory_refuses_another_repository(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    first = Fleet.create(tmp_path / "a", ec2_repo(ec2_endpoint, "web"), env=AWS_ENV)
    assert first.run("apply").returncode == 0
    other = Fleet.create(tmp_path / "b", ec2_repo(ec2_endpoint, "web", "api"), env=AWS_ENV)
    refused = other.run_as(str(other.bare), "apply", state=first.state)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"belongs to {first.bare}" in refused.stderr
    assert f"refusing to use it for {other.bare}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert [tags(i)["reconciler/key"] for i in instances(ec2_endpoint)] == ["Instance/web"]


def test_ec2_endpoint_down_is_unknown_with_the_clients_message(
    ec2_endpoint: str, tmp_path: Path
) -> None:
    fleet = Fleet.create(tmp_path, ec2_repo(ec2_endpoint, "web"), env=AWS_ENV)
    assert fleet.run("apply").returncode == 0
    port = free_port()  # nothing listens there
    down = ec2_repo(f"http://127.0.0.1:{port}", "web")["providers.yaml"]
    commit(fleet, "providers.yaml", down)
    result = fleet.run("apply")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "UNKNOWN Instance/web" in result.stdout
    status = statuses(fleet)["Instance/web"]
    assert status["phase"] == "Unknown"
    condition = ready(status)
    assert (condition["status"], condition["reason"]) == ("Unknown", "ObservationFailed")
    assert f"127.0.0.1:{port}" in condition["message"], condition["message"]
    assert AWS_SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(instances(ec2_endpoint)) == 1  # nothing launched anywhere


def commit(fleet: Fleet, path: str, text: str) -> None:
    repo = pygit2.Repository(str(fleet.bare))
    head = repo.revparse_single("refs/heads/main").peel(pygit2.Commit)
    builder = repo.TreeBuilder(head.tree)
    builder.insert(path, repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB)
    who = pygit2.Signature("A Person", "person@example.com")
    repo.create_commit("refs/heads/main", who, who, f"Change {path}", builder.write(), [head.id])


# --- Redfish on sushy-emulator ------------------------------------------------------------

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
kind: Pipeline
metadata: {name: bare-metal}
spec:
  steps: [{stage: discover}]
"""


def redfish_repo(url: str) -> dict[str, str]:
    provider = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: lab-bmc}\n"
        f"spec:\n  type: redfish\n  endpoint: {url}\n"
        "  credentials: {username: env:TEST_BMC_USER, password: env:TEST_BMC_PASSWORD}\n"
        "  settings: {powerTimeout: 1m, inventoryTtl: 0s}\n"
    )
    machine = (
        "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: node-a}\n"
        f"spec:\n  provider: lab-bmc\n  pipeline: bare-metal\n  bmc: {{systemId: {NODE_A}}}\n"
    )
    return {"providers.yaml": provider, "stages.yaml": REDFISH_STAGES, "machines.yaml": machine}


@pytest.fixture
def stoppable_bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """A sushy-emulator of this test's own, and a way to stop it midway."""
    running = _start_sushy(tmp_path_factory.mktemp("bmc"))
    url = next(running)
    yield url, running.close
    running.close()


def test_redfish_bmc_stopped_is_unknown_with_the_connection_error(
    stoppable_bmc: tuple[str, Any], tmp_path: Path
) -> None:
    url, stop_bmc = stoppable_bmc
    env = {"TEST_BMC_USER": BMC_USER, "TEST_BMC_PASSWORD": BMC_PASSWORD}
    fleet = Fleet.create(tmp_path, redfish_repo(url), env=env)
    first = fleet.run("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    assert statuses(fleet)["Machine/node-a"]["phase"] == "Ready"
    stop_bmc()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/redfish/v1/", timeout=2)
    result = fleet.run("apply")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "UNKNOWN Machine/node-a" in result.stdout
    status = statuses(fleet)["Machine/node-a"]
    assert status["phase"] == "Unknown"
    condition = ready(status)
    assert (condition["status"], condition["reason"]) == ("Unknown", "ObservationFailed")
    assert url.removeprefix("http://") in condition["message"], condition["message"]
    assert BMC_PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_redfish_wrong_port_is_unknown_before_anything_ran(tmp_path: Path) -> None:
    pytest.importorskip("sushy", reason="pip install sushy (the test extra)")
    port = free_port()  # nothing listens there
    env = {"TEST_BMC_USER": BMC_USER, "TEST_BMC_PASSWORD": BMC_PASSWORD}
    fleet = Fleet.create(tmp_path, redfish_repo(f"http://127.0.0.1:{port}"), env=env)
    result = fleet.run("apply")
    assert result.returncode == 1, result.stdout + result.stderr
    status = statuses(fleet)["Machine/node-a"]
    assert status["phase"] == "Unknown"
    condition = ready(status)
    assert (condition["status"], condition["reason"]) == ("Unknown", "ObservationFailed")
    assert f"127.0.0.1:{port}" in condition["message"], condition["message"]
    assert "Traceback" not in result.stderr
