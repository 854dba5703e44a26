"""The example Provider documents are valid as they stand; the entry points load."""

from __future__ import annotations

import asyncio
import importlib
import tomllib
from pathlib import Path

import pytest
import yaml

from reconciler.model.kinds import Provider, ProviderSpec
from reconciler.providers import ENTRY_POINT_GROUP
from reconciler.providers.base import Provider as ProviderProtocol
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


@pytest.mark.parametrize(
    ("type_", "spec"),
    [
        ("redfish", {"endpoint": "https://bmc.example.com"}),
        ("aws-ec2", {"region": "eu-west-1"}),
        (
            "http",
            {"endpoint": "https://api.example.com", "settings": {"observe": {"url": "/x/{name}"}}},
        ),
    ],
)
def test_entry_points_name_classes_that_satisfy_the_protocol(
    type_: str, spec: dict[str, object], tmp_path: Path
) -> None:
    """The pyproject entry points (active once installed) load and build a `Provider`."""
    pytest.importorskip(
        "sushy" if type_ == "redfish" else "boto3" if type_ == "aws-ec2" else "httpx"
    )
    pyproject = tomllib.loads((EXAMPLES.parents[1] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP][type_]
    module, _, attribute = target.partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    provider_spec = ProviderSpec.model_validate({"type": type_, **spec})
    provider = factory(ProviderContext("p", provider_spec, tmp_path))
    try:
        assert isinstance(provider, ProviderProtocol)
        assert provider.name == "p"
    finally:
        asyncio.run(provider.close())
