"""Building blocks shared by every document kind: metadata, durations, secret references.

Part of the model (the single source of truth for the repository format). Pure
pydantic types, no I/O: resolving a secret reference happens in `reconciler.secrets`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
"""Lower-case DNS-style names, as Kubernetes uses: safe in paths, URLs and tags."""

SECRET_REF_PATTERN = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")

_SECRET_STEMS = r"pass(?:word|wd|phrase)|secret|token|credential|api[-_.]?key|private[-_.]?key"
SECRET_LOOKING_KEY = re.compile(
    rf"(?i:{_SECRET_STEMS})"
    # `pass` and `pwd` only as a word of their own: db_pass, dbPass, DB_PASS, not passthrough
    r"|(?<![A-Za-z])(?:pass|pwd)(?![a-z])"
    r"|(?:Pass|Pwd)(?![a-z])"
    r"|(?<![A-Za-z])(?:PASS|PWD)(?![A-Za-z])"
)
"""Keys whose values must never be written inline in the repository.

Matches anywhere in the key, in any case, across camelCase, snake_case and
kebab-case: `secretAccessKey`, `db_password`, `apiToken`, `privateKeyPem`, `X-Api-Key`.
"""

Loc = tuple[str | int, ...]


def is_secret_looking(key: object) -> bool:
    return isinstance(key, str) and SECRET_LOOKING_KEY.search(key) is not None


def _inline_values(data: Any, loc: Loc) -> Iterator[Loc]:
    """Every value under a secret-looking key that is written inline (not a reference)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _inline_values(value, (*loc, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _inline_values(item, (*loc, i))
    elif data is not None and not isinstance(data, bool) and not by_reference(data):
        # A boolean or null says nothing secret (`tokenRequired: true`); anything else may.
        yield loc


_PARAM_TEMPLATE = re.compile(r"\$\{params\.[A-Za-z0-9_.-]+\}")
_AUTH_SCHEME = re.compile(r"\s*(?:[A-Za-z]+\s+)?")


def by_reference(value: object) -> bool:
    """A reference, or a task field taking a param (`${params.token}`, `Bearer ${params.t}`).

    The param itself is checked where it is set (a secure input takes a reference).
    """
    if is_secret_ref(value):
        return True
    if not isinstance(value, str) or not _PARAM_TEMPLATE.search(value):
        return False
    return _AUTH_SCHEME.fullmatch(_PARAM_TEMPLATE.sub("", value)) is not None


def inline_secrets(data: Any, loc: Loc = ()) -> Iterator[Loc]:
    """Paths (keys and list indexes from `loc`) of secrets written inline in `data`.

    Under a secret-looking key, every value must be a reference (env:NAME or
    file:PATH), however deep: `tokens: [abc]` and `credentials: {user: x}` are refused.
    """
    if isinstance(data, dict):
        for key, value in data.items():
            if is_secret_looking(key):
                yield from _inline_values(value, (*loc, key))
            else:
                yield from inline_secrets(value, (*loc, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from inline_secrets(item, (*loc, i))


def inline_secret_error(paths: list[Loc], hint: str = "") -> PydanticCustomError:
    """The `inline_secret` validation error: the paths inside the field, never the values.

    The loader reads `ctx["paths"]` to point at each key rather than at the whole field.
    """
    return PydanticCustomError(
        "inline_secret",
        "inline secret not allowed at {where}; give a reference, env:NAME or file:PATH{hint}",
        {"where": ", ".join(".".join(map(str, p)) for p in paths), "paths": paths, "hint": hint},
    )


T = TypeVar("T")


def refuse_inline_secrets(data: T) -> T:
    """A field validator's body: `data` unchanged, or an `inline_secret` error."""
    paths = list(inline_secrets(data))
    if paths:
        raise inline_secret_error(paths)
    return data


class Strict(BaseModel):
    """Base of every document part: unknown fields are errors, camelCase in YAML, frozen."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


def _check_secret_ref(value: str) -> str:
    if not SECRET_REF_PATTERN.match(value):
        raise ValueError("inline secret not allowed: give a reference, env:NAME or file:PATH")
    return value


SecretRef = Annotated[
    str,
    AfterValidator(_check_secret_ref),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": SECRET_REF_PATTERN.pattern,
            "description": "A secret by reference: env:NAME or file:PATH, never the value",
        }
    ),
]


def is_secret_ref(value: object) -> bool:
    return isinstance(value, str) and bool(SECRET_REF_PATTERN.match(value))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d))+)$"
"""Seconds alone ("3600", as an environment variable gives it) or a Go-style string."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Go-style string ("90s", "5m", "1h30m")."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        return float(value.strip())
    if isinstance(value, str) and re.match(DURATION_PATTERN, value.strip()):
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value.strip()))
    raise ValueError(f"not a duration: {value!r} (use seconds or a string like 30s, 5m, 1h)")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "Seconds, or a string such as 30s, 5m, 1h30m",
        }
    ),
]

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=253)]


class Metadata(Strict):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class RetryPolicy(Strict):
    """Exponential backoff with jitter, bounded in attempts."""

    attempts: int = Field(default=3, ge=1, le=100)
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 60.0
    multiplier: float = Field(default=2.0, ge=1.0)


class Selector(Strict):
    """Chooses resources by `Kind/name` (or bare name) and/or by labels (all must match)."""

    name: str | None = None
    match_labels: dict[str, str] = Field(default_factory=dict)
