"""The wait-for task: poll the resource's observed state until a condition holds.

Calls ``ctx.observe()`` every ``interval`` seconds; the condition is one dotted
field that equals one of the given values (rendered, so ``${params.os}`` works)
or exists / does not exist. Not holding yet is a `WaitingError` (no attempt
consumed); the deadline ends it: "condition X not met within Ns; last observed: …".
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.errors import PermanentError, WaitingError
from reconciler.execute.context import Outcome, RunState, TaskContext
from reconciler.execute.tasks.http import _MISSING, dotted
from reconciler.execute.template import render
from reconciler.model.tasks import WaitForTask
from reconciler.secrets import REDACTOR


def describe(task: WaitForTask, equals: list[Any] | None) -> str:
    cond = task.condition
    if equals is not None:
        return f"{cond.field} in {json.dumps(equals, default=str)}"
    return f"{cond.field} {'exists' if cond.exists else 'is absent'}"


async def attempt(task: WaitForTask, ctx: TaskContext, run: RunState) -> Outcome:
    if ctx.observe is None:
        raise PermanentError("wait-for task needs an observe callback in its context")
    cond = task.condition
    equals = (
        None
        if cond.equals is None
        else render(cond.equals, ctx.template_vars(), where="condition.equals", secrets="refuse")
    )
    text = describe(task, equals)
    run.activity = f"waiting for {text}"
    observed = dict(await ctx.observe())
    value = dotted(observed, cond.field)
    met = (value is not _MISSING) == cond.exists if equals is None else value in equals
    shown = "<absent>" if value is _MISSING else json.dumps(REDACTOR.data(value), default=str)
    ctx.log.event(f"observed {cond.field} = {shown}: {'met' if met else 'not met'}")
    if met:
        return Outcome(
            f"condition {text} met",
            {"field": cond.field, "value": REDACTOR.data(None if value is _MISSING else value)},
        )
    budget = round(run.deadline - run.started, 2)
    run.deadline_message = lambda _elapsed: (
        f"condition {text} not met within {budget:g}s; last observed: {cond.field}={shown}"
    )
    raise WaitingError(f"condition {text} not met yet", poll_after=task.interval)
