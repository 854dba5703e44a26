"""A provider's `limits.concurrency` is what reaches its API, through the real CLI and moto.

`reconciler apply` (a subprocess) provisions 8 EC2 instances (on 2 cores) on moto, with the
provider's endpoint pointing at a recording proxy in front of moto
(`recording_proxy`): it holds every request for a fixed delay, so calls the
controller makes at the same time overlap there, and it counts the most in flight
at once. boto3 is blocking: the provider runs its calls in threads of its own
(`support.Gate`), as many as `limits.concurrency`.

- `limits.concurrency: 2`: at most 2 requests in flight, and 2 seen — the
  instances wait for the provider's slots;
- a limit of as many as the instances, two more than asyncio's default executor
  holds threads (min(32, CPUs + 4): 6 on 2 cores, so 8 instances): that many at
  once. Calls run in the default executor would stop two short and the test fail.

Each run ends with every instance running in moto (the other side) and the number
of `RunInstances` the proxy forwarded equal to the instances declared.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.support import Fleet

from .recording_proxy import recording_proxy
from .servers import AWS_SECRET
from .test_provisioning_real import EC2_STAGES

pytestmark = pytest.mark.slow

DEFAULT_EXECUTOR = min(32, (getattr(os, "process_cpu_count", os.cpu_count)() or 1) + 4)
"""Threads of asyncio's default executor here (Python's ThreadPoolExecutor default)."""
INSTANCES = DEFAULT_EXECUTOR + 2
"""As many instances as the higher limit: more than the default executor would run."""
DELAY = 0.4
"""Seconds the proxy holds each request: long beside the controller's own work per call."""


def ec2_fleet_repo(endpoint: str, concurrency: int) -> dict[str, str]:
    provider = (
        "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: lab-ec2}\n"
        f"spec:\n  type: aws-ec2\n  endpoint: {endpoint}\n  region: us-east-1\n"
        "  credentials: {accessKeyId: env:TEST_AWS_KEY, secretAccessKey: env:TEST_AWS_SECRET}\n"
        "  settings: {images: {ubuntu-24.04: ami-0123456789abcdef0}, operationTimeout: 2m}\n"
        f"  limits: {{concurrency: {concurrency}}}\n"
    )
    instances = "".join(
        f"---\napiVersion: reconciler/v1\nkind: Instance\nmetadata: {{name: web{i}}}\n"
        "spec:\n  provider: lab-ec2\n  pipeline: cloud\n  size: t3.micro\n"
        "  image: ubuntu-24.04\n  zone: us-east-1a\n  state: running\n"
        for i in range(INSTANCES)
    )
    return {"providers.yaml": provider, "stages.yaml": EC2_STAGES, "instances.yaml": instances}


def running_instances(endpoint: str) -> list[str]:
    import boto3

    client = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIATESTTESTTEST",
        aws_secret_access_key=AWS_SECRET,
    )
    found = client.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["running"]}]
    )
    return sorted(
        tag["Value"]
        for r in found["Reservations"]
        for i in r["Instances"]
        for tag in i.get("Tags", ())
        if tag["Key"] == "reconciler/key"
    )


@pytest.mark.parametrize("concurrency", [2, INSTANCES])
def test_requests_in_flight_to_ec2_are_the_providers_concurrency(
    ec2_endpoint: str, tmp_path: Path, concurrency: int
) -> None:
    env = {"TEST_AWS_KEY": "AKIATESTTESTTEST", "TEST_AWS_SECRET": AWS_SECRET}
    with recording_proxy(ec2_endpoint, delay=DELAY) as proxy:
        fleet = Fleet.create(tmp_path, ec2_fleet_repo(proxy.url, concurrency), env=env)
        done = fleet.run("apply")
        assert done.returncode == 0, done.stdout + done.stderr
        recorded = proxy.recorder
    assert running_instances(ec2_endpoint) == [f"Instance/web{i}" for i in range(INSTANCES)]
    assert recorded.requests.count("RunInstances") == INSTANCES
    assert recorded.in_flight == 0
    assert recorded.most == concurrency, recorded.requests
