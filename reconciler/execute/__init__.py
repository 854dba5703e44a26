"""execute: runs a Plan's tasks — durably, bounded, retried, logged.

Step 6 of the flow (after plan, before report). This package is the lower half:
the orchestration (plan → waves → stages → tasks) sits on top and calls:

- `run_task(task, ctx) -> TaskResult` (`runners.py`): one task of any type, with
  retries/backoff (`retry.py`), polling of long-running operations and its deadline;
  `run_journaled(journal, task, ctx, state_dir=...)` adds the crash semantics.
- `TaskContext` / `TaskResult` (`context.py`): what a task runs with and returns.
- `Journal`, `idempotency_key` (`journal.py`): the SQLite journal; `Lease`
  (`lease.py`): one controller per state directory.
- `TaskLog` (`tasklog.py`): bounded, redacted per-task logs in the state dir.
- `template.py`: ``${params.X}`` / ``${resource.name}`` substitution, no shell.
- `tasks/`: one runner per task type (provider, http, command, ansible, wait-for,
  notify).

Enters: a `Plan` (values), the providers, the journal. Leaves: an
`ExecutionResult` and the journal's record of what ran. May import `model`,
`load`, `observe`, `plan`, `providers`, `errors`, `settings`, `secrets`; never
`report`, `controller` or `cli` (today's exceptions are listed in
tests/test_layers.py).
"""

from reconciler.execute.context import (
    Observe,
    Progress,
    ProviderAction,
    TaskContext,
    TaskResult,
)
from reconciler.execute.journal import (
    Journal,
    PlanRow,
    TaskRow,
    UnfinishedPlan,
    idempotency_key,
)
from reconciler.execute.lease import Lease, LeaseHeld
from reconciler.execute.retry import GaveUp, with_retries
from reconciler.execute.runners import run_journaled, run_task
from reconciler.execute.tasklog import NULL_LOG, TaskLog, task_log_path

__all__ = [
    "NULL_LOG",
    "GaveUp",
    "Journal",
    "Lease",
    "LeaseHeld",
    "Observe",
    "PlanRow",
    "Progress",
    "ProviderAction",
    "TaskContext",
    "TaskLog",
    "TaskResult",
    "TaskRow",
    "UnfinishedPlan",
    "idempotency_key",
    "run_journaled",
    "run_task",
    "task_log_path",
    "with_retries",
]
