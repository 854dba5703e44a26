"""The provider registry: built-ins, entry points, and failures that name what is known."""

from __future__ import annotations

import pytest

import reconciler.providers as providers
from reconciler.errors import PermanentError
from reconciler.providers.simulator import SimulatorProvider
from tests.plan_values import provider_document


def test_simulator_is_built_in():
    assert providers.provider_types()["simulator"] == (
        "reconciler.providers.simulator:SimulatorProvider"
    )
    assert providers.factory_for("simulator") is SimulatorProvider


def test_unknown_type_names_the_known_ones():
    with pytest.raises(PermanentError, match=r"unknown provider type 'nope'; known: .*simulator"):
        providers.factory_for("nope")


def test_entry_points_are_found(monkeypatch):
    class EntryPoint:
        name = "thirdparty"
        value = "reconciler.providers.simulator:SimulatorProvider"

    monkeypatch.setattr(providers, "entry_points", lambda group: [EntryPoint()])
    assert "thirdparty" in providers.provider_types()
    assert providers.factory_for("thirdparty") is SimulatorProvider


def test_open_providers_keeps_going_past_a_broken_one(tmp_path):
    good = provider_document("sim")
    broken = provider_document("other").model_copy(
        update={"spec": good.spec.model_copy(update={"type": "nope"})}
    )
    opened, failed = providers.open_providers({"sim": good, "other": broken}, state_dir=tmp_path)
    assert list(opened) == ["sim"]
    assert failed["other"].startswith("PermanentError: unknown provider type 'nope'")
    assert (tmp_path / "simulator.db").exists()
