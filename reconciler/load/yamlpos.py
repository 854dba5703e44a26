"""YAML with positions: bytes -> plain data per document, plus where each value came from.

Used by `reconciler.load.load` (the first pure step of the flow). PyYAML's C parser
composes nodes that carry line and column; this module turns them into plain
Python data itself instead of PyYAML's constructor, because the constructor
hides what a controller must refuse: duplicate keys (PyYAML keeps the last one
silently), alias bombs (expanded without limit), unknown tags, and nesting deep
enough to exhaust the stack. Positions are only looked up again when a document
turned out to be wrong (`locate`), so a valid repository pays nothing for them.

No input raises anything but `YamlFault`: a scalar YAML resolves but cannot
construct (`2024-02-30`, `!!int twenty`, a 5,000-digit integer) is a fault at
that scalar, like any syntax error.
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
_NULL = "tag:yaml.org,2002:null"
_TAG_WORDS = {
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date or time",
    "tag:yaml.org,2002:binary": "base64 binary",
}
_CONSTRUCT_ERRORS = (
    ValueError,  # int("twenty"), date(2024, 2, 30), Python's int digit limit
    KeyError,  # !!bool maybe
    IndexError,  # an empty !!int
    AttributeError,  # !!timestamp yesterday: the constructor's regex did not match
    TypeError,
    OverflowError,
    yaml.constructor.ConstructorError,
)
_resolver = yaml.resolver.Resolver()
MAX_INT_DIGITS = 4300
"""Python's default int digit limit: a bigger integer could not even be printed in a message."""
_INT_BOUND = 10**MAX_INT_DIGITS


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
        self.declared: tuple[Declared, ...] = ()
        """Documents after a fault that ended the file, known by kind and name."""


Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    """One document of a file: its plain data, and the faults found building it.

    Each fault comes with the path of the value it left out of `data` (None when
    nothing was left out). With `whole`, the fault spoils the whole document and
    `data` is None.
    """

    index: int
    line: int
    col: int
    data: Any
    root: Node
    faults: tuple[tuple[YamlFault, Loc | None], ...] = ()
    whole: bool = False


def _mark(node: Node | yaml.Event) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


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
    """Turns one document's node graph into plain data, enforcing the limits.

    A fault in one value (a scalar that cannot be read, an unknown tag, a
    duplicate key) is collected in `faults` with the node to leave out, and the
    value reads as null, so the rest of the document is still checked and the
    document still known by its kind and name. Faults of the whole document
    (too deep, too many values, a value containing itself) raise `YamlFault`.
    """

    def __init__(self, limits: YamlLimits) -> None:
        self.limits = limits
        self.count = 0
        self.sizes: dict[int, int] = {}
        self.built: dict[int, Any] = {}
        self.active: set[int] = set()
        self.faults: list[tuple[YamlFault, Node | None]] = []
        self.faulted: set[int] = set()

    def _fault(self, at: Node, message: str, leave_out: Node | None) -> None:
        """A fault at `at`; `leave_out` is the value to drop (`at` itself for a bad value).

        Once per place: an alias of a bad scalar builds it again.
        """
        if id(at) not in self.faulted:
            self.faulted.add(id(at))
            self.faults.append((YamlFault(*_mark(at), message), leave_out))

    def _tick(self, node: Node, n: int = 1) -> None:
        self.count += n
        if self.count > self.limits.max_nodes:
            raise YamlFault(
                *_mark(node),
                f"document expands to more than {self.limits.max_nodes} values "
                "(alias expansion bomb?)",
            )

    def build(self, node: Node, depth: int = 0) -> Any:
        if isinstance(node, ScalarNode):
            # Most values: a scalar cannot contain itself, and an alias of one is one value
            # again, so it is built again rather than remembered.
            if depth > self.limits.max_depth:
                raise YamlFault(*_mark(node), f"nested deeper than {self.limits.max_depth} levels")
            self._tick(node)
            return node.value if node.tag == _STR else self._scalar(node)
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
        value: Any = None
        if node.tag not in _COLLECTION_TAGS:
            self._fault(node, f"unsupported tag {node.tag!r}", node)
        elif isinstance(node, SequenceNode):
            value = [self.build(item, depth + 1) for item in node.value]
        elif isinstance(node, MappingNode):
            value = self._mapping(node, depth)
        self.active.discard(key)
        self.sizes[key] = self.count - before
        self.built[key] = value
        return value

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self._fault(node, f"unsupported tag {node.tag!r}", node)
            return None
        try:
            value = _constructor.yaml_constructors[node.tag](_constructor, node)
        except _CONSTRUCT_ERRORS as exc:
            self._fault(node, _unreadable(node, exc), node)
            return None
        if isinstance(value, int) and abs(value) >= _INT_BOUND:
            self._fault(node, _too_large(node), node)
            return None
        return value

    def _mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first: dict[str, Node] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self._merge_source(value_node, depth))
                continue
            if not isinstance(key_node, ScalarNode):
                self._fault(key_node, "mapping keys must be plain scalars", None)
                continue
            # Keys are always the text as written: `on:` stays "on", not True.
            key = key_node.value
            if key in first:
                line, col = _mark(first[key])
                message = f"duplicate key {key!r} (first at line {line}, column {col})"
                # Which one was meant is unknown: leave the key out altogether.
                first_value = next(v for k, v in node.value if k is first[key])
                self._fault(key_node, message, first_value)
                continue
            first[key] = key_node
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
                self._fault(source, "a merge key (<<) takes a mapping", None)
                continue
            merged.update(value)
        return merged


