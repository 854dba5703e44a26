"""Command line: the contract users and CI rely on (see README, "Command line").

The outermost edge: parses flags into `Settings`, calls the flow's steps, turns
results into exit codes and one-line `path:line:col: message` errors (or JSON
with `--output json`). No logic of its own lives here.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from reconciler import __version__
from reconciler.cli.cliopts import epilog, flag_name, ignored, option_help
from reconciler.load.load import LoadResult, load_directory

if TYPE_CHECKING:
    from reconciler.execute.secret_check import Unresolvable
from reconciler.settings import Settings, load_settings

app = typer.Typer(
    name="reconciler",
    help="A GitOps controller for infrastructure: one Git repository in charge.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PENDING = 2
EXIT_USAGE = 64
"""A usage error (unknown option, an option the command ignores): nothing ran. Not 2,
which `apply` and `plan` use for "incomplete"/"changes pending"."""


class Output(StrEnum):
    text = "text"
    json = "json"


class PlanOutput(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _flag(setting: str) -> Any:
    return typer.Option(flag_name(setting), help=option_help(setting), rich_help_panel="Settings")


# The setting flags, accepted before the command (for every command that reads them)
# and after it (for the commands that read them).
Repo = Annotated[str | None, _flag("repo")]
Target = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        metavar="KIND/NAME",
        help="Only this resource and what it depends on; repeat for more",
    ),
]
Branch = Annotated[str | None, _flag("branch")]
StateDir = Annotated[Path | None, _flag("state_dir")]
StatusBranch = Annotated[str | None, _flag("status_branch")]
Interval = Annotated[str | None, _flag("interval")]
Listen = Annotated[str | None, _flag("listen")]
Config = Annotated[Path | None, _flag("config")]
DatabaseUrl = Annotated[str | None, _flag("database_url")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reconciler {__version__}")
        raise typer.Exit()


@app.callback()
def common(
    ctx: typer.Context,
    repo: Repo = None,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    interval: Interval = None,
    listen: Listen = None,
    database_url: DatabaseUrl = None,
    config: Config = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version")
    ] = False,
) -> None:
    """Settings are the same for every command: flag, then RECONCILER_* env, then --config.

    Setting flags go before or after the command; a flag the command does not read is
    an error. Exit codes: see the README's table (0 done, 1 failed, 2 incomplete or
    changes pending, 64 usage error).
    """
    given = {
        "repo": repo,
        "branch": branch,
        "state_dir": state_dir,
        "status_branch": status_branch,
        "interval": interval,
        "listen": listen,
        "database_url": database_url,
        "config": config,
    }
    ctx.obj = {k: v for k, v in given.items() if v is not None}


def _settings(ctx: typer.Context, command: str, **local: Any) -> Settings:
    """The command's settings from flags given before or after it (after wins), the
    environment and the config file; a flag the command does not read is a usage error."""
    before: dict[str, Any] = dict(ctx.obj or {})
    _no_settings(ctx, command)
    flags = {**before, **{k: v for k, v in local.items() if v is not None}}
    try:
        return load_settings(**flags)
    except (ValidationError, ValueError, OSError) as exc:
        typer.echo(f"reconciler: invalid settings: {_one_line(exc)}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    return str(exc).replace("\n", " ")


def _print_load_result(
    result: LoadResult, output: Output, missing: tuple[Unresolvable, ...] | None = None
) -> None:
    if output is Output.json:
        found: dict[str, object] = {
            "valid": result.ok,
            "files": result.files,
            "documents": result.documents,
            "resources": len(result.desired.resources) if result.desired else 0,
            "errors": [d.to_dict() for d in result.diagnostics],
        }
        if missing is not None:
            found["unresolvableSecrets"] = [m.to_dict() for m in missing]
        typer.echo(json.dumps(found, indent=2))
        return
    for diagnostic in result.diagnostics:
        typer.echo(str(diagnostic))
    for unresolved in missing or ():
        typer.echo(str(unresolved))
    if missing:
        typer.echo(f"{len(missing)} secret references cannot be resolved here", err=True)
    if result.ok:
        assert result.desired is not None
        typer.echo(
            f"valid: {result.documents} documents in {result.files} files, "
            f"{len(result.desired.resources)} resources",
            err=True,
        )
    else:
        files = len({d.path for d in result.diagnostics})
        typer.echo(f"invalid: {len(result.diagnostics)} errors in {files} files", err=True)


def _load_at_ref(path: Path, ref: str) -> LoadResult:
    """The documents of a Git repository at a revision, read from its trees (no checkout)."""
    import pygit2

    from reconciler.source.tree import ParseCache, TreeLister, load_revision

    try:
        repo = pygit2.Repository(str(path))
        sha = str(repo.revparse_single(ref).peel(pygit2.Commit).id)
    except (pygit2.GitError, KeyError, ValueError) as exc:
        typer.echo(f"{path}:1:1: cannot read revision {ref!r}: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    from functools import partial

    from reconciler.load.load import assemble
    from reconciler.providers import observed_fields

    checked = partial(assemble, observed_fields=observed_fields)
    return load_revision(
        repo, sha, lister=TreeLister(repo), cache=ParseCache(), assemble=checked
    ).result


@app.command(epilog=epilog("validate"))
def validate(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(help="A checkout of the declared repository (or a Git repo with --ref)"),
    ] = Path(),
    ref: Annotated[
        str | None, typer.Option(help="Validate this revision of the Git repository at PATH")
    ] = None,
    output: Annotated[Output, typer.Option(help="text or json")] = Output.text,
    check_secrets: Annotated[
        bool, typer.Option(help="Also name every secret reference this environment cannot resolve")
    ] = False,
) -> None:
    """Load and validate every document. Exit 0 valid, 1 invalid."""
    _no_settings(ctx, "validate")
    if not path.is_dir():
        typer.echo(f"{path}:1:1: not a directory", err=True)
        raise typer.Exit(EXIT_ERROR)
    if ref:
        result = _load_at_ref(path, ref)
    else:
        from reconciler.providers import observed_fields

        result = load_directory(path, observed_fields=observed_fields)
    missing = _unresolvable_secrets(result) if check_secrets else None
    _print_load_result(result, output, missing)
    raise typer.Exit(EXIT_OK if result.ok and not missing else EXIT_ERROR)


def _unresolvable_secrets(result: LoadResult) -> tuple[Unresolvable, ...]:
    """`--check-secrets`: the references of a valid revision this environment lacks."""
    from reconciler.execute.secret_check import declared_uses, environment, unresolvable

    if result.desired is None:
        return ()
    return unresolvable(declared_uses(result.desired), environment())


def _no_settings(ctx: typer.Context, command: str) -> None:
    """A usage error (exit 64) for each setting flag given before `command` it ignores."""
    errors = ignored(command, ctx.obj or {})
    for error in errors:
        typer.echo(f"reconciler {command}: {error}", err=True)
    if errors:
        raise typer.Exit(EXIT_USAGE)


def _need_repo(settings: Settings) -> None:
    if not settings.repo:
        typer.echo(
            "reconciler: no declared repository: give --repo URL|PATH or RECONCILER_REPO",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR)


@app.command(epilog=epilog("plan"))
def plan(
    ctx: typer.Context,
    output: Annotated[PlanOutput, typer.Option(help="text, json or markdown")] = PlanOutput.text,
    head: Annotated[
        str | None, typer.Option(help="Branch or revision to plan (default: the tracked branch)")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="Show only what HEAD adds to this branch or revision")
    ] = None,
    full_out: Annotated[
        Path | None,
        typer.Option(help="With markdown: write the full plan here when the summary is cut"),
    ] = None,
    target: Target = None,
    repo: Repo = None,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    database_url: DatabaseUrl = None,
    config: Config = None,
) -> None:
    """Show what would change. Exit 0 in sync, 2 changes pending, 1 error."""
    from reconciler.cli.commands import plan_revisions

    settings = _settings(
        ctx,
        "plan",
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        status_branch=status_branch,
        database_url=database_url,
        config=config,
    )
    _need_repo(settings)
    outcome = plan_revisions(settings, head=head, base=base, targets=target or ())
    if outcome.diagnostics:
        for diagnostic in outcome.diagnostics:
            typer.echo(str(diagnostic))
        typer.echo(f"invalid: {outcome.error}", err=True)
        raise typer.Exit(EXIT_ERROR)
    if outcome.plan is None:
        typer.echo(f"reconciler: {outcome.error}", err=True)
        raise typer.Exit(EXIT_ERROR)
    from reconciler.plan.render import render_json, render_markdown, render_text
    from reconciler.secrets import REDACTOR

    # Rendering is pure; secrets are redacted here, where the plan leaves the process.
    if output is PlanOutput.json:
        typer.echo(REDACTOR.text(render_json(outcome.plan)))
    elif output is PlanOutput.markdown:
        summary, full = render_markdown(outcome.plan)
        typer.echo(REDACTOR.text(summary))
        if full_out is not None:
            full_out.write_text(REDACTOR.text(full), encoding="utf-8")
    else:
        typer.echo(REDACTOR.text(render_text(outcome.plan)))
    raise typer.Exit(outcome.plan.exit_code)


@app.command(epilog=epilog("apply"))
def apply(
    ctx: typer.Context,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Run destructive actions without asking (off a terminal they are refused "
            "without it)",
        ),
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            help="On SIGTERM/SIGINT, how long tasks in flight may finish before the stop is "
            "immediate (a second signal stops at once)",
        ),
    ] = "30s",
    target: Target = None,
    repo: Repo = None,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    database_url: DatabaseUrl = None,
    config: Config = None,
) -> None:
    """One full cycle: pull, plan, execute, write status back.

    Exit 0 applied, every resource Ready (reported drift included); 1 failed (a task,
    an observation, the status commit, or the head could not be applied); 2
    incomplete (resources wait: blocked, dependency, change window, or the
    confirmation was refused); 130/143 interrupted.
    """
    from reconciler.cli.commands import run_apply

    settings = _settings(
        ctx,
        "apply",
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        status_branch=status_branch,
        database_url=database_url,
        config=config,
    )
    _need_repo(settings)
    from reconciler.model.common import parse_duration

    try:
        grace_seconds = parse_duration(grace)
    except ValueError as exc:
        typer.echo(f"reconciler: --grace: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    raise typer.Exit(
        run_apply(settings, yes=yes, ask=True, grace=grace_seconds, targets=target or ())
    )


@app.command(epilog=epilog("run"))
def run(
    ctx: typer.Context,
    repo: Repo = None,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    interval: Interval = None,
    listen: Listen = None,
    database_url: DatabaseUrl = None,
    config: Config = None,
) -> None:
    """The controller: scheduled cycles and the HTTP API until SIGTERM (then exit 0)."""
    from reconciler.controller.server import run_server

    settings = _settings(
        ctx,
        "run",
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        status_branch=status_branch,
        interval=interval,
        listen=listen,
        database_url=database_url,
        config=config,
    )
    _need_repo(settings)
    raise typer.Exit(run_server(settings))


@app.command(epilog=epilog("worker"))
def worker(
    ctx: typer.Context,
    site: Annotated[
        str | None,
        typer.Option(help="Run the tasks of providers of this site (Provider spec.site) only"),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=10_000, help="Tasks this worker runs at once")
    ] = 10,
    name: Annotated[
        str | None, typer.Option(help="This worker's name in claims and logs (default HOST:PID)")
    ] = None,
    state_dir: StateDir = None,
    database_url: DatabaseUrl = None,
    config: Config = None,
) -> None:
    """Claim tasks from the shared database and run them, until SIGTERM (then exit 0).

    Needs RECONCILER_DATABASE_URL and a leader with RECONCILER_EXECUTE=workers. Tasks of
    providers with spec.site run only on workers of that --site; the others on any.
    --state-dir holds this worker's task logs and provider records.
    """
    from reconciler.controller.worker import run_worker

    settings = _settings(
        ctx, "worker", state_dir=state_dir, database_url=database_url, config=config
    )
    if not settings.database_url:
        typer.echo(
            "reconciler worker: no database: give --database-url or RECONCILER_DATABASE_URL",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(run_worker(settings, site=site, concurrency=concurrency, name=name))


@app.command("migrate-state", epilog=epilog("migrate-state"))
def migrate_state(
    ctx: typer.Context,
    state_dir: StateDir = None,
    database_url: DatabaseUrl = None,
    config: Config = None,
) -> None:
    """Move a SQLite state directory's journal and memory into an empty PostgreSQL database.

    Stop the controller first (its lease is checked). Copies plans, tasks, outcomes,
    applied records and facts, the existing-resources guard, the notification ledger,
    the owner and the portal's requests; then renames journal.sqlite (and
    requests.sqlite) with the suffix .migrated. Exit 0 done, 1 refused (nothing changed).
    """
    from reconciler.cli.migrate_state import migrate_state as migrate
    from reconciler.errors import ReconcilerError

    settings = _settings(
        ctx, "migrate-state", state_dir=state_dir, database_url=database_url, config=config
    )
    if not settings.database_url:
        typer.echo(
            "reconciler migrate-state: no database: give --database-url or RECONCILER_DATABASE_URL",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR)
    try:
        done = migrate(settings)
    except (ReconcilerError, OSError, ValueError) as exc:
        typer.echo(f"reconciler migrate-state: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    counts = ", ".join(f"{n} {table}" for table, n in done.rows.items())
    typer.echo(f"migrated: {counts}; facts: {', '.join(done.facts) or 'none'}")
    typer.echo(f"the SQLite journal is now {done.renamed}")


@app.command(epilog=epilog("status"))
def status(
    ctx: typer.Context,
    resource: Annotated[str | None, typer.Argument(help="KIND/NAME for one resource")] = None,
    output: Annotated[Output, typer.Option(help="text or json")] = Output.text,
    repo: Repo = None,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    config: Config = None,
) -> None:
    """Resources and their conditions, as last committed to the status branch."""
    from reconciler.cli.commands import show_status

    settings = _settings(
        ctx,
        "status",
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        status_branch=status_branch,
        config=config,
    )
    _need_repo(settings)
    raise typer.Exit(show_status(settings, resource, as_json=output is Output.json))


class DiscoverOutput(StrEnum):
    yaml = "yaml"
    json = "json"
    text = "text"


@app.command(epilog=epilog("discover"))
def discover(
    ctx: typer.Context,
    provider: Annotated[
        str | None, typer.Option(help="Only this Provider (its metadata.name)")
    ] = None,
    output: Annotated[
        DiscoverOutput, typer.Option(help="yaml (documents to commit), json or text")
    ] = DiscoverOutput.yaml,
    repo: Repo = None,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    config: Config = None,
) -> None:
    """What providers see that nothing declares, as documents ready to commit.

    Never acts on anything. Exit 0, 1 when a provider could not list (the others are
    still shown) or the head cannot be loaded.
    """
    from reconciler.cli.commands import show_discovered

    settings = _settings(
        ctx,
        "discover",
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        status_branch=status_branch,
        config=config,
    )
    _need_repo(settings)
    raise typer.Exit(show_discovered(settings, provider, output.value))


@app.command(epilog=epilog("audit"))
def audit(
    ctx: typer.Context,
    resource: Annotated[str | None, typer.Argument(help="KIND/NAME for one resource")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only entries from this ISO date or time on")
    ] = None,
    output: Annotated[Output, typer.Option(help="text or json")] = Output.text,
    repo: Repo = None,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    config: Config = None,
) -> None:
    """Who asked for what (commit, author, approvers), what ran, what happened."""
    from reconciler.cli.commands import show_audit

    settings = _settings(
        ctx,
        "audit",
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        status_branch=status_branch,
        config=config,
    )
    _need_repo(settings)
    raise typer.Exit(show_audit(settings, resource, since=since, as_json=output is Output.json))


@app.command(epilog=epilog("demo"))
def demo(
    ctx: typer.Context,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Run destructive actions without asking")
    ] = False,
    branch: Branch = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    config: Config = None,
) -> None:
    """The embedded default: sample-repo in a local Git repository, the simulator, one cycle.

    Exit codes as for apply.
    """
    from reconciler.cli.demo import run_demo

    settings = _settings(
        ctx,
        "demo",
        branch=branch,
        state_dir=state_dir,
        status_branch=status_branch,
        config=config,
    )
    raise typer.Exit(run_demo(settings, yes=yes))


@app.command(epilog=epilog("schema"))
def schema(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Where to write the JSON Schemas")] = Path("schemas"),
    modelines: Annotated[
        Path | None,
        typer.Option(
            help="Point the modeline of every document file under this folder at "
            "OUT/reconciler.json (relative to each file)"
        ),
    ] = None,
) -> None:
    """Write the JSON Schemas (one per kind, all kinds combined, plan, status) to --out.

    reconciler.json validates any document, so one modeline serves files holding
    several kinds; --modelines writes it into each document file of a repository.
    """
    from reconciler.cli.schema import COMBINED, point_modelines, write_schemas

    _no_settings(ctx, "schema")
    for path in write_schemas(out):
        typer.echo(str(path))
    if modelines is not None:
        if not modelines.is_dir():
            typer.echo(f"{modelines}:1:1: not a directory", err=True)
            raise typer.Exit(EXIT_ERROR)
        for path in point_modelines(modelines, out / COMBINED):
            typer.echo(f"modeline: {path}", err=True)


@app.command(epilog=epilog("init"))
def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Where to create the repository")],
) -> None:
    """Scaffold a declared repository: a Provider, Stages, a Pipeline, Profiles, a Machine,
    a Policy, .reconcilerignore, the combined schema and editor settings.

    It validates and applies as is, against the simulator. Exit 1 if DIRECTORY exists
    and is not empty.
    """
    from reconciler.cli.scaffold import NotEmpty, scaffold

    _no_settings(ctx, "init")
    try:
        written = scaffold(directory)
    except (NotEmpty, OSError) as exc:
        typer.echo(f"reconciler: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    for path in written:
        typer.echo(str(path))
    typer.echo(
        f"next: reconciler validate {directory}; then commit it, push it to a bare repository "
        'and run: reconciler apply --repo URL (README, "Your first repository")',
        err=True,
    )


def main() -> None:
    """The `reconciler` program: usage errors exit 64, an interrupt 130."""
    try:
        code = app(prog_name="reconciler", standalone_mode=False)
    except typer.TyperException as exc:  # the parser's: no such option, missing argument
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        code = getattr(exc, "exit_code", EXIT_ERROR)
        code = EXIT_USAGE if code == 2 else code  # 2 means "incomplete" here
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
