"""The service catalog: the pipelines a revision offers to requesters, as JSON for portals.

A pure step over a loaded `Desired` (the tracked branch's head), served by
`GET /api/v1/catalog`. A Pipeline opts in with `spec.catalog: {title, description,
kinds, tags}`; each offering carries its inputs (its own, then those of the
pipelines it includes, as the loader checks them) as a JSON Schema a portal
renders its form from unchanged:

- `type` from the input's type (`list` is an array, `map` an object), `enum` from
  `allowed`, `default`, `description`;
- `required`: required inputs no other layer sets (the input's default, the params
  of the pipeline or what it includes, the `global` profile) — a profile the
  requester picks may still set one; the request is then valid all the same;
- secure inputs are references: a string matching `env:NAME` or `file:PATH`,
  `writeOnly`, marked `x-reconciler-secure`; a value is refused;
- `additionalProperties: false` when the pipeline declares inputs (the loader
  refuses any other param then).

Besides the offerings: the profiles (but `global`, which applies to every
resource) and providers a request may name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.load.desired import GLOBAL_PROFILE, Desired, Resolver
from reconciler.model import Input
from reconciler.model.common import SECRET_REF_PATTERN
from reconciler.model.kinds import Pipeline

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "list": "array",
    "map": "object",
}


def input_schema(item: Input) -> dict[str, Any]:
    """One input as a JSON Schema property."""
    schema: dict[str, Any] = {"title": item.name}
    if item.description:
        schema["description"] = item.description
    if item.secure:
        schema.update(
            type="string",
            pattern=SECRET_REF_PATTERN.pattern,
            writeOnly=True,
            **{"x-reconciler-secure": True},
        )
        said = item.description.strip().rstrip(".")
        schema["description"] = (f"{said}. " if said else "") + (
            "A secret: give a reference (env:NAME or file:PATH), never the value."
        )
        return schema
    schema["type"] = _JSON_TYPES[item.type]
    if item.allowed is not None:
        schema["enum"] = list(item.allowed)
    if item.default is not None:
        schema["default"] = item.default
    return schema


def _set_elsewhere(desired: Desired, chain: tuple[str, ...]) -> set[str]:
    """Params set by a layer every resource of the pipeline has: the pipelines' own params
    and the `global` profile."""
    names: set[str] = set()
    for name in chain:
        names.update(desired.pipelines[name].spec.params)
    global_profile = desired.profiles.get(GLOBAL_PROFILE)
    if global_profile is not None:
        names.update(global_profile.spec.params)
    return names


def inputs_schema(desired: Desired, resolver: Resolver, pipeline: str) -> dict[str, Any]:
    """The JSON Schema of a request's `inputs` for `pipeline`."""
    inputs = resolver.inputs(pipeline)
    elsewhere = _set_elsewhere(desired, resolver.pipeline_chain(pipeline))
    required = [
        name
        for name, item in inputs.items()
        if item.required and item.default is None and name not in elsewhere
    ]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": {name: input_schema(item) for name, item in inputs.items()},
        "required": required,
        "additionalProperties": not inputs,
    }


def offering(desired: Desired, resolver: Resolver, name: str, pipeline: Pipeline) -> dict[str, Any]:
    catalog = pipeline.spec.catalog
    assert catalog is not None
    return {
        "name": name,
        "title": catalog.title,
        "description": catalog.description or pipeline.spec.description,
        "kinds": list(catalog.kinds),
        "tags": list(catalog.tags),
        "inputs": inputs_schema(desired, resolver, name),
    }


def offered(desired: Desired) -> Mapping[str, Pipeline]:
    """The pipelines in the catalog, by name."""
    return {n: p for n, p in sorted(desired.pipelines.items()) if p.spec.catalog is not None}


def build_catalog(desired: Desired) -> dict[str, Any]:
    """What `GET /api/v1/catalog` answers for a revision. Pure."""
    resolver = Resolver(desired.pipelines, desired.stages, desired.profiles)
    return {
        "revision": desired.revision,
        "pipelines": [
            offering(desired, resolver, name, pipeline)
            for name, pipeline in offered(desired).items()
        ],
        "profiles": [
            {"name": name, "description": profile.spec.description}
            for name, profile in sorted(desired.profiles.items())
            if name != GLOBAL_PROFILE
        ],
        "providers": [
            {"name": name, "type": provider.spec.type}
            for name, provider in sorted(desired.providers.items())
        ],
    }


__all__ = ["build_catalog", "input_schema", "inputs_schema", "offered"]
