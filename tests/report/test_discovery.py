"""The discovery inbox's pure half: documents from discovered values, and the report files.

Literal `Discovered` values in, YAML and Markdown out: names made valid and unused,
the pipeline the declared peers use, observed facts only ever as comments (whatever
characters a provider reports), secrets redacted.
"""

from __future__ import annotations

import json

import yaml

from reconciler.load.load import load_files
from reconciler.providers.base import Discovered
from reconciler.report.discovery import DiscoveryReport, documents, documents_yaml
from reconciler.secrets import REDACTOR

FILES = {
    "all.yaml": b"""\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: bmc}
spec: {type: simulator}
---
apiVersion: reconciler/v1
kind: Stage
metadata: {name: s}
spec: {work: [{name: t, type: provider, action: power-on}]}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: a-first}
spec: {steps: [{stage: s}]}
---
apiVersion: reconciler/v1
kind: Pipeline
metadata: {name: metal}
spec: {steps: [{stage: s}]}
---
apiVersion: reconciler/v1
kind: Machine
metadata: {name: node-1}
spec: {provider: bmc, pipeline: metal}
""",
}


def desired():  # type: ignore[no-untyped-def]
    result = load_files(FILES, revision="r1")
    assert result.ok, result.diagnostics
    return result.desired


def test_documents_take_valid_unused_names_and_the_peers_pipeline() -> None:
    found = [
        Discovered("Machine", "Node-1", {"systemId": "abc", "mac": "52:54:00:00:00:01"}, {}, "bmc"),
        Discovered("Machine", "node_1", {"serial": "S2", "mac": "not-a-mac"}, {}, "bmc"),
        Discovered("Machine", "", {"systemId": "7A3C"}, {}, "bmc"),
    ]
    docs = documents(found, desired())
    assert [d["metadata"]["name"] for d in docs] == ["node-1-2", "node-1-3", "7a3c"]
    assert docs[0]["spec"] == {
        "provider": "bmc",
        "pipeline": "metal",
        "bmc": {"systemId": "abc", "mac": "52:54:00:00:00:01"},
    }
    assert docs[1]["spec"]["bmc"] == {"serial": "S2"}  # a MAC the schema refuses is left out


def test_facts_stay_comments_whatever_characters_they_hold() -> None:
    hostile = "x\nkind: Policy\n\u2028spec: {prune: true}\r\n# ---\n---\nkind: Machine"
    found = [Discovered("Machine", "n", {"systemId": hostile}, {"note": hostile}, "bmc")]
    text = documents_yaml(found, desired())
    loaded = list(yaml.safe_load_all(text))
    assert len(loaded) == 1 and loaded[0]["kind"] == "Machine"
    assert loaded[0]["spec"]["bmc"]["systemId"] == hostile  # a value, quoted, not markup
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith(("---", "apiVersion", "kind", "metadata",
                                                       "spec", "  "))  # fmt: skip


def test_report_files_redact_and_round_trip() -> None:
    REDACTOR.add("discovery-secret-0123456789")
    report = DiscoveryReport(
        "r1",
        (
            Discovered(
                "Instance",
                "db",
                {"instanceId": "i-1"},
                {"userData": "discovery-secret-0123456789"},
                "ec2",
            ),
        ),
        {"bmc": "unreachable"},
    )
    files = report.files()
    assert b"discovery-secret" not in files["reports/discovered.json"]
    assert b"discovery-secret" not in files["reports/discovered.md"]
    back = DiscoveryReport.from_json(files["reports/discovered.json"])
    assert back.found[0].identity == {"instanceId": "i-1"} and back.errors == {"bmc": "unreachable"}
    markdown = files["reports/discovered.md"].decode()
    assert "- provider `bmc` could not list what it sees: unreachable" in markdown
    assert "| `ec2` | Instance | `db` | instanceId=i-1 |" in markdown
    assert json.loads(files["reports/discovered.json"])["revision"] == "r1"
