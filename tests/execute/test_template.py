"""Templating: substitution in nested fields, types kept, missing names, secure params."""

from __future__ import annotations

import pytest

from reconciler.errors import PermanentError
from reconciler.execute.template import TemplateVars, render, render_str
from reconciler.secrets import REDACTOR

from .conftest import CANARY, CANARY_ENV

TV = TemplateVars(
    resource_key="Machine/m1",
    resource_kind="Machine",
    resource_name="m1",
    params={"os": "ubuntu", "size": 3, "tags": ["a", "b"], "token": f"env:{CANARY_ENV}"},
    secure_params=frozenset({"token"}),
)


def test_substitutes_recursively_keeping_types() -> None:
    value = {
        "name": "${resource.name}",
        "key": "${resource.key}",
        "kind": "${ resource.kind }",
        "size": "${params.size}",
        "text": "os=${params.os} size=${params.size} tags=${params.tags}",
        "list": ["${params.os}", 1, None, {"deep": "${params.tags}"}],
        "literal": "$${params.os} and $5",
    }
    assert render(value, TV, where="body") == {
        "name": "m1",
        "key": "Machine/m1",
        "kind": "Machine",
        "size": 3,
        "text": 'os=ubuntu size=3 tags=["a", "b"]',
        "list": ["ubuntu", 1, None, {"deep": ["a", "b"]}],
        "literal": "${params.os} and $5",
    }
    assert render_str("${params.size}", TV, where="argv[1]", secrets="refuse") == "3"


@pytest.mark.parametrize(
    ("text", "named"),
    [("${params.missing}", "params.missing"), ("x ${resource.uid}", "resource.uid"), ("${}", "")],
)
def test_missing_variable_is_permanent_and_named(text: str, named: str) -> None:
    with pytest.raises(PermanentError, match=r"body\.field.*\$\{" + named.replace(".", r"\.")):
        render({"field": text}, TV, where="body")


def test_secure_param_resolved_only_where_allowed_and_registered_for_redaction() -> None:
    assert render({"t": "Bearer ${params.token}"}, TV, where="body") == {"t": f"Bearer {CANARY}"}
    assert REDACTOR.text(f"got {CANARY}") == "got ***"
    with pytest.raises(PermanentError, match="secure param 'token'") as info:
        render_str("--token=${params.token}", TV, where="argv[2]", secrets="refuse")
    assert CANARY not in str(info.value)


def test_no_shell_interpretation() -> None:
    tv = TemplateVars("Machine/m1", "Machine", "m1", {"evil": "$(rm -rf /); `id` ${HOME}"})
    assert render_str("${params.evil}", tv, where="argv", secrets="refuse") == (
        "$(rm -rf /); `id` ${HOME}"
    )
