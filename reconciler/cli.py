"""Command line: the contract users and CI rely on (see README, "Command line").

The outermost edge: parses flags into `Settings`, calls the flow's steps, turns
results into exit codes and one-line `path:line:col: message` errors (or JSON
with `--output json`). No logic of its own lives here.
"""

from __future__ import annotations

import gc
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from reconciler import __version__
from reconciler.load import LoadResult, load_directory

if TYPE_CHECKING:
    from reconciler.secret_check import Unresolvable
from reconciler.settings import Settings, load_settings

app = typer.Typer(
    name="reconciler",
    help="A GitOps controller for infrastructure: one Git repository in charge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK = 0
EXIT_ERROR = 1


EXIT_PENDING = 2


class Output(StrEnum):
    text = "text"
    json = "json"


class PlanOutput(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reconciler {__version__}")
        raise typer.Exit()


@app.callback()
def common(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option(help="Declared repository: URL or local path")] = None,
    branch: Annotated[str | None, typer.Option(help="Tracked branch [default: main]")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Mirror, journal, simulator state [default: .reconciler]")
    ] = None,
    status_branch: Annotated[
        str | None, typer.Option(help="Where status is committed [default: reconciler/status]")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="Time between cycles of run [default: 60s]")
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="HTTP API of run [default: 127.0.0.1:8080]")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML file holding any setting")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version")
    ] = False,
) -> None:
    """Settings are the same for every command: flag, then RECONCILER_* env, then --config."""
    try:
        ctx.obj = load_settings(
            repo=repo,
            branch=branch,
            state_dir=state_dir,
            status_branch=status_branch,
            interval=interval,
            listen=listen,
            config=config,
        )
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

    from reconciler.load import assemble
    from reconciler.providers import observed_fields

    checked = partial(assemble, observed_fields=observed_fields)
    return load_revision(
        repo, sha, lister=TreeLister(repo), cache=ParseCache(), assemble=checked
    ).result


@app.command()
def validate(
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
    from reconciler.secret_check import declared_uses, environment, unresolvable

    if result.desired is None:
        return ()
    return unresolvable(declared_uses(result.desired), environment())


def _need_repo(settings: Settings) -> None:
    if not settings.repo:
        typer.echo(
            "reconciler: no declared repository: give --repo URL|PATH or RECONCILER_REPO",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR)


@app.command()
def plan(
    ctx: typer.Context,
    output: Annotated[PlanOutput, typer.Option(help="text, json or markdown")] = PlanOutput.text,
    head: Annotated[
        str | None, typer.Option(help="Branch or revision to plan [default: the tracked branch]")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="Show only what HEAD adds to this branch or revision")
    ] = None,
    full_out: Annotated[
        Path | None,
        typer.Option(help="With markdown: write the full plan here when the summary is cut"),
    ] = None,
) -> None:
    """Show what would change. Exit 0 in sync, 2 changes pending, 1 error."""
    from reconciler.commands import plan_revisions

    settings = _settings(ctx)
    _need_repo(settings)
    outcome = plan_revisions(settings, head=head, base=base)
    if outcome.diagnostics:
        for diagnostic in outcome.diagnostics:
            typer.echo(str(diagnostic))
        typer.echo(f"invalid: {outcome.error}", err=True)
        raise typer.Exit(EXIT_ERROR)
    if outcome.plan is None:
        typer.echo(f"reconciler: {outcome.error}", err=True)
        raise typer.Exit(EXIT_ERROR)
    from reconciler.render import render_json, render_markdown, render_text

    if output is PlanOutput.json:
        typer.echo(render_json(outcome.plan))
    elif output is PlanOutput.markdown:
        summary, full = render_markdown(outcome.plan)
        typer.echo(summary)
        if full_out is not None:
            full_out.write_text(full, encoding="utf-8")
    else:
        typer.echo(render_text(outcome.plan))
    raise typer.Exit(outcome.plan.exit_code)


@app.command()
def apply(ctx: typer.Context) -> None:
    """One full cycle: pull, plan, execute, write status back. Exit 0 ok, 1 failed."""
    from reconciler.commands import run_apply

    settings = _settings(ctx)
    _need_repo(settings)
    raise typer.Exit(run_apply(settings))


@app.command()
def run(ctx: typer.Context) -> None:
    """The controller: scheduled cycles and the HTTP API until SIGTERM (then exit 0)."""
    from reconciler.server import run_server

    settings = _settings(ctx)
    _need_repo(settings)
    raise typer.Exit(run_server(settings))


@app.command()
def status(
    ctx: typer.Context,
    resource: Annotated[str | None, typer.Argument(help="KIND/NAME for one resource")] = None,
    output: Annotated[Output, typer.Option(help="text or json")] = Output.text,
) -> None:
    """Resources and their conditions, as last committed to the status branch."""
    from reconciler.commands import show_status

    settings = _settings(ctx)
    _need_repo(settings)
    raise typer.Exit(show_status(settings, resource, as_json=output is Output.json))


@app.command()
def audit(
    ctx: typer.Context,
    resource: Annotated[str | None, typer.Argument(help="KIND/NAME for one resource")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only entries from this ISO date or time on")
    ] = None,
    output: Annotated[Output, typer.Option(help="text or json")] = Output.text,
) -> None:
    """Who asked for what (commit, author, approvers), what ran, what happened."""
    from reconciler.commands import show_audit

    settings = _settings(ctx)
    _need_repo(settings)
    raise typer.Exit(show_audit(settings, resource, since=since, as_json=output is Output.json))


@app.command()
def demo(ctx: typer.Context) -> None:
    """The embedded default: sample-repo in a local Git repository, the simulator, one cycle."""
    from reconciler.commands import run_demo

    raise typer.Exit(run_demo(_settings(ctx)))


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Where to write the JSON Schemas")] = Path("schemas"),
) -> None:
    """Write one JSON Schema per document kind (and of the plan) to schemas/ or --out."""
    from reconciler.schema import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # Whatever the command leaves (an apply of 1,000 resources: their desired state,
        # plan and statuses) goes with the process; out of the collector's reach, the
        # interpreter's exit does not traverse it in full collections (0.1 s).
        gc.freeze()


if __name__ == "__main__":
    main()
