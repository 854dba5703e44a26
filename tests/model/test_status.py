"""Conditions: transition times move only on a change of status; health rolls up worst-wins;
a status file reads back as it was written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.model.status import (
    LastAppliedStatus,
    ResourceStatus,
    remove_condition,
    set_condition,
    worst_phase,
)
from reconciler.report.yaml_text import status_yaml

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
    text = status_yaml(status)
    assert "lastApplied:\n  revision: " + "a" * 40 in text
    again = ResourceStatus.from_yaml(text)
    assert again == status
    assert status_yaml(again) == text


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
