"""Conditions: transition times move only on a change of status; health rolls up worst-wins."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.report.status import (
    SAFE_DUMPER,
    LastAppliedStatus,
    ResourceStatus,
    dump_yaml,
    remove_condition,
    set_condition,
    worst_phase,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_transition_time_kept_while_status_unchanged() -> None:
    conditions = set_condition((), "Ready", "False", "Provisioning", "stage 1 of 5", T0)
    later = set_condition(
        conditions, "Ready", "False", "Provisioning", "stage 2 of 5", T0 + timedelta(minutes=5)
    )
    assert later[0].last_transition_time == T0
    assert later[0].message == "stage 2 of 5"
    ready = set_condition(
        later, "Ready", "True", "Reconciled", "all stages done", T0 + timedelta(minutes=9)
    )
    assert ready[0].last_transition_time == T0 + timedelta(minutes=9)


def test_conditions_are_ordered_and_removable() -> None:
    conditions = set_condition((), "Failed", "True", "TaskFailed", "x", T0)
    conditions = set_condition(conditions, "Ready", "False", "TaskFailed", "x", T0)
    assert [c.type for c in conditions] == ["Ready", "Failed"]
    assert [c.type for c in remove_condition(conditions, "Failed")] == ["Ready"]


def test_status_yaml_round_trip_is_stable() -> None:
    status = ResourceStatus(
        kind="Machine",
        name="m1",
        phase="Ready",
        conditions=set_condition((), "Ready", "True", "Reconciled", "ok", T0),
        stage_reached="install-app",
        last_applied=LastAppliedStatus(
            revision="a" * 40, resolution="b" * 64, stages_done=("install-app",)
        ),
        observed={"power": "on"},
    )
    text = status.to_yaml()
    assert "lastApplied:\n  revision: " + "a" * 40 in text
    again = ResourceStatus.from_yaml(text)
    assert again == status
    assert again.to_yaml() == text


def test_a_status_written_by_a_newer_version_still_reads() -> None:
    """A field this version does not know (a newer controller, a hand edit) is ignored:
    an unreadable status would lose what was applied."""
    text = (
        "kind: Machine\nname: m1\nphase: Ready\nfutureField: {x: 1}\n"
        "lastApplied: {revision: abc, resolution: def, alsoNew: true}\n"
    )
    status = ResourceStatus.from_yaml(text)
    assert status.last_applied is not None
    assert (status.phase, status.last_applied.revision) == ("Ready", "abc")


def test_worst_phase_wins() -> None:
    assert worst_phase([]) == "Ready"
    assert worst_phase(["Ready", "Drifted", "Provisioning"]) == "Drifted"
    assert worst_phase(["Ready", "Failed", "Stalled"]) == "Failed"
    assert worst_phase(["Decommissioned", "Ready"]) in ("Ready", "Decommissioned")


def pyyaml(data: Any) -> str:
    return yaml.dump(data, Dumper=SAFE_DUMPER, sort_keys=False, allow_unicode=True)


# Strings PyYAML must quote, fold at 80 columns or escape, among ordinary ones.
TRICKY = st.sampled_from(
    ["", "true", "no", "~", "null", "1e3", "0x1F", "12:30", "- a", "a: b", "#c", "'q'", " x"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=120)
    | TRICKY
    | st.just("word " * 30)
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | SCALARS, inner, max_size=4)
    ),
    max_leaves=30,
)


@given(JSON_LIKE)
def test_dump_yaml_writes_pyyaml_text(data: Any) -> None:
    assert dump_yaml(data) == pyyaml(data)


def test_dump_yaml_leaves_what_is_not_json_to_pyyaml() -> None:
    shared = {"a": 1}
    for data in (
        {"x": shared, "y": shared},  # one container twice: an anchor and an alias
        {"when": date(2026, 11, 29), "t": (1, 2)},
        [T0, T0],
    ):
        assert dump_yaml(data) == pyyaml(data)
    assert "&id001" in dump_yaml({"x": shared, "y": shared})
