"""JSON Schemas of the document kinds, generated from the model (`reconciler schema`).

One schema per kind, and `reconciler.json`: every kind in one (a union on `kind`),
which validates any document of a multi-document file. Editors validate files
through the `# yaml-language-server: $schema=` line each starts with
(`modeline_for`, `point_modelines`); CI checks that `schemas/` matches what this
produces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.model import HUB_VERSION, KINDS

SCHEMA_BASE_URL = "https://reconciler.dev/schemas/"
COMBINED = "reconciler.json"
MODELINE = "# yaml-language-server: $schema="


def document_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, one per kind of the current apiVersion."""
    schemas: dict[str, dict[str, Any]] = {}
    for kind, cls in KINDS[HUB_VERSION].items():
        schema = cls.model_json_schema(by_alias=True, mode="validation")
        file_name = f"{kind.lower()}.json"
        schemas[file_name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_BASE_URL + file_name,
            **schema,
        }
    return schemas


def combined_schema() -> dict[str, Any]:
    """Every kind in one schema: a document is exactly one of them, told by `kind`."""
    from typing import Annotated, Union

    from pydantic import Field, TypeAdapter

    kinds = tuple(KINDS[HUB_VERSION].values())
    union = Annotated[Union[kinds], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
    schema = TypeAdapter(union).json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_BASE_URL + COMBINED,
        "title": f"reconciler document ({', '.join(KINDS[HUB_VERSION])})",
        **schema,
    }


def modeline_for(document: Path, schema: Path) -> str:
    """The modeline that points `document` at `schema`, relative to the document."""
    import os

    relative = os.path.relpath(schema.resolve(), document.resolve().parent)
    return MODELINE + Path(relative).as_posix()


def point_modelines(root: Path, schema: Path) -> list[Path]:
    """Point every reconciler document file under `root` at `schema`: its modeline is
    replaced, or put first. Hidden paths and files holding no `apiVersion: reconciler/`
    document are left alone. The files changed."""
    changed = []
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        text = path.read_text(encoding="utf-8")
        if "apiVersion: reconciler/" not in text:
            continue
        lines = text.split("\n")
        line = modeline_for(path, schema)
        if lines[0].startswith(MODELINE):
            if lines[0] == line:
                continue
            lines[0] = line
        else:
            lines.insert(0, line)
        path.write_text("\n".join(lines), encoding="utf-8")
        changed.append(path)
    return changed


def extra_schemas() -> dict[str, dict[str, Any]]:
    """Schemas of the controller's own outputs: the plan (`plan --output json`) and status."""
    from reconciler.model.status import ResourceStatus
    from reconciler.plan.plan import Plan

    out: dict[str, dict[str, Any]] = {}
    for file_name, cls in (("plan.json", Plan), ("status.json", ResourceStatus)):
        out[file_name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_BASE_URL + file_name,
            **cls.model_json_schema(by_alias=True, mode="serialization"),
        }
    return out


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    every = {**document_schemas(), COMBINED: combined_schema(), **extra_schemas()}
    for file_name, schema in every.items():
        path = out / file_name
        path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
