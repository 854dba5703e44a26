"""One module per task type; each exposes ``async def attempt(task, ctx, run) -> Outcome``.

`reconciler.execute.runners.run_task` calls an attempt repeatedly under
`with_retries` and the task's deadline; an attempt raises the typed errors of
`reconciler.errors` (temporary, waiting, permanent) and nothing else.
"""
