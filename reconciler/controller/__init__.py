"""controller: the steps chained into cycles, run on a schedule, behind an HTTP API;
and the other long-running process, `reconciler worker`.

Enters: `Settings`, the mirror, the journal; webhooks, API calls and provider
events. Leaves: cycles run (their results to the scheduler, metrics and
notifications), status commits through `source`, HTTP answers.

    controller.py         one cycle, the flow end to end
    branch_plans.py       the plans of watched branches (plans/<branch>.md)
    scheduler.py          when cycles and targeted reconciles run; operations
    cycle.py              the scopes of a cycle and the value each step returns
    planning.py           Git evidence gathered, then the pure gate
    leader.py             the lease: leader election in the shared database
    ledger_pg.py          the notification ledger kept in the shared database
    worker.py             `reconciler worker`: its mirror, trees, signals
    server.py             the HTTP API of `reconciler run`
    webhooks.py           verifying pushes; notify.py: notifications on transitions
    metrics.py            Prometheus metrics; progress.py: what a running plan shows
    terraform_backend.py  Terraform's http state backend
    ui/  portal/          the web UI; requests from portals

May import: every package but `cli`.
"""
