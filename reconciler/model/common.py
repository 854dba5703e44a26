"""Building blocks shared by every document kind: metadata, durations, secret references.

Part of the model (the single source of truth for the repository format). Pure
pydantic types, no I/O: resolving a secret reference happens in `reconciler.secrets`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

NAME_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
"""Lower-case DNS-style names, as Kubernetes uses: safe in paths, URLs and tags."""

SECRET_REF_PATTERN = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")

SECRET_LOOKING_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|credential)s?$",
    re.IGNORECASE,
)
"""Keys whose values must never be written inline in the repository."""


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
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Go-style string ("90s", "5m", "1h30m")."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
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
