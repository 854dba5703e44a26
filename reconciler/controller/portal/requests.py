"""A portal's request, checked and turned into a document: the pure half of `POST /requests`.

Between the HTTP edge (`reconciler.controller.portal.api`) and Git
(`reconciler.controller.portal.gitops`).
The body `{kind, name, pipeline, provider, profiles, inputs, requester: {name, email},
reason}` becomes one document of the declared repository, at
`requests/<kind>/<name>.yaml`:

- `inputs` are the resource's `spec.params`; an input named like a field of the
  kind's spec (`size`, `image`, `region`, `zone` of an Instance, `type` of a
  Resource, `rack` of a Machine) sets that field too (an Instance needs a size and
  an image);
- `metadata.annotations` record the request id and the requester.

The checks here are the ones only a request has: the body's shape (messages in the
loader's words, never repeating a value), and the pipeline must be offered in the
catalog for that kind. Everything else is the loader's (`reconciler.load.load`, as
`reconciler validate` runs it, over the tracked branch's files plus this document):
its diagnostics in the new document are mapped back to the request's fields by line
(`field_errors`), so a portal can point at its form field — a secure input given by
value, a value not allowed, a name already declared, a profile or provider unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.controller.portal.catalog import offered
from reconciler.errors import Diagnostic
from reconciler.load.desired import Desired
from reconciler.load.explain import explain
from reconciler.model.common import Name
from reconciler.secrets import REDACTOR
from reconciler.source.writeback import format_message

RequestKind = Literal["Machine", "Instance", "Resource"]
REQUESTS_DIR = "requests"
SPEC_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Machine": ("rack",),
    "Instance": ("size", "image", "region", "zone"),
    "Resource": ("type",),
}
"""Inputs that also set a field of the kind's spec."""
ANNOTATION_ID = "reconciler/request-id"
ANNOTATION_BY = "reconciler/requested-by"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Requester(_Strict):
    """Who asks: the author of the request's commit."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^<>\r\n]+$")
    email: str = Field(max_length=254, pattern=r"^[^<>@\s]+@[^<>@\s]+$")

    @property
    def identity(self) -> str:
        return f"{self.name.strip()} <{self.email}>"


class RequestIn(_Strict):
    """The body of `POST /api/v1/requests`."""

    kind: RequestKind
    name: Name
    pipeline: Name
    provider: Name
    profiles: list[Name] = Field(default_factory=list)
    inputs: dict[str, Any] = Field(default_factory=dict)
    requester: Requester
    reason: str = Field(default="", max_length=4000)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one field of a request (`field` is "" for the whole request)."""

    field: str
    message: str
    at: str | None = None
    """`path:line:col` in the repository, for an error the loader found."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": REDACTOR.text(self.message)}
        if self.at:
            out["at"] = self.at
        return out


def _dotted(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_request(data: Any) -> RequestIn | list[FieldError]:
    """The request, or what is wrong with its shape (every field at once)."""
    if not isinstance(data, dict):
        return [FieldError("", "the request body is a JSON object")]
    try:
        return RequestIn.model_validate(data)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            for explained in explain(error, RequestIn):
                errors.append(FieldError(_dotted(explained.loc), explained.message))
        return errors


def catalog_errors(request: RequestIn, desired: Desired) -> list[FieldError]:
    """What the catalog and the tracked branch say against a request before any document."""
    errors = []
    offerings = offered(desired)
    pipeline = offerings.get(request.pipeline)
    if pipeline is None:
        names = ", ".join(offerings) or "none"
        where = (
            "is not offered in the catalog"
            if request.pipeline in desired.pipelines
            else ("is not declared")
        )
        errors.append(
            FieldError("pipeline", f"pipeline {request.pipeline!r} {where} (offered: {names})")
        )
    elif pipeline.spec.catalog is not None and request.kind not in pipeline.spec.catalog.kinds:
        kinds = ", ".join(pipeline.spec.catalog.kinds)
        errors.append(
            FieldError(
                "kind",
                f"pipeline {request.pipeline!r} is offered for {kinds}, not {request.kind}",
            )
        )
    return errors


def document_path(request: RequestIn) -> str:
    return f"{REQUESTS_DIR}/{request.kind.lower()}/{request.name}.yaml"


def document(request: RequestIn, request_id: str) -> dict[str, Any]:
    """The declared document a request becomes."""
    spec: dict[str, Any] = {"provider": request.provider, "pipeline": request.pipeline}
    if request.profiles:
        spec["profiles"] = list(request.profiles)
    for field in SPEC_FIELDS[request.kind]:
        if field in request.inputs:
            spec[field] = request.inputs[field]
    if request.inputs:
        spec["params"] = dict(request.inputs)
    return {
        "apiVersion": "reconciler/v1",
        "kind": request.kind,
        "metadata": {
            "name": request.name,
            "annotations": {
                ANNOTATION_ID: request_id,
                ANNOTATION_BY: request.requester.identity,
            },
        },
        "spec": spec,
    }


def render_document(request: RequestIn, request_id: str) -> str:
    """The document's YAML (block style, so every field is on a line of its own)."""
    head = f"# Requested through the reconciler API: request {request_id}\n"
    body = yaml.safe_dump(
        document(request, request_id), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return head + body


def _request_field(path: Sequence[str | int], kind: str) -> str:
    """The request field a place in its document comes from."""
    if not path or path[0] in ("apiVersion", "kind"):
        return "kind" if path else ""
    if path[0] == "metadata":
        return "name"
    if path[0] != "spec" or len(path) == 1:
        return ""
    head, rest = path[1], list(path[2:])
    if head == "params":
        return _dotted(["inputs", *rest])
    if head in SPEC_FIELDS[kind]:
        return f"inputs.{head}"
    if head == "profiles":
        return _dotted(["profiles", *rest])
    return str(head) if head in ("provider", "pipeline") else _dotted(["inputs", head, *rest])


def field_lines(text: str, kind: str) -> dict[int, str]:
    """Line number (1-based) -> the request field written on that line."""
    lines: dict[int, str] = {}
    root = yaml.compose(text)
    stack: list[tuple[Node, tuple[str | int, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, path = stack.pop()
        if isinstance(node, ScalarNode):  # the deepest value on a line names it
            lines[node.start_mark.line + 1] = _request_field(path, kind)
        else:
            lines.setdefault(node.start_mark.line + 1, _request_field(path, kind))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    child = (*path, key.value)
                    lines[key.start_mark.line + 1] = _request_field(child, kind)
                    stack.append((value, child))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return lines


def field_errors(
    diagnostics: Iterable[Diagnostic], path: str, text: str, kind: str
) -> list[FieldError]:
    """The loader's diagnostics as request field errors: those in the request's document by
    the field on their line (or the nearest line above), the others for the whole request."""
    lines = field_lines(text, kind)
    errors = []
    for diagnostic in diagnostics:
        at = f"{diagnostic.path}:{diagnostic.line}:{diagnostic.col}"
        if diagnostic.path != path:
            errors.append(FieldError("", diagnostic.message, at))
            continue
        above = [line for line in lines if line <= diagnostic.line]
        field = lines[max(above)] if above else ""
        errors.append(FieldError(field, diagnostic.message, at))
    return errors


def commit_message(request: RequestIn, request_id: str, token: str) -> str:
    """The request commit's message: what is asked, the reason, and the trailers
    `Requested-By`, `Request-Id` and `Request-Token` (the API token's name)."""
    subject = f"Request {request.key} (pipeline {request.pipeline})"
    reason = request.reason.replace("\r\n", "\n").replace("\r", "\n").strip()
    # The trailers are the message's last paragraph: a reason cannot add to them.
    body = f"{subject}\n\n{reason}" if reason else subject
    trailers = {
        "Requested-By": request.requester.identity,
        "Request-Id": request_id,
        "Request-Token": token,
    }
    return format_message(body, trailers)


__all__ = [
    "FieldError",
    "RequestIn",
    "Requester",
    "catalog_errors",
    "commit_message",
    "document",
    "document_path",
    "field_errors",
    "parse_request",
    "render_document",
]