def _paths_of(root: Node, wanted: set[int]) -> dict[int, Loc]:
    """Where in the data each wanted node is (keys and list indexes), first place found."""
    found: dict[int, Loc] = {}
    seen: set[int] = set()
    stack: list[tuple[Node, Loc]] = [(root, ())]
    while stack and len(found) < len(wanted):
        node, path = stack.pop()
        if id(node) in wanted and id(node) not in found:
            found[id(node)] = path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            stack.extend(
                (value, (*path, key.value))
                for key, value in node.value
                if isinstance(key, ScalarNode) and key.tag != _MERGE
            )
    return found


def _build(index: int, root: Node, limits: YamlLimits) -> YamlDocument:
    line, col = _mark(root)
    builder = _Builder(limits)
    try:
        data = builder.build(root)
    except YamlFault as whole:
        return YamlDocument(index, line, col, None, root, ((whole, None),), whole=True)
    if not builder.faults:
        return YamlDocument(index, line, col, data, root)
    paths = _paths_of(root, {id(n) for _, n in builder.faults if n is not None})
    faults: list[tuple[YamlFault, Loc | None]] = []
    for fault, node in builder.faults:
        path = paths.get(id(node)) if node is not None else None
        if node is not None and path and (fault.line, fault.col) == _mark(node):
            # A value that could not be read: say which, as every schema message does.
            fault = YamlFault(fault.line, fault.col, f"{_dotted(path)}: {fault.message}")
        faults.append((fault, path))
    return YamlDocument(index, line, col, data, root, tuple(faults))


