"""controller: the steps chained into cycles, run on a schedule, behind an HTTP API.

Enters: `Settings`, the mirror, the journal; webhooks, API calls and provider
events. Leaves: cycles run (their results to the scheduler, metrics and
notifications), status commits through `source`, HTTP answers.

    controller.py         one cycle, the flow end to end
    branch_plans.py       the plans of watched branches (plans/<branch>.md)
    scheduler.py          when cycles and targeted reconciles run; operations
    leader.py             leader election in the shared database
    server.py             the HTTP API of `reconciler run`
    webhooks.py           verifying pushes; notify.py: notifications on transitions
    metrics.py            Prometheus metrics; progress.py: what a running plan shows
    terraform_backend.py  Terraform's http state backend
    ui/  portal/          the web UI; requests from portals

May import: every package but `cli`.
"""
