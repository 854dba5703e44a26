"""The Terraform state backend of a running controller refuses a deep body cleanly.

The backend's routes take Basic credentials that only the terraform programs the
controller starts are given (TF_HTTP_USERNAME/PASSWORD). So the client here is
such a program: a stand-in `terraform` first on PATH of a real `reconciler run`,
which — instead of Terraform's own lock request — sends LOCK and POST with a
100,000-deep JSON body to the addresses it was given, writes the answers to a
file, and fails. The answers must be 400 naming the depth limit (not a 500 from
RecursionError), the state file untouched, and the controller's log free of
tracebacks. A stand-in is used because real Terraform never sends such a body.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from reconciler.controller.webhooks import MAX_JSON_DEPTH
from tests.e2e.controller import controller
from tests.e2e.support import Fleet

pytestmark = pytest.mark.slow

HOSTILE = """\
#!{python}
import base64, json, os, sys, urllib.error, urllib.request
deep = b"[" * 100_000 + b"]" * 100_000
auth = base64.b64encode(
    (os.environ["TF_HTTP_USERNAME"] + ":" + os.environ["TF_HTTP_PASSWORD"]).encode()
).decode()
answers = []
for method, url in (("LOCK", os.environ["TF_HTTP_LOCK_ADDRESS"]),
                    ("POST", os.environ["TF_HTTP_ADDRESS"])):
    request = urllib.request.Request(url, data=deep, method=method)
    request.add_header("Authorization", "Basic " + auth)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answers.append([method, answer.status, answer.read().decode()])
    except urllib.error.HTTPError as error:
        answers.append([method, error.code, error.read().decode()])
with open({out!r}, "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "answers": answers}}) + "\\n")
sys.exit(1)
"""


def repo() -> dict[str, str]:
    return {
        ".reconcilerignore": "terraform/\n",
        "terraform/join/main.tf": 'resource "terraform_data" "x" {}\n',
        "providers.yaml": "apiVersion: reconciler/v1\nkind: Provider\nmetadata: {name: lab}\n"
        "spec: {type: simulator}\n",
        "stages.yaml": """\
apiVersion: reconciler/v1
kind: Stage
metadata: {name: join}
spec:
  work:
    - {name: cluster, type: terraform, module: terraform/join}
""",
        "pipelines.yaml": "apiVersion: reconciler/v1\nkind: Pipeline\nmetadata: {name: joined}\n"
        "spec:\n  steps:\n    - stage: join\n",
        "machines.yaml": "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m1}\n"
        "spec: {provider: lab, pipeline: joined}\n",
    }


def test_a_deep_body_to_the_state_backend_is_400(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "answers.jsonl"
    fake = bin_dir / "terraform"
    fake.write_text(HOSTILE.format(python=sys.executable, out=str(out)))
    fake.chmod(0o755)
    fleet = Fleet.create(tmp_path, repo())
    path = f"{bin_dir}:{fleet.env.get('PATH', '')}"
    with controller(fleet, tmp_path, env={"PATH": path}) as api:
        api.wait_for(out.exists)
        api.wait_for_line("cycle failed")  # the stand-in fails its task
        log = api.log.read_text()
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    answers = {method: (code, body) for method, code, body in calls[0]["answers"]}
    depth = f"nested deeper than {MAX_JSON_DEPTH} levels"
    assert answers["LOCK"][0] == 400 and depth in answers["LOCK"][1], answers
    assert answers["POST"][0] == 400 and depth in answers["POST"][1], answers
    assert not list((fleet.state).rglob("terraform.tfstate")), "a deep state was stored"
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
