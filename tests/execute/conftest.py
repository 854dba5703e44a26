"""Real parts for the executor's tests: an HTTP API on 127.0.0.1 and a canary secret.

`api` is `tests.servers.fake_http.ApiServer` (a real HTTP server in a thread, the
long-running-operation protocol, a webhook receiver checking signatures made with
`HOOK_SECRET`, an echo of credentials), started for one test.

`TRICKY` is a second canary made of the characters encodings change (quote,
backslash, ``%``, ``+``, ``/``) behind a random head, so any of its prefixes is
recognisable; `secret_leaks` lists where it, its prefixes or its encodings appear.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.fake_http import ApiServer

ROOT = Path(__file__).resolve().parents[2]
CANARY = f"canary-{uuid.uuid4().hex}"
CANARY_ENV = "RECONCILER_TEST_CANARY"
HOOK_SECRET = f"hook-{uuid.uuid4().hex}"
HOOK_SECRET_ENV = "RECONCILER_TEST_HOOK_SECRET"
TRICKY = f'{uuid.uuid4().hex[:10]}"qu\\ote%2F+/sl{uuid.uuid4().hex[:16]}'
TRICKY_ENV = "RECONCILER_TEST_TRICKY"


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(hook_secret=HOOK_SECRET) as server:
        yield server


@pytest.fixture(autouse=True)
def canary_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(CANARY_ENV, CANARY)
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    monkeypatch.setenv(TRICKY_ENV, TRICKY)
    return CANARY


def secret_shapes(secret: str, *, user: str = "ada") -> dict[str, str]:
    """What betrays `secret`: its first and last 8 characters in every encoding it
    takes on the way out (and the basic-auth token made with `user`), by name."""
    import base64

    from reconciler.secrets import encoded_forms

    shapes = {f"head of {form!r}": form[:8] for form in encoded_forms(secret)}
    shapes |= {f"tail of {form!r}": form.rstrip("=")[-8:] for form in encoded_forms(secret)}
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
    shapes["basic-auth"] = basic[:12]
    shapes["whole"] = secret
    return shapes


def secret_leaks(secret: str, places: dict[str, bytes | str]) -> list[str]:
    """Every (place, shape) where a shape of `secret` appears."""
    found = []
    for where, content in places.items():
        data = content if isinstance(content, bytes) else content.encode()
        for name, shape in secret_shapes(secret).items():
            if shape.encode() in data:
                found.append(f"{where}: {name}")
    return found


def files_under(root: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_no_canary(*places: Any) -> None:
    """The canary secret is in none of these: texts, data, files or directories."""
    for place in places:
        if isinstance(place, Path):
            files = [p for p in place.rglob("*") if p.is_file()] if place.is_dir() else [place]
            for path in files:
                assert CANARY.encode() not in path.read_bytes(), f"canary leaked into {path}"
        else:
            text = place if isinstance(place, str) else json.dumps(place, default=str)
            assert CANARY not in text, f"canary leaked: {text[:200]}"


def child_env() -> dict[str, str]:
    """Environment for a child Python that imports this worktree's reconciler."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def make_ctx(**overrides: Any) -> Any:
    """A TaskContext for Machine/m1 with a canary-carrying secure param."""
    from reconciler.execute import TaskContext

    values: dict[str, Any] = {
        "resource_key": "Machine/m1",
        "resource_kind": "Machine",
        "resource_name": "m1",
        "idempotency_key": "key-" + uuid.uuid4().hex,
        "params": {"os": "ubuntu", "size": 3, "token": f"env:{CANARY_ENV}"},
        "secure_params": frozenset({"token"}),
        "plan_hash": "p" * 64,
        "stage": "install-os",
        "point": "work",
    }
    values.update(overrides)
    return TaskContext(**values)


def task(**fields: Any) -> Any:
    """A task model value from its YAML-shaped fields (camelCase accepted)."""
    from pydantic import TypeAdapter

    from reconciler.model.tasks import Task

    return TypeAdapter(Task).validate_python({"name": "t", **fields})
