"""plan: what to do about the difference between declared and observed, in which order.

Enters: `Desired` (`load`), `ObservedState` (`observe`), what was last applied
(the journal's record, as values). Leaves: a frozen `Plan` with a stable JSON form
and hash — the executor's input — and its renderings for people.

    diff.py        declared x observed x last applied -> Diff
    scope.py       what a cycle plans: incremental or full, failures held back
    plan.py        Diff -> Plan (order, dependencies, protection, budget)
    approvals.py   which gated actions are approved (pure, over evidence values)
    gates.py       the approval gate applied to a plan
    rollouts.py    canary and batches of a change
    render.py      a plan as text, Markdown, JSON

May import: `load`, `observe`, `model`, `errors`, `settings`, `secrets` (never
`source`, `providers`, `execute`; the exceptions of today are listed, with what
removes them, in tests/test_layers.py).
"""
