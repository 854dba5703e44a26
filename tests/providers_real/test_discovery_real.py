"""The discovery inbox against real emulators: sushy-emulator's systems and moto's instances.

The repository declares one of sushy-emulator's three systems (node-a, by MAC) and no
instance. moto holds an instance nobody tagged (a hand-launched database server) and
one tagged by another controller. Through the real CLI: `apply` commits
`reports/discovered.json` naming node-b, node-c and the untagged instance only;
`reconciler discover --output yaml` prints a Machine per system (its BMC identity)
and an Instance, which validate once committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
import yaml

from tests.e2e.support import Fleet

from .servers import AWS_SECRET, BMC_PASSWORD, BMC_USER, SYSTEMS

pytest.importorskip("sushy", reason="pip install sushy (the test extra)")
boto3 = pytest.importorskip("boto3", reason="pip install boto3 (the test extra)")

AMI = "ami-0123456789abcdef0"


def files(bmc: str, ec2: str) -> dict[str, str]:
    return {
        "providers.yaml": f"""\
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
  settings: {{images: {{ubuntu-24.04: {AMI}}}}}
""",
        "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: inventory}
spec:
  work: [{name: read, type: provider, action: discover}]
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: create}
spec:
  converges: [size, image]
  work: [{name: run-instance, type: provider, action: create}]
""",
        "pipelines.yaml": """\
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: bare-metal}
spec: {steps: [{stage: inventory}]}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: cloud}
spec: {steps: [{stage: create}]}
""",
        "machines.yaml": """\
apiVersion: reconciler/v1
kind: Machine
metadata: {name: node-a}
spec:
  provider: lab-bmc
  pipeline: bare-metal
  bmc: {mac: "00:5c:52:31:3a:9c"}
""",
    }


def launch(ec2: str, tags: dict[str, str]) -> str:
    """An instance launched outside the controller (test set-up, straight to moto)."""
    client = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=ec2,
        aws_access_key_id="AKIATESTTESTTEST",
        aws_secret_access_key=AWS_SECRET,
    )
    answer = client.run_instances(
        ImageId=AMI,
        InstanceType="t3.small",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )
    return str(answer["Instances"][0]["InstanceId"])


def test_undeclared_systems_and_untagged_instances_are_discovered(
    sushy_emulator: str, ec2_endpoint: str, tmp_path: Path
) -> None:
    legacy = launch(ec2_endpoint, {"Name": "legacy-db"})
    launch(
        ec2_endpoint,
        {"Name": "theirs", "managed-by": "reconciler", "reconciler/repository": "file:///x#main"},
    )
    env = {
        "TEST_BMC_USER": BMC_USER,
        "TEST_BMC_PASSWORD": BMC_PASSWORD,
        "TEST_AWS_KEY": "AKIATESTTESTTEST",
        "TEST_AWS_SECRET": AWS_SECRET,
    }
    fleet = Fleet.create(tmp_path, files(sushy_emulator, ec2_endpoint), env=env)

    done = fleet.run("apply")
    assert done.returncode == 0, done.stdout + done.stderr
    repo = pygit2.Repository(str(fleet.bare))
    tree = repo.revparse_single("refs/heads/reconciler/status").peel(pygit2.Commit).tree
    report = json.loads(repo[tree["reports/discovered.json"].id].data)
    assert report["errors"] == {}
    listed = {(d["provider"], d["kind"], d["name"]) for d in report["discovered"]}
    assert listed == {
        ("lab-bmc", "Machine", "node-b"),
        ("lab-bmc", "Machine", "node-c"),
        ("lab-ec2", "Instance", "legacy-db"),
    }
    text = repo[tree["reports/discovered.json"].id].data.decode()
    assert BMC_PASSWORD not in text and AWS_SECRET not in text

    shown = fleet.run("discover", "--output", "yaml")
    assert shown.returncode == 0, shown.stderr
    documents = {d["metadata"]["name"]: d for d in yaml.safe_load_all(shown.stdout)}
    assert set(documents) == {"node-b", "node-c", "legacy-db"}
    node_b = documents["node-b"]["spec"]
    assert node_b["provider"] == "lab-bmc" and node_b["pipeline"] == "bare-metal"
    assert node_b["bmc"]["systemId"] == SYSTEMS[1]["uuid"]
    assert node_b["bmc"]["mac"] == SYSTEMS[1]["nics"][0]["mac"]
    assert documents["legacy-db"]["spec"] == {
        "provider": "lab-ec2",
        "pipeline": "cloud",
        "size": "t3.small",
        "image": "ubuntu-24.04",
        "region": "us-east-1",
        "zone": documents["legacy-db"]["spec"]["zone"],
    }
    assert f"#   instanceId: {legacy}" in shown.stdout

    source = tmp_path / "checkout"
    pygit2.clone_repository(str(fleet.bare), str(source), checkout_branch="main")
    (source / "discovered.yaml").write_text(shown.stdout)
    checked = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(source)],
        capture_output=True,
        text=True,
        env=fleet.env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 resources" in checked.stderr
