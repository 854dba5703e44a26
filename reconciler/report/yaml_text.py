"""The YAML text of the files the status commit carries: `dump_yaml`.

Part of report, at the edge where values become the bytes of the status branch
(each resource's status file, the controller's, the reports). Pure: data in, text out.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import yaml
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

if TYPE_CHECKING:
    from reconciler.model.status import ResourceStatus

# libyaml's emitter when PyYAML has it: the same text, several times faster.
SAFE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

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


def status_yaml(status: ResourceStatus) -> str:
    """A resource's status file."""
    return dump_yaml(status.to_data())


__all__ = ["SAFE_DUMPER", "dump_yaml", "status_yaml"]
