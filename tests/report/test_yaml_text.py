"""The status branch's YAML: keys in the order the model writes them, text as written."""

from __future__ import annotations

import yaml

from reconciler.model.status import ResourceStatus
from reconciler.report.yaml_text import dump_yaml, status_yaml


def test_keys_keep_their_order_and_text_is_not_escaped() -> None:
    data = {"name": "nœud-ü", "kind": "Machine", "a": [1, "yes", None]}
    text = dump_yaml(data)
    assert text.splitlines()[:2] == ["name: nœud-ü", "kind: Machine"]
    assert "'yes'" in text  # quoted: it would read back as a boolean
    assert yaml.safe_load(text) == data


def test_a_status_file_starts_with_what_identifies_it() -> None:
    text = status_yaml(ResourceStatus(kind="Machine", name="m1", phase="Ready"))
    assert text.splitlines()[:3] == ["kind: Machine", "name: m1", "phase: Ready"]
