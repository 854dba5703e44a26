"""The example Provider documents in examples/providers/ are valid as they stand."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.model.kinds import Provider
from reconciler.providers.base import ProviderContext
from reconciler.providers.rest import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "providers"


@pytest.mark.parametrize("name", ["redfish.yaml", "aws-ec2.yaml", "rest.yaml"])
def test_example_providers_validate(name: str, tmp_path: Path) -> None:
    documents = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    assert documents, f"{name} holds no document"
    for document in documents:
        provider = Provider.model_validate(document)
        assert provider.spec.type == {"redfish.yaml": "redfish", "aws-ec2.yaml": "aws-ec2"}.get(
            name, "http"
        )
        if provider.spec.type == "http":
            load_settings(ProviderContext(provider.metadata.name, provider.spec, tmp_path))
