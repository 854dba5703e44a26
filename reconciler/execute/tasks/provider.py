"""The provider task: delegate an action to the resource's provider.

The orchestrator supplies ``ctx.provider_action(action, args, idempotency_key)``,
which starts the action and polls it until done (and journals its operation id).
Args are rendered here; secure params are resolved because the provider is the
edge that uses them. The provider's answer is logged (redacted) and becomes the
task's outputs; its ``operationId`` becomes the task's operation id.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.errors import PermanentError
from reconciler.execute.context import Outcome, RunState, TaskContext
from reconciler.execute.template import render
from reconciler.model.tasks import ProviderActionTask
from reconciler.secrets import REDACTOR


async def attempt(task: ProviderActionTask, ctx: TaskContext, run: RunState) -> Outcome:
    if ctx.provider_action is None:
        raise PermanentError("provider task needs a provider_action callback in its context")
    args: dict[str, Any] = render(task.args, ctx.template_vars(), where="args", secrets="resolve")
    run.activity = f"running provider action {task.action}"
    ctx.log.event(f"provider action {task.action} {json.dumps(args, default=str)}")
    result = dict(await ctx.provider_action(task.action, args, ctx.idempotency_key))
    ctx.log.event(f"provider answered {json.dumps(result, default=str)}")
    operation = result.get("operationId") or result.get("operation_id")
    if operation is not None and run.operation_id != str(operation):
        run.operation_id = str(operation)
    return Outcome(f"provider action {task.action} done", REDACTOR.data(result))