def _dotted(path: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _implicit(node: ScalarNode) -> bool:
    """Whether YAML gave the scalar its type from how it looks (no `!!tag` written)."""
    resolved = _resolver.resolve(ScalarNode, node.value, (True, False))
    return not node.style and resolved == node.tag


def _too_large(node: ScalarNode) -> str:
    hint = "; quote it if it is text" if _implicit(node) else ""
    return f"integer with more than {MAX_INT_DIGITS} digits is too large{hint}"


def _unreadable(node: ScalarNode, exc: Exception) -> str:
    """Why a scalar could not be read, without repeating it (it may sit under a password key)."""
    if "Exceeds the limit" in str(exc):
        return _too_large(node)
    what = _TAG_WORDS.get(node.tag, node.tag)
    if _implicit(node):
        # Only dates can look right and still be wrong: 2024-02-30, 2024-13-01. The
        # reason names a part (day, month), never the value.
        reason = f" ({exc})" if isinstance(exc, ValueError) and len(str(exc)) < 40 else ""
        what = "a date" if node.tag.endswith("timestamp") else what
        return f"looks like {what} but is not one{reason}; quote it if it is text"
    short = node.tag.replace("tag:yaml.org,2002:", "!!")
    empty = "an empty value" if not node.value.strip() else "the value"
    return f"{empty} tagged {short} is not {what}; fix the value or remove the tag"


def _reader_fault(text: str, exc: yaml.reader.ReaderError) -> YamlFault:
    """A character YAML refuses (NUL, other control characters), at its own line and column.

    Found again in the text: the C reader counts its position in UTF-8 bytes, not characters.
    """
    found = yaml.reader.Reader.NON_PRINTABLE.search(text)
    offset = found.start() if found else min(max(exc.position, 0), len(text))
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    what = f"character U+{ord(found.group()):04X}" if found else "a character"
    return YamlFault(line, col, f"{what} is not allowed in YAML ({exc.reason})")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _empty(root: Node) -> bool:
    """An explicit empty document (a trailing `---`, or `--- ~`): nothing declared."""
    return isinstance(root, ScalarNode) and root.tag == _NULL


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
                mark = event.start_mark
                line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
                raise YamlFault(line, col, f"nested deeper than {limits.max_depth} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_documents(data: bytes, limits: YamlLimits = YamlLimits()) -> Iterator[YamlDocument]:
    """Each non-empty document of a multi-document file, with its faults.

    Raises YamlFault when the file cannot be read on from there: not UTF-8, too
    big, a syntax error, a character YAML refuses. The fault then lists the
    documents after it that still name their kind and name (`declared`).
    """
    text = decode(data, limits)
    composed: set[int] = set()
    try:
        _check_flow_depth(text, limits)
        for index, root in enumerate(yaml.compose_all(text, Loader=_Loader)):
            composed.add(index)
            if root is None or _empty(root):
                continue
            yield _build(index, root, limits)
    except (yaml.YAMLError, YamlFault, RecursionError) as exc:
        fault = _syntax_fault(text, exc, limits)
        # The parser stops at a syntax error by itself; the reader would stop at the
        # first character it refuses, so those read as U+FFFD for this scan.
        readable = text
        if isinstance(exc, yaml.reader.ReaderError):
            readable = yaml.reader.Reader.NON_PRINTABLE.sub("\ufffd", text)
        fault.declared = tuple(d for d in declared_names(readable) if d.index not in composed)
        raise fault from None


def _syntax_fault(text: str, exc: BaseException, limits: YamlLimits) -> YamlFault:
    if isinstance(exc, YamlFault):
        return exc
    if isinstance(exc, yaml.reader.ReaderError):
        return _reader_fault(text, exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return YamlFault(line, col, _one_line(message))
    if isinstance(exc, RecursionError):
        return YamlFault(1, 1, f"nested deeper than {limits.max_depth} levels")
    return YamlFault(1, 1, _one_line(f"invalid YAML: {exc}"))


@dataclass(frozen=True)
class Declared:
    """A document's kind and name, read from its events before a fault stopped the file."""

    index: int
    kind: str
    name: str
    line: int
    col: int


def declared_names(text: str) -> list[Declared]:
    """The top-level `kind` and `metadata.name` of each document, as far as `text` parses.

    For a file with a syntax error: the documents it holds are still known by
    name, so nothing reports them missing. Events only: nothing is built.
    """
    found: list[Declared] = []
    index, start = -1, (1, 1)
    stack: list[list[Any]] = []  # per open collection: [is_mapping, expecting_key, key, path]
    values: dict[tuple[str, ...], str] = {}

    def close_document() -> None:
        kind, name = values.get(("kind",)), values.get(("metadata", "name"))
        if index >= 0 and kind and name:
            found.append(Declared(index, kind, name, *start))

    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.DocumentStartEvent):
                index, start, values, stack = index + 1, _mark(event), {}, []
            elif isinstance(event, yaml.DocumentEndEvent):
                close_document()
                values = {}
            elif isinstance(event, yaml.CollectionStartEvent):
                path = _event_path(stack)
                stack.append([isinstance(event, yaml.MappingStartEvent), True, None, path])
            elif isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
            elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                top = stack[-1] if stack else None
                if top is not None and top[0] and top[1]:  # a key
                    top[1], top[2] = False, getattr(event, "value", None)
                    continue
                if isinstance(event, yaml.ScalarEvent) and top is not None and top[0]:
                    values[(*top[3], str(top[2]))] = event.value
                _event_path(stack)
    except (yaml.YAMLError, RecursionError):
        close_document()  # the document the fault is in, as far as it got
    return found


def _event_path(stack: list[list[Any]]) -> tuple[str, ...]:
    """The path of the value starting now; the enclosing mapping expects a key after it."""
    if not stack:
        return ()
    top = stack[-1]
    if not top[0]:
        return (*top[3], "-")
    top[1] = True
    return (*top[3], str(top[2]))


@dataclass(frozen=True)
class Location:
    line: int
    col: int
    path: tuple[str | int, ...]
    """The part of the requested location that exists in the document."""
    plain: str | None = None
    """The text as written when the location is a plain (unquoted) scalar: `on`, `1.10`."""


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
    plain = node.value if isinstance(node, ScalarNode) and not node.style else None
    return Location(line, col, tuple(found), plain)


def document_root(data: bytes, index: int, limits: YamlLimits = YamlLimits()) -> Node | None:
    """The node tree of document `index` of a file that parsed before (to locate an error)."""
    text = decode(data, limits)
    for i, root in enumerate(yaml.compose_all(text, Loader=_Loader)):
        if i == index:
            return root
    return None
