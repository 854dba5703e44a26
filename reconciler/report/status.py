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

import functools
import re
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.representer import SafeRepresenter

# libyaml's emitter and parser when PyYAML has them: the same text, several times
# faster (a cycle writes and reads one status file per resource).
SAFE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_FLOATS = SafeRepresenter()
_Resolvers = tuple[tuple[str, re.Pattern[str]], ...]
# The dumper's implicit resolvers by first character, those for any character appended
# (PyYAML's resolver assembles that list on each of its two calls per scalar).
_WILDCARD: _Resolvers = tuple(SAFE_DUMPER.yaml_implicit_resolvers.get(None, ()))
_RESOLVERS: dict[str, _Resolvers] = {
    first: (*resolvers, *_WILDCARD)
    for first, resolvers in SAFE_DUMPER.yaml_implicit_resolvers.items()
    if first is not None
}
# The emitter only reads events: one of each serves every container and constant.
_MAP_START = MappingStartEvent(None, _TAG + "map", True, flow_style=False)
_SEQ_START = SequenceStartEvent(None, _TAG + "seq", True, flow_style=False)
_MAP_END, _SEQ_END = MappingEndEvent(), SequenceEndEvent()


class _NotJson(Exception):
    """The data holds something `dump_yaml` leaves to PyYAML's representer."""


def _plain_tag(value: str) -> str:
    """The tag a plain scalar `value` reads back as: whether the emitter may leave it
    unquoted."""
    for tag, regexp in _RESOLVERS.get(value[:1], _WILDCARD):
        if regexp.match(value):
            return tag
    return _STR


def _scalar(tag: str, value: str) -> ScalarEvent:
    # What PyYAML's serializer sends for a node of `tag`: implicit (tag left out) when
    # the value reads back as that tag plain, or, for strings, quoted.
    return ScalarEvent(None, tag, (_plain_tag(value) == tag, tag == _STR), value)


# Keys and many values recur in every status file of a cycle; short ones are kept.
_short_str_event = functools.lru_cache(maxsize=4096)(functools.partial(_scalar, _STR))
_SHORT = 64
_NULL_EVENT, _TRUE, _FALSE = _scalar(_NULL, "null"), _scalar(_BOOL, "true"), _scalar(_BOOL, "false")


def _events(data: Any, out: list[Event], seen: set[int]) -> None:
    kind = type(data)
    if kind is str:
        out.append(_short_str_event(data) if len(data) <= _SHORT else _scalar(_STR, data))
    elif kind is dict or kind is list:
        if id(data) in seen:  # PyYAML writes an anchor and an alias
            raise _NotJson
        seen.add(id(data))
        if kind is dict:
            out.append(_MAP_START)
            for key, value in data.items():
                _events(key, out, seen)
                _events(value, out, seen)
            out.append(_MAP_END)
        else:
            out.append(_SEQ_START)
            for value in data:
                _events(value, out, seen)
            out.append(_SEQ_END)
    elif data is None:
        out.append(_NULL_EVENT)
    elif kind is bool:
        out.append(_TRUE if data else _FALSE)
    elif kind is int:
        out.append(_scalar(_INT, str(data)))
    elif kind is float:  # PyYAML's spelling of inf, nan and exponents
        out.append(_scalar(_FLOAT, _FLOATS.represent_float(data).value))
    else:
        raise _NotJson


def dump_yaml(data: Any) -> str:
    """Block-style YAML of `data`, keys in their order: the text of
    `yaml.dump(data, Dumper=SAFE_DUMPER, sort_keys=False, allow_unicode=True)`, faster.

    JSON-like data (dict, list, str, int, float, bool, None) goes to the emitter as
    the events PyYAML's representer and serializer would produce, without their
    per-value work (a node each, the resolver called from C twice per scalar): that
    was most of the time of a status file, written once per resource each cycle.
    Anything else (tuples, dates, subclasses, one container reached twice) is
    dumped by PyYAML itself, so the text is always PyYAML's.
    """
    events: list[Event] = [StreamStartEvent(), DocumentStartEvent(explicit=False)]
    try:
        _events(data, events, set())
    except _NotJson:
        return yaml.dump(data, Dumper=SAFE_DUMPER, sort_keys=False, allow_unicode=True)
    events += [DocumentEndEvent(explicit=False), StreamEndEvent()]
    text: str = yaml.emit(events, Dumper=SAFE_DUMPER, allow_unicode=True)  # no stream: a str
    return text


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
