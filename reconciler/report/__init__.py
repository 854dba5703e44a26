"""report: a cycle's outcome -> each resource's status, and the files of one status commit.

Enters: the cycle's diff, plan and `ExecutionResult`, the previous statuses, the
time (passed in). Leaves: `ResourceStatus` values (`reconciler.model.status`) and
`{path: bytes}` (status/, reports/, audit/) with the commit message, which `source`
commits; and, reading back, the history `reconciler audit` shows.

    transitions.py  diff + plan + execution -> next statuses, drift, audit records
    provenance.py   who asked for a change, who merged it, who approved it
    report.py       the files of the one status commit
    yaml_text.py    their YAML text (`dump_yaml`: PyYAML's text, faster)
    audit.py        the history read back from the status branch

May import: every step below it (`source`, `load`, `observe`, `plan`, `execute`,
`model`) and `errors`, `settings`, `secrets`; never `controller` or `cli`.
"""
