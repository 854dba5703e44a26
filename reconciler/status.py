"""Resource status as Kubernetes-style conditions: the values `report` writes and the API serves.

Pure values and functions (time is passed in, never read here). Each resource
carries the conditions Ready (True/False/Unknown, always present), Reconciling,
Drifted, Stalled and Failed (present only while true), each with a CamelCase
reason and a human message. `last_transition_time` moves only when a
condition's status changes, so repeated cycles in the same state write
byte-identical status files (and no commit).

A cycle's overall health is the worst of its resources' (worst wins).
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# libyaml's emitter and parser when PyYAML has them: the same text, several times
# faster (a cycle writes and reads one status file per resource).
SAFE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null"))
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _NotJson(Exception):
    """The data holds something `_JsonDumper` leaves to PyYAML's own representer."""


class _JsonDumper(SAFE_DUMPER):  # type: ignore[misc]
    """SAFE_DUMPER with a shortcut for JSON-like data (dict, list, str, int, float, bool,
    None): the nodes PyYAML's representer would build, built directly.

    Its generic representer (alias bookkeeping, a type lookup per value) took most of
    the time of a status file, which a cycle writes once per resource. Anything else
    (tuples, dates, subclasses, one container reached twice, which PyYAML writes as
    an alias) goes to that representer whole, so the text is always PyYAML's.
    """

    def represent(self, data: Any) -> None:
        try:
            node = self._node(data, set())
        except _NotJson:
            super().represent(data)
            return
        self.serialize(node)

    def _node(self, data: Any, seen: set[int]) -> Node:
        kind = type(data)
        if kind is str:
            return ScalarNode(_STR, data)
        if kind is dict or kind is list:
            if id(data) in seen:
                raise _NotJson
            seen.add(id(data))
            if kind is list:
                return SequenceNode(_SEQ, [self._node(v, seen) for v in data], flow_style=False)
            items = [(self._node(k, seen), self._node(v, seen)) for k, v in data.items()]
            return MappingNode(_MAP, items, flow_style=False)
        if data is None:
            return ScalarNode(_NULL, "null")
        if kind is bool:
            return ScalarNode(_BOOL, "true" if data else "false")
        if kind is int:
            return ScalarNode(_INT, str(data))
        if kind is float:  # never an alias; PyYAML's spelling of inf, nan and exponents
            return self.represent_data(data)  # type: ignore[no-any-return]
        raise _NotJson


def dump_yaml(data: Any) -> str:
    """Block-style YAML of `data`, keys in their order: the text of
    `yaml.dump(data, Dumper=SAFE_DUMPER, sort_keys=False, allow_unicode=True)`, faster."""
    return yaml.dump(data, Dumper=_JsonDumper, sort_keys=False, allow_unicode=True)


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
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
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


class ResourceStatus(_Value):
    kind: str
    name: str
    phase: Phase = "Pending"
    conditions: tuple[Condition, ...] = ()
    stage_reached: str | None = None
    stages_done: tuple[str, ...] = ()
    last_applied_revision: str | None = None
    last_applied_fingerprint: str | None = None
    last_applied_declared: dict[str, Any] | None = None
    drifted_since: datetime | None = None
    failure: Failure | None = None
    observed: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(mode="json", by_alias=True, exclude_none=True))

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
