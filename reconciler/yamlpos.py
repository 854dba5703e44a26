"""YAML with positions: bytes -> plain data per document, plus where each value came from.

Used by `reconciler.load` (the first pure step of the flow). PyYAML's C parser
composes nodes that carry line and column; this module turns them into plain
Python data itself instead of PyYAML's constructor, because the constructor
hides what a controller must refuse: duplicate keys (PyYAML keeps the last one
silently), alias bombs (expanded without limit), unknown tags, and nesting deep
enough to exhaust the stack. Positions are only looked up again when a document
turned out to be wrong (`locate`), so a valid repository pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = yaml.constructor.SafeConstructor()
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:binary",
}
_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


@dataclass(frozen=True)
class YamlLimits:
    """Bounds against hostile input; generous for any hand-written repository."""

    max_file_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 200_000
    """Values per file after alias expansion: a billion-laughs file stops here."""


class YamlFault(Exception):
    """A located problem in a YAML file (1-based line and column)."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.col = col
        self.message = message


@dataclass(frozen=True)
class YamlDocument:
    index: int
    line: int
    col: int
    data: Any
    root: Node


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def decode(data: bytes, limits: YamlLimits) -> str:
    if len(data) > limits.max_file_bytes:
        raise YamlFault(
            1, 1, f"file is {len(data)} bytes, over the limit of {limits.max_file_bytes} bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlFault(line, col, "file is not valid UTF-8") from None
    return text.removeprefix("\ufeff")


class _Builder:
    """Turns one document's node graph into plain data, enforcing the limits."""

    def __init__(self, limits: YamlLimits) -> None:
        self.limits = limits
        self.count = 0
        self.sizes: dict[int, int] = {}
        self.built: dict[int, Any] = {}
        self.active: set[int] = set()

    def _tick(self, node: Node, n: int = 1) -> None:
        self.count += n
        if self.count > self.limits.max_nodes:
            raise YamlFault(
                *_mark(node),
                f"document expands to more than {self.limits.max_nodes} values "
                "(alias expansion bomb?)",
            )

    def build(self, node: Node, depth: int = 0) -> Any:
        key = id(node)
        if key in self.sizes:
            # An alias: the same node again. Count what it expands to, build nothing new.
            self._tick(node, self.sizes[key])
            return self.built[key]
        if key in self.active:
            raise YamlFault(*_mark(node), "recursive alias: a value contains itself")
        if depth > self.limits.max_depth:
            raise YamlFault(*_mark(node), f"nested deeper than {self.limits.max_depth} levels")
        before = self.count
        self._tick(node)
        self.active.add(key)
        if isinstance(node, ScalarNode):
            value = self._scalar(node)
        elif isinstance(node, SequenceNode):
            self._check_tag(node)
            value = [self.build(item, depth + 1) for item in node.value]
        elif isinstance(node, MappingNode):
            self._check_tag(node)
            value = self._mapping(node, depth)
        else:  # pragma: no cover - the composer yields only these three
            raise YamlFault(*_mark(node), "unsupported YAML node")
        self.active.discard(key)
        self.sizes[key] = self.count - before
        self.built[key] = value
        return value

    def _check_tag(self, node: Node) -> None:
        if node.tag not in _COLLECTION_TAGS:
            raise YamlFault(*_mark(node), f"unsupported tag {node.tag!r}")

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag == _STR:
            return node.value
        if node.tag in _SCALAR_TAGS:
            return _constructor.yaml_constructors[node.tag](_constructor, node)
        raise YamlFault(*_mark(node), f"unsupported tag {node.tag!r}")

    def _mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        positions: dict[str, Node] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self._merge_source(value_node, depth))
                continue
            if not isinstance(key_node, ScalarNode):
                raise YamlFault(*_mark(key_node), "mapping keys must be plain scalars")
            # Keys are always the text as written: `on:` stays "on", not True.
            key = key_node.value
            if key in positions:
                first_line, first_col = _mark(positions[key])
                raise YamlFault(
                    *_mark(key_node),
                    f"duplicate key {key!r} (first at line {first_line}, column {first_col})",
                )
            positions[key] = key_node
            result[key] = self.build(value_node, depth + 1)
        if merged:
            return {**merged, **result}
        return result

    def _merge_source(self, node: Node, depth: int) -> dict[str, Any]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            value = self.build(source, depth + 1)
            if not isinstance(value, dict):
                raise YamlFault(*_mark(source), "a merge key (<<) takes a mapping")
            merged.update(value)
        return merged


_FLOW_BRACKETS_WORTH_A_DEPTH_SCAN = 1000


def _check_flow_depth(text: str, limits: YamlLimits) -> None:
    """Refuse deep flow nesting before composing: the C composer recurses and can crash.

    Block nesting is bounded by the file size limit (each level costs indentation);
    flow nesting (`[[[[`) is not, so files with many brackets get an event scan first.
    """
    if text.count("[") + text.count("{") < _FLOW_BRACKETS_WORTH_A_DEPTH_SCAN:
        return
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limits.max_depth:
                line, col = event.start_mark.line + 1, event.start_mark.column + 1
                raise YamlFault(line, col, f"nested deeper than {limits.max_depth} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_documents(data: bytes, limits: YamlLimits = YamlLimits()) -> Iterator[YamlDocument]:
    """Each non-empty document of a multi-document file; raises YamlFault on the first fault."""
    text = decode(data, limits)
    try:
        _check_flow_depth(text, limits)
        for index, root in enumerate(yaml.compose_all(text, Loader=_Loader)):
            if root is None:
                continue
            line, col = _mark(root)
            yield YamlDocument(index, line, col, _Builder(limits).build(root), root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlFault(
            mark.line + 1 if mark else 1, mark.column + 1 if mark else 1, message
        ) from None
    except yaml.YAMLError as exc:
        raise YamlFault(1, 1, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlFault(1, 1, f"nested deeper than {limits.max_depth} levels") from None


@dataclass(frozen=True)
class Location:
    line: int
    col: int
    path: tuple[str | int, ...]
    """The part of the requested location that exists in the document."""


def locate(root: Node, loc: Sequence[str | int], *, at_key: bool = False) -> Location:
    """The position of `loc` (keys and list indexes) inside a document's node tree.

    Elements that do not name a key or index (pydantic's union tags, a missing
    field) are skipped, so the answer is the deepest node that exists. With
    `at_key`, a final mapping key is located at the key rather than its value.
    """
    node = root
    found: list[str | int] = []
    line, col = _mark(root)
    for i, element in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value == str(element):
                    found.append(element)
                    if last and at_key:
                        line, col = _mark(key_node)
                        return Location(line, col, tuple(found))
                    node = value_node
                    line, col = _mark(node)
                    break
        elif (
            isinstance(node, SequenceNode)
            and isinstance(element, int)
            and 0 <= element < len(node.value)
        ):
            found.append(element)
            node = node.value[element]
            line, col = _mark(node)
    return Location(line, col, tuple(found))


def document_root(data: bytes, index: int, limits: YamlLimits = YamlLimits()) -> Node | None:
    """The node tree of document `index` of a file that parsed before (to locate an error)."""
    text = decode(data, limits)
    for i, root in enumerate(yaml.compose_all(text, Loader=_Loader)):
        if i == index:
            return root
    return None
