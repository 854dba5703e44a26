"""Executor start-up: HTTP client and runners only for plans whose tasks need them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler.execute.engine import Executor
from reconciler.execute.journal import Journal
from reconciler.execute.runners import attempt_of
from reconciler.load.load import load_files
from reconciler.model.tasks import TASK_TYPES
from reconciler.observe.observe import observe
from reconciler.plan.gates import plan_values
from reconciler.providers import open_providers

PROVIDER_TASK = "{name: run, type: provider, action: install-os, args: {os: '${params.os}'}}"
HTTP_TASK = "{name: cmdb, type: http, method: PUT, url: 'http://127.0.0.1:9/ci'}"


def documents(task: str) -> dict[str, str]:
    """A simulator Provider, one stage running `task`, a pipeline of it, 3 machines."""
    head = "apiVersion: reconciler/v1\n"
    return {
        "providers.yaml": (
            f"{head}kind: Provider\nmetadata: {{name: sim}}\nspec: {{type: simulator}}\n"
        ),
        "stages.yaml": (
            f"{head}kind: Stage\nmetadata: {{name: install}}\nspec:\n"
            f"  converges: [params.os]\n  work:\n    - {task}\n"
        ),
        "pipelines.yaml": (
            f"{head}kind: Pipeline\nmetadata: {{name: node}}\nspec:\n"
            "  inputs:\n    - {name: os, required: true}\n  steps:\n    - stage: install\n"
        ),
        "machines.yaml": "---\n".join(
            f"{head}kind: Machine\nmetadata: {{name: m{i}}}\n"
            "spec: {provider: sim, pipeline: node, params: {os: ubuntu}}\n"
            for i in range(3)
        ),
    }


def executor_and_actions(tmp_path: Path, files: dict[str, str]):  # type: ignore[no-untyped-def]
    loaded = load_files({k: v.encode() for k, v in files.items()}, revision="test")
    assert loaded.ok and loaded.desired is not None, loaded.diagnostics[:3]
    providers, failed = open_providers(loaded.desired.providers, state_dir=tmp_path)
    assert not failed
    plan = plan_values(loaded.desired, asyncio.run(observe(loaded.desired, providers)))
    executor = Executor(
        journal=Journal.open(tmp_path),
        providers=providers,
        desired=loaded.desired,
        state_dir=tmp_path,
    )
    return executor, [a for a in plan.actions if a.runnable]


def test_a_plan_of_provider_tasks_needs_no_http_client(tmp_path: Path) -> None:
    executor, actions = executor_and_actions(tmp_path, documents(PROVIDER_TASK))
    assert len(actions) == 3
    assert not executor._sends_http(actions)


def test_a_plan_with_an_http_task_gets_the_shared_client(tmp_path: Path) -> None:
    executor, actions = executor_and_actions(tmp_path, documents(HTTP_TASK))
    assert executor._sends_http(actions)
    assert not executor._sends_http([])


def test_every_task_type_has_a_runner() -> None:
    for task_type in TASK_TYPES:
        assert callable(attempt_of(task_type))
