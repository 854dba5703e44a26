"""Resource status as Kubernetes-style conditions: the values `report` writes and the API serves.

Pure values and functions (time is passed in, never read here). Each resource
carries the conditions Ready (True/False/Unknown, always present), Reconciling,
Drifted, Stalled and Failed (present only while true), each with a CamelCase
reason and a human message. `last_transition_time` moves only when a
condition's status changes, so repeated cycles in the same state write
byte-identical status files (and no commit).

A model of the contract (`schemas/status.json`), like the documents beside it: the
plan's scoping, the executor's retention and the report all read it, and
`reconciler.report.yaml_text` writes it. A cycle's overall health is the worst of its
resources' (worst wins).
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# libyaml's parser when PyYAML has it: the same values, several times faster (a cycle
# reads one status file per resource).
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


ConditionType = Literal["Ready", "Reconciling", "Drifted", "Stalled", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
Phase = Literal[
    "Pending", "Provisioning", "Ready", "Drifted", "Failed", "Stalled", "Decommissioned", "Unknown"
]


class Health(IntEnum):
    """Ordered so that max() is the worst: a cycle is as healthy as its sickest resource."""

    READY = 0
    DECOMMISSIONED = 0
    PENDING = 1
    PROVISIONING = 2
    DRIFTED = 3
    UNKNOWN = 4
    STALLED = 5
    FAILED = 6


PHASE_HEALTH: dict[str, Health] = {
    "Ready": Health.READY,
    "Decommissioned": Health.DECOMMISSIONED,
    "Pending": Health.PENDING,
    "Provisioning": Health.PROVISIONING,
    "Drifted": Health.DRIFTED,
    "Unknown": Health.UNKNOWN,
    "Stalled": Health.STALLED,
    "Failed": Health.FAILED,
}


class _Value(BaseModel):
    # Read tolerantly: a field written by a newer version (or by hand) is ignored rather
    # than making the whole status unreadable, which would lose what was applied.
    model_config = ConfigDict(
        frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True
    )


class Condition(_Value):
    type: ConditionType
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$")
    message: str = ""
    last_transition_time: datetime


class Failure(_Value):
    """Where a resource's pipeline stopped: enough to start troubleshooting."""

    stage: str
    task: str
    error: str
    log: str | None = Field(default=None, description="Task log path in the state directory")
    attempts: int = Field(default=1, ge=1, description="Failed applies in a row")
    retry_at: datetime | None = Field(
        default=None, description="Scheduled cycles leave it alone until then (failureBackoff)"
    )
    resolution: str | None = Field(
        default=None,
        description="Hash of what failed (declared state and tasks): a change to it in Git "
        "is tried at once",
    )


class LastAppliedStatus(_Value):
    """What reconciler brought about for the resource: a projection of the journal's record
    (`reconciler.plan.diff.LastApplied`), so a plan made elsewhere (CI) reads it too."""

    revision: str | None = Field(
        default=None, description="Revision at which its pipeline last completed"
    )
    resolution: str | None = Field(
        default=None,
        description="Hash of what applying it meant then (declared state, stages, tasks); "
        "absent while its pipeline never completed: it is not provisioned",
    )
    fingerprint: str | None = None
    stages_done: tuple[str, ...] = Field(
        default=(), description="Stages completed on it, in pipeline order"
    )
    stages: dict[str, str] = Field(
        default_factory=dict, description="Each completed stage's digest at the time"
    )
    adopted: bool = Field(default=False, description="Taken over without running its pipeline")
    declared: dict[str, Any] | None = Field(
        default=None, description="The declared state then (secure params as references)"
    )


class ResourceStatus(_Value):
    kind: str
    name: str
    phase: Phase = "Pending"
    conditions: tuple[Condition, ...] = ()
    stage_reached: str | None = None
    last_applied: LastAppliedStatus | None = None
    drifted_since: datetime | None = None
    failure: Failure | None = None
    observed: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def to_data(self) -> dict[str, Any]:
        """The status file's content: camelCase keys, nothing unset."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_yaml(cls, text: str) -> ResourceStatus:
        return cls.model_validate(yaml.load(text, Loader=SAFE_LOADER))


def set_condition(
    conditions: tuple[Condition, ...],
    kind: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
) -> tuple[Condition, ...]:
    """Conditions with `kind` set; its transition time kept when the status did not change."""
    previous = next((c for c in conditions if c.type == kind), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=kind, status=status, reason=reason, message=message, last_transition_time=since
    )
    others = tuple(c for c in conditions if c.type != kind)
    return _ordered((*others, updated))


def remove_condition(
    conditions: tuple[Condition, ...], kind: ConditionType
) -> tuple[Condition, ...]:
    """Reconciling, Drifted, Stalled and Failed are present only while true."""
    return tuple(c for c in conditions if c.type != kind)


_ORDER = {"Ready": 0, "Reconciling": 1, "Drifted": 2, "Stalled": 3, "Failed": 4}


def _ordered(conditions: tuple[Condition, ...]) -> tuple[Condition, ...]:
    return tuple(sorted(conditions, key=lambda c: _ORDER[c.type]))


def worst_phase(phases: list[str]) -> str:
    """The cycle's roll-up: the least healthy phase, or Ready when there is nothing."""
    if not phases:
        return "Ready"
    return max(phases, key=lambda p: PHASE_HEALTH.get(p, Health.UNKNOWN))
