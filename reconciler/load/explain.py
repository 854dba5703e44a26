"""Pydantic's validation errors in the project's words: what is wrong, where, how to fix it.

Used by `reconciler.load.load`: in its first phase (one document), only for a document
that failed its schema, so a valid repository never comes here; `yaml11_hint`
also in its second phase, for params against a pipeline's inputs. Each pydantic
error becomes one or more `(loc, at_key, message)`: `loc` is the error's path
without pydantic's union tags, the message names the field as a dotted path and
never repeats a value that may be a secret. A value YAML 1.1 typed by surprise
(`on` read as true, `1.10` as 1.1, `0755` as 493) gets a hint to quote it.
"""

from __future__ import annotations

import datetime
import difflib
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from reconciler.model.common import NAME_PATTERN, is_secret_looking
from reconciler.model.kinds import SIGNER_REF_PATTERN
from reconciler.model.tasks import TASK_NAME_PATTERN, TASK_TYPES

Loc = tuple[str | int, ...]

INLINE_SECRET = "inline secret not allowed; give a reference, env:NAME or file:PATH"

_PATTERN_WORDS = {
    NAME_PATTERN: "lower-case letters, digits, '-' and '.', starting and ending with a letter "
    "or digit (a DNS-style name)",
    TASK_NAME_PATTERN: "letters, digits, '.', '_' and '-', starting with a letter or digit, "
    "at most 63 characters",
    r"^[a-z][a-z0-9-]*$": "lower-case letters, digits and '-', starting with a letter",
    r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$": "a MAC address such as 52:54:00:01:00:01",
    r"^([01]\d|2[0-3]):[0-5]\d$": "a time of day as HH:MM, 00:00 to 23:59 (quote it)",
    r"^([01]\d|2[0-4]):[0-5]\d$": "a time of day as HH:MM, 00:00 to 24:00 (quote it)",
    r"^[A-Za-z_][A-Za-z0-9_]*$": "letters, digits and '_', not starting with a digit",
    SIGNER_REF_PATTERN: "a reference: repo:PATH, file:PATH or env:NAME",
}

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping",
    "mapping_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_BOUNDS = {
    "greater_than": ("gt", "more than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


@dataclass(frozen=True)
class Explained:
    """One message, and where it points: `loc` in the document, at the key or the value."""

    loc: Loc
    message: str
    at_key: bool = False


def dotted(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def type_word(value: Any) -> str:
    """What a YAML value is, in YAML's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, datetime.date):
        return "a date"
    return "binary data" if isinstance(value, bytes) else type(value).__name__


def shown(value: Any, loc: Loc) -> str:
    """A value quoted in a message, unless it may be a secret or is too long to help."""
    if any(is_secret_looking(part) for part in loc):
        return "the value"
    if isinstance(value, str) and len(value) <= 64:
        return repr(value)
    if isinstance(value, bool | int | float) and len(repr(value)) <= 32:
        return repr(value)
    return "the value"


def yaml11_hint(plain: str | None, value: Any, expected: str, loc: Loc) -> str:
    """Why YAML typed a value as it did, when that is the surprise behind an error.

    `plain` is the scalar as written (None when it was quoted or is not a scalar);
    under a secret-looking key at `loc` there is no hint, as it would repeat the value.
    """
    if not plain or any(is_secret_looking(part) for part in loc):
        return ""
    quote = f"quote it ('{plain}')"
    if expected == "string":
        if isinstance(value, bool) and plain.lower() not in ("true", "false"):
            return f"; YAML reads {plain} as {str(value).lower()}: {quote} if you mean the text"
        if isinstance(value, int) and re.fullmatch(r"[-+]?0[0-7_]+", plain):
            return f"; YAML reads {plain} as the octal number {value}: {quote}"
        if isinstance(value, int) and ":" in plain:
            return f"; YAML reads {plain} as the base-60 number {value}: {quote}"
        if isinstance(value, float) and str(value) != plain:
            return f"; YAML reads {plain} as the number {value!r}: {quote}"
        if isinstance(value, datetime.date):
            return f"; YAML reads {plain} as a date: {quote}"
        if isinstance(value, bool | int | float) or value is None:
            return f"; {quote} if you mean the text"
    elif (
        expected in ("integer", "number")
        and isinstance(value, str)
        and re.fullmatch(r"[-+]?0[0-9_]+", plain)
    ):
        return f"; YAML reads {plain} as text because of the leading zero: write it without"
    return ""


def did_you_mean(word: Any, known: Sequence[str]) -> str:
    if not isinstance(word, str) or not known:
        return ""
    folded = [k for k in known if k.casefold() == word.casefold()]
    # `saturday` for `sat`: an option the word starts with is what was meant.
    prefixed = [k for k in known if len(k) >= 3 and word.casefold().startswith(k.casefold())]
    close = folded or prefixed or difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- where in the model an error is ------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """The type behind Annotated[...] and Optional[...]."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field(model: type[BaseModel], key: str | int) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _tagged(members: Sequence[Any], tag: str | int) -> Any:
    """The member of a discriminated union whose Literal field has the value `tag`."""
    for member in members:
        if _is_model(member):
            for info in member.model_fields.values():
                if get_origin(info.annotation) is Literal and tag in get_args(info.annotation):
                    return member
    return None


def walk(cls: type[BaseModel], loc: Loc) -> tuple[Loc, Any]:
    """`loc` without pydantic's union tags, and the model type found at its end (or None)."""
    tp: Any = cls
    clean: list[str | int] = []
    for element in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if _is_model(tp):
            tp = _field(tp, element)
        elif origin is list and isinstance(element, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin in (Union, types.UnionType):
            tp = _tagged(get_args(tp), element)
            continue  # a union's tag names the member, it is not a key in the document
        else:
            tp = None
        clean.append(element)
    return tuple(clean), _unwrap(tp)


def known_fields(tp: Any) -> list[str]:
    if not _is_model(tp):
        return []
    return [info.alias or name for name, info in tp.model_fields.items()]


# --- messages ----------------------------------------------------------------------------


def _quoted_list(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _prefixed(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _tags(tp: Any, field: str) -> list[str]:
    """The values a discriminated union's `field` may take, in the order of its members."""
    tags: list[str] = []
    members = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else ()
    for member in members:
        info = member.model_fields.get(field) if _is_model(member) else None
        if info is not None and get_origin(info.annotation) is Literal:
            tags += [str(t) for t in get_args(info.annotation)]
    return tags


def _union_tag(error: Any, clean: Loc, tp: Any) -> Explained:
    ctx = error.get("ctx") or {}
    field = str(ctx.get("discriminator", "type")).strip("'")
    expected = _quoted_list(str(ctx.get("expected_tags", ""))) or _tags(tp, field)
    what = "task type" if tuple(expected) == TASK_TYPES else field
    known = ", ".join(expected)
    if error["type"] == "union_tag_not_found":
        where = f" in {dotted(clean)}" if clean else ""
        return Explained(clean, f"missing required field {field!r}{where}; one of: {known}")
    tag = ctx.get("tag")
    hint = did_you_mean(tag, expected)
    return Explained(
        (*clean, field), _prefixed(dotted(clean), f"unknown {what} {tag!r}{hint}; known: {known}")
    )


def _wrong_value(error: Any, clean: Loc, plain: str | None) -> str:
    """A message for a value of the wrong type, form or size."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        hint = yaml11_hint(plain, value, "string", clean) if kind == "string_type" else ""
        return f"must be {expected}, got {type_word(value)}{hint}"
    if kind == "literal_error":
        options = _quoted_list(str(ctx.get("expected", ""))) or [str(ctx.get("expected", ""))]
        hint = did_you_mean(value, options)
        if not isinstance(value, str):
            return f"must be one of {', '.join(options)}, got {type_word(value)}"
        return f"{shown(value, clean)} is not one of {', '.join(options)}{hint}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        words = _PATTERN_WORDS.get(pattern)
        if words is None:
            return f"{shown(value, clean)} does not have the expected form ({pattern})"
        return f"{shown(value, clean)} must be {words}"
    if kind in ("string_too_short", "string_too_long"):
        bound = ctx.get("min_length", ctx.get("max_length"))
        word = "at least" if kind == "string_too_short" else "at most"
        return f"must be {word} {bound} characters"
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length", ctx.get("max_length"))
        word = "at least" if kind == "too_short" else "at most"
        return f"must have {word} {bound} item{'' if bound == 1 else 's'}"
    if kind in _BOUNDS:
        key, word = _BOUNDS[kind]
        return f"must be {word} {ctx.get(key)}"
    if kind.startswith("url_"):
        reason = f" ({ctx['error']})" if ctx.get("error") else ""
        return f"must be a URL such as https://host/path{reason}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def explain(error: Any, cls: type[BaseModel], plain_at: Any = lambda loc: None) -> list[Explained]:
    """What one pydantic error means; `plain_at(loc)` gives the scalar as written there."""
    clean, tp = walk(cls, tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        key = clean[-1] if clean else ""
        parent_loc = clean[:-1]
        _, parent = walk(cls, tuple(error["loc"])[:-1])
        where = f" in {dotted(parent_loc)}" if parent_loc else ""
        hint = did_you_mean(key, known_fields(parent))
        return [Explained(clean, f"unknown field {key!r}{where}{hint}", at_key=True)]
    if kind == "missing":
        key = clean[-1] if clean else ""
        where = f" in {dotted(clean[:-1])}" if clean[:-1] else ""
        return [Explained(clean, f"missing required field {key!r}{where}")]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return [_union_tag(error, clean, tp)]
    if kind == "inline_secret":
        ctx = error.get("ctx") or {}
        hint = str(ctx.get("hint", ""))
        return [
            Explained((*clean, *path), f"{dotted((*clean, *path))}: {INLINE_SECRET}{hint}", True)
            for path in ctx.get("paths", ())
        ]
    message = _wrong_value(error, clean, plain_at(clean))
    return [Explained(clean, _prefixed(dotted(clean), message))]
