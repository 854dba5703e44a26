"""cli: the command line — flags -> calls into the packages, results -> exit codes.

Enters: argv and the environment. Leaves: exit codes, what people read (text or
JSON), files `reconciler init` and `reconciler schema` write.

    cli.py       the typer app and `main` (the console script, `python -m reconciler`)
    cliopts.py   which settings each command reads, and its help
    commands.py  what each command does: plan, apply, status, audit, demo
    scaffold.py  `reconciler init DIR`
    schema.py    the JSON Schemas of the format (`reconciler schema`)

May import: everything; nothing imports it but `reconciler.__main__`.
"""
