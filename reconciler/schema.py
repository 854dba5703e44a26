"""JSON Schemas of the document kinds, generated from the model (`reconciler schema`).

Editors validate sample-repo files through the `# yaml-language-server: $schema=`
line each starts with; CI checks that `schemas/` matches what this produces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.model import HUB_VERSION, KINDS

SCHEMA_BASE_URL = "https://reconciler.dev/schemas/"


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


def extra_schemas() -> dict[str, dict[str, Any]]:
    """Schemas of the controller's own outputs: the plan (`plan --output json`) and status."""
    from reconciler.plan import Plan
    from reconciler.status import ResourceStatus

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
    for file_name, schema in {**document_schemas(), **extra_schemas()}.items():
        path = out / file_name
        path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
