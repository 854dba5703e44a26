"""What each command does, behind `cli.py`'s flag parsing: plan, apply, status, demo.

The outer edge next to the CLI: composes the flow's steps (source, load,
observe, plan, controller) for one invocation and prints what people read. Each
function returns the command's exit code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pygit2

from reconciler.controller.controller import WRITE_FAILURE, Controller, CycleResult
from reconciler.controller.cycle import INCREMENTAL, Targeted
from reconciler.controller.progress import Progress
from reconciler.errors import Diagnostic, ReconcilerError, TemporaryError
from reconciler.execute.journal import LeaseHeld
from reconciler.execute.store import open_reader
from reconciler.load.desired import Desired, subset, with_dependencies
from reconciler.load.secret_check import declared_uses, unresolvable
from reconciler.load.secret_check import environment as secret_environment
from reconciler.observe.observe import observe_desired
from reconciler.plan.diff import LastApplied
from reconciler.plan.gates import PlanContext, judge_rules, plan_revision
from reconciler.plan.plan import Operation, Plan, relative_to
from reconciler.plan.render import render_text, summary_line
from reconciler.report.report import WriteFailure
from reconciler.report.status import ResourceStatus
from reconciler.report.transitions import failed_stages, records_from_statuses
from reconciler.settings import Settings
from reconciler.source import DeclaredSource, Stale, StatusWriter
from reconciler.source.declared import REMOTE_REFUSED, REMOTE_UNAVAILABLE
from reconciler.source.readback import (
    ControllerShown,
    read_controller,
    read_statuses,
    unreadable_condition,
)
from reconciler.source.tree import load_revision

EXIT_OK, EXIT_ERROR, EXIT_INCOMPLETE = 0, 1, 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

FAILED_PHASES = frozenset({"Failed", "Unknown"})
WAITING_PHASES = frozenset({"Stalled", "Pending", "Provisioning"})


def apply_exit_code(result: CycleResult) -> int:
    """`apply`'s exit status from what the cycle did. Pure.

    1 failed: the head could not be applied (invalid, unreachable), the status commit
    could not be written, a task failed, or an observation failed (a resource Unknown).
    2 incomplete: nothing failed, but something waits (blocked by policy or approval,
    a dependency not ready, a change window, stopped, or the confirmation refused).
    0: the head was applied and every resource is Ready (drift reported with selfHeal
    off is not a failure: it is what the policy asks for).
    """
    source = result.source
    if source.revision is None or source.stale is not None or result.write_error is not None:
        return EXIT_ERROR
    executions = [e for e in (result.resumed, result.execution) if e is not None]
    if any(e.failed for e in executions):
        return EXIT_ERROR
    phases = {status.phase for status in result.statuses.values()}
    if phases & FAILED_PHASES:
        return EXIT_ERROR
    # An observation that failed: its resource's action is `unknown` (its status is
    # Unknown, ObservationFailed: nothing may run on what could not be seen), or a
    # provider failed as a whole.
    plan = result.plan
    if plan is not None and (
        plan.unknown_providers or any(a.operation is Operation.UNKNOWN for a in plan.actions)
    ):
        return EXIT_ERROR
    if phases & WAITING_PHASES:
        return EXIT_INCOMPLETE
    # What waits outside the declared resources' statuses: an orphan's blocked
    # decommission, an action skipped (change window) or never started (stopped).
    if plan is not None and any(a.blocked for a in plan.actions):
        return EXIT_INCOMPLETE
    # Runnable actions that did not run (the confirmation was refused): an orphan's
    # decommission has no status saying Pending.
    if plan is not None and result.execution is None and any(a.runnable for a in plan.actions):
        return EXIT_INCOMPLETE
    if result.execution is not None and (
        result.execution.stopped
        or any(o.result == "skipped" for o in result.execution.outcomes.values())
    ):
        return EXIT_INCOMPLETE
    return EXIT_OK


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    error: str = ""


def _desired_at(
    source: DeclaredSource, ref: str
) -> tuple[Desired | None, tuple[Diagnostic, ...], str]:
    repo = source.repo
    for candidate in (f"refs/heads/{ref}", ref):
        try:
            sha = str(repo.revparse_single(candidate).peel(pygit2.Commit).id)
            break
        except (KeyError, ValueError, pygit2.GitError):
            continue
    else:
        return None, (), f"revision {ref!r} not found"
    result = load_revision(
        repo, sha, lister=source.lister, cache=source.cache, assemble=source.assemble_other
    ).result
    if not result.ok:
        return None, result.diagnostics, f"revision {sha[:12]} is invalid"
    from dataclasses import replace

    return replace(result.desired, revision=sha), (), ""


def journal_records(settings: Settings, fallback: dict[str, LastApplied]) -> dict[str, LastApplied]:
    """What was applied per resource: the journal's records where there is a journal
    (read-only: the state directory's, or the database's), the status branch's projection
    for the others."""
    journal = open_reader(settings)
    if journal is None:
        return fallback
    try:
        found = {k: LastApplied.from_dict(v) for k, v in journal.applied().items()}
    finally:
        journal.close()
    return {**fallback, **found}


def journal_fact(settings: Settings, name: str) -> str | None:
    """A fact the controller keeps in its journal (read-only), if there is a journal."""
    journal = open_reader(settings)
    if journal is None:
        return None
    try:
        return journal.fact(name)
    finally:
        journal.close()


def fetched_source(settings: Settings, showing: str) -> DeclaredSource:
    """The declared repository's mirror, fetched; a fetch that fails over an existing
    mirror is a warning (what it last fetched is shown), with no mirror it is an error."""
    return fetched_or_last(settings, showing)[0]


def fetched_or_last(settings: Settings, showing: str) -> tuple[DeclaredSource, Stale | None]:
    """`fetched_source`, and why what is shown is stale when the fetch failed (the
    same reasons a cycle gives: the remote unavailable, or refusing us)."""
    source = DeclaredSource.from_settings(settings)
    try:
        source.mirror.fetch()
    except ReconcilerError as exc:
        if not source.mirror.exists:
            raise
        print(f"warning: showing the last fetched {showing}: {exc}", file=sys.stderr)
        reason = REMOTE_UNAVAILABLE if isinstance(exc, TemporaryError) else REMOTE_REFUSED
        return source, Stale(reason, str(exc))
    return source, None


def plan_revisions(
    settings: Settings,
    *,
    head: str | None,
    base: str | None,
    targets: Collection[str] = (),
) -> PlanOutcome:
    """The plan of HEAD (the tracked branch by default) against what providers observe;
    with `targets`, of those resources and what they depend on only."""
    try:
        source = fetched_source(settings, "revisions")
    except ReconcilerError as exc:
        return PlanOutcome(error=str(exc))
    head_desired, diagnostics, error = _desired_at(source, head or settings.ref or settings.branch)
    if head_desired is None:
        return PlanOutcome(diagnostics=diagnostics, error=error)
    if targets:
        try:
            head_desired = subset(head_desired, with_dependencies(head_desired, targets))
        except ValueError as exc:
            return PlanOutcome(error=f"--target: {exc}")
    for missing in unresolvable(declared_uses(head_desired), secret_environment()):
        print(f"warning: {missing}", file=sys.stderr)  # apply would fail what needs it
    statuses = read_statuses(source.repo, settings.status_branch)
    applied = journal_records(settings, records_from_statuses(statuses))
    failed = failed_stages(statuses)
    state_dir = Path(settings.state_dir)
    repository = source.owner
    base_desired: Desired | None = None
    if base is not None:
        base_desired, diagnostics, error = _desired_at(source, base)
        if base_desired is None:
            return PlanOutcome(diagnostics=diagnostics, error=f"base: {error}")
    reconciled = source.last_reconciled
    # The rules that will judge the change: those in force (the controller's rules
    # revision, else the last reconciled one), the head's own only once approved.
    rules_revision = journal_fact(settings, "rules_revision") or reconciled
    rules_from = _desired_at(source, rules_revision)[0] if rules_revision else None
    verdict = judge_rules(source.repo, rules_from, head_desired)
    context = PlanContext(
        repo=source.repo,
        records=applied,
        failed=failed,
        rules_from=verdict.rules,
        rules_note=verdict.note,
        reconciled=reconciled,
        load=lambda sha: _desired_at(source, sha)[0],
        status_branch=settings.status_branch if base_desired is None else None,
        phases={key: status.phase for key, status in statuses.items()},
    )

    def plan_of(desired: Desired) -> Plan:
        observed = asyncio.run(observe_desired(desired, state_dir=state_dir, repository=repository))
        if targets:  # only the targets: nothing else is looked at, so nothing is an orphan
            observed = dataclasses.replace(observed, owned={})
        base = base_desired.revision if base_desired is not None else None
        return plan_revision(context, desired, observed, base=base)[1].plan

    head_plan = plan_of(head_desired)
    if base_desired is None:
        return PlanOutcome(plan=head_plan)
    return PlanOutcome(plan=relative_to(head_plan, plan_of(base_desired)))


# --- apply: one cycle, with progress ------------------------------------------------


def _print_cycle(result: CycleResult, *, failures_shown: bool = False) -> None:
    source = result.source
    if source.stale is not None:
        print(f"source: {source.stale.reason}: {source.stale.message}", file=sys.stderr)
        for diagnostic in source.diagnostics:
            print(str(diagnostic), file=sys.stderr)
    if result.resume_error is not None:
        print(f"reconciler: {result.resume_error}", file=sys.stderr)
    if result.resumed is not None:
        print(f"resumed an unfinished plan ({len(result.resumed.outcomes)} resources)")
    for earlier, _revision in result.earlier:
        print(
            f"reported a plan that ended before from the journal "
            f"({len(earlier.outcomes)} resources; nothing ran again)"
        )
    if result.execution is not None:
        for outcome in result.execution.outcomes.values():
            if failures_shown:  # the live view showed each failure and skip as it happened
                if outcome.result == "failed" and outcome.log:
                    print(f"  {outcome.key}: task log {outcome.log}")
                continue
            if outcome.result == "failed":
                print(
                    f"FAILED {outcome.key}: stage {outcome.failed_stage}, task "
                    f"{outcome.failed_task}: {outcome.error}"
                    + (f" (log: {outcome.log})" if outcome.log else "")
                )
            elif outcome.result == "skipped":
                print(f"skipped {outcome.key}: {outcome.reason}")
    for key, status in sorted(result.statuses.items()):
        ready = status.condition("Ready")
        if status.phase == "Unknown" and ready is not None:
            print(f"UNKNOWN {key}: {ready.message}")
        elif status.phase == "Stalled" and ready is not None:
            print(f"WAITING {key}: {ready.reason}: {ready.message}")
    counts: dict[str, int] = {}
    for status in result.statuses.values():
        counts[status.phase] = counts.get(status.phase, 0) + 1
    shown = ", ".join(f"{n} {p}" for p, n in sorted(counts.items())) or "no resources"
    print(f"resources: {shown}")
    if result.write_error is not None:
        print(f"status NOT written: {result.write_error}", file=sys.stderr)
        print("  (the results wait in the journal; the next cycle reports them)", file=sys.stderr)
    elif result.written is not None and result.written.commit:
        print(f"status committed: {result.written.commit[:12]} on {result.written.branch}")
    elif result.written is not None:
        print(f"status unchanged: no commit on {result.written.branch}")


def destructive_actions(plan: Plan) -> list[str]:
    """The actions of `plan` that would destroy something if run, as one line each."""
    return [
        f"{a.key} {a.operation.value}" + (f" ({', '.join(a.stages)})" if a.stages else "")
        for a in plan.actions
        if a.runnable and a.destructive
    ]


def confirmer(*, yes: bool, interactive: bool) -> Callable[[Plan], bool]:
    """The question `apply` asks before it runs a plan holding destructive actions:
    `--yes` answers it; off a terminal no one can, and the answer is no."""

    def confirm(plan: Plan) -> bool:
        harmful = destructive_actions(plan)
        if not harmful or yes:
            return True
        listed = "".join(f"\n  - {line}" for line in harmful)
        if not interactive:
            print(
                f"apply refused: the plan holds {len(harmful)} destructive "
                f"action{'s' * (len(harmful) != 1)}:{listed}\n"
                "  nothing was run; confirm on a terminal, or pass --yes",
                file=sys.stderr,
            )
            return False
        import typer

        print(f"The plan holds destructive actions:{listed}", file=sys.stderr)
        try:
            agreed = typer.confirm("Run them (and the rest of the plan)?", err=True)
        except typer.Abort:  # end of input
            agreed = False
        if not agreed:
            print("apply cancelled: nothing was run", file=sys.stderr)
        return agreed

    return confirm


def run_apply(
    settings: Settings,
    *,
    quiet: bool = False,
    yes: bool = False,
    ask: bool = False,
    grace: float = 30.0,
    targets: Collection[str] = (),
) -> int:
    """One cycle, shown; its exit code (`apply_exit_code`). `ask`: confirm destructive
    actions first (on a terminal; off one they are refused unless `yes`)."""
    # What exists before the cycle (modules, classes: tens of thousands of objects) outlives
    # it: kept out of its full collections, which then traverse only what the cycle made.
    # And a cycle allocates millions of short-lived objects, few of them in reference
    # cycles: the young generation is collected every 20,000 allocations, not 700
    # (a third of the collector's time in an apply of 1,000; mypy does the same).
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(20_000, *thresholds[1:])
    confirm = confirmer(yes=yes, interactive=sys.stdin.isatty()) if ask else None
    progress = Progress()
    stop = StopRequest(grace, in_flight=progress.in_flight)
    try:
        show_plan = None if quiet else (lambda p: print(render_text(p), flush=True))
        with Controller(
            settings, on_event=progress, on_plan=show_plan, confirm=confirm
        ) as controller:
            result = asyncio.run(stop.run(controller, targets))
    except (LeaseHeld, ReconcilerError) as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:  # a --target that is not declared
        print(f"reconciler: --target: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        progress.interrupted(Path(settings.state_dir))
        return EXIT_INTERRUPTED
    finally:
        progress.stop()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    if result is None:  # stopped at once: tasks in flight were cut off
        progress.interrupted(Path(settings.state_dir))
        return stop.exit_code
    if not quiet:
        _print_cycle(result, failures_shown=progress.shown)
    if stop.signal is not None:
        _print_stopped(result, stop.signal)
        return stop.exit_code
    return apply_exit_code(result)


class StopRequest:
    """SIGTERM and SIGINT during `apply`, as `run` treats them: no new task starts; tasks
    in flight finish (and are journaled) for up to `grace` seconds, then the status is
    written; a second signal, or the grace running out, stops at once. Either way the
    next run resumes the plan with its own idempotency keys."""

    def __init__(self, grace: float, in_flight: Callable[[], list[str]] = list) -> None:
        self.grace = grace
        self.in_flight = in_flight
        self.signal: str | None = None
        self.forced = False

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signal == "SIGTERM" else EXIT_INTERRUPTED

    async def run(
        self, controller: Controller, targets: Collection[str] = ()
    ) -> CycleResult | None:
        loop = asyncio.get_running_loop()
        scope = Targeted(frozenset(targets)) if targets else INCREMENTAL
        cycle = asyncio.ensure_future(controller.reconcile(scope))

        def force() -> None:
            if not cycle.done():
                self.forced = True
                cycle.cancel()

        def on_signal(sig: signal.Signals) -> None:
            if self.signal is not None:
                force()  # a second signal: at once
                return
            self.signal = sig.name
            controller.request_stop(sig.name)
            flying = self.in_flight()
            print(
                f"\n{sig.name}: no new tasks start; tasks in flight may finish for "
                f"{self.grace:g}s (signal again to stop at once)\n"
                + ("in flight: " + "; ".join(flying) if flying else "in flight: nothing"),
                file=sys.stderr,
                flush=True,
            )
            loop.call_later(self.grace, force)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await cycle
        except asyncio.CancelledError:
            if not self.forced:
                raise
            return None
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _print_stopped(result: CycleResult, name: str) -> None:
    """What a graceful stop left, and how the next run picks it up."""
    execution = result.execution or result.resumed
    left = (
        [o.key for o in execution.outcomes.values() if o.result == "skipped"] if execution else []
    )
    print(
        f"stopped by {name}: tasks in flight finished and were journaled; "
        f"{len(left)} resource(s) not finished"
        + (f" ({', '.join(left[:5])}{', …' if len(left) > 5 else ''})" if left else ""),
        file=sys.stderr,
    )
    if execution is not None:
        print(
            f"next: `reconciler apply` (or `run`) resumes plan {execution.execution_id[:12]} "
            "first, with its own idempotency keys: nothing finished runs again",
            file=sys.stderr,
            flush=True,
        )


# --- status -----------------------------------------------------------------------------


def show_status(settings: Settings, resource: str | None, *, as_json: bool) -> int:
    """`reconciler status`: the controller's own conditions first (the revision in force,
    whether it is stale and why, a status commit that could not be written, status files
    that cannot be read), then each resource's; one resource in full."""
    try:
        source, unfetched = fetched_or_last(settings, "status")
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return EXIT_ERROR
    branch = StatusWriter.from_settings(source.mirror, settings).branch
    unreadable: dict[str, str] = {}
    statuses = read_statuses(source.repo, branch, unreadable=unreadable)
    if resource is not None:
        found = statuses.get(resource)
        if found is None:
            kind, _, name = resource.partition("/")
            why = unreadable.get(f"status/{kind}/{name}.yaml")
            print(
                f"reconciler: no status for {resource}"
                + (f": status/{kind}/{name}.yaml cannot be read: {why}" if why else ""),
                file=sys.stderr,
            )
            return EXIT_ERROR
        if as_json:
            print(json.dumps(found.model_dump(mode="json", by_alias=True), indent=2))
        else:
            print(found.to_yaml(), end="")
        return EXIT_OK
    if as_json:
        data = {k: s.model_dump(mode="json", by_alias=True) for k, s in sorted(statuses.items())}
        print(json.dumps(data, indent=2))
        return EXIT_OK
    from rich.console import Console

    console = Console(width=200)
    console.print(
        _controller_table(
            read_controller(source.repo, branch),
            unreadable,
            WriteFailure.from_fact(journal_fact(settings, WRITE_FAILURE)),
            unfetched,
        )
    )
    console.print()
    console.print(_resources_table(statuses))
    return EXIT_OK


def _controller_table(
    shown: ControllerShown | None,
    unreadable: dict[str, str],
    failure: WriteFailure | None,
    unfetched: Stale | None = None,
) -> Any:
    """The controller's rows: its conditions as the status branch holds them, the status
    files this read could not parse, the last status commit not written (journal), and
    why this read could not fetch the remote (what follows is then as last fetched)."""
    from rich.table import Table

    now = datetime.now(UTC)
    conditions = unreadable_condition(shown.conditions if shown else (), unreadable, now)
    revision = (shown.revision if shown else None) or "none"
    table = Table(
        "CONTROLLER", "CONDITION", "STATUS", "REASON", "MESSAGE", box=None, title_justify="left"
    )
    table.columns[-1].overflow = "fold"
    label = f"revision {revision[:12]}"
    if shown is None:
        table.add_row(label, "Ready", "Unknown", "NoStatus", "no status commit yet")
    for condition in conditions:
        table.add_row(label, condition.type, condition.status, condition.reason, condition.message)
        label = ""
    if shown is not None and shown.invalid_revision:
        errors = "; ".join(shown.errors[:5]) + (" …" if len(shown.errors) > 5 else "")
        table.add_row(
            "", "Stale", "True", "ValidationFailed",
            f"head {shown.invalid_revision[:12]} is invalid: {errors}",
        )  # fmt: skip
    if unfetched is not None:
        table.add_row(
            "", "Stale", "True", unfetched.reason,
            f"the remote could not be fetched: {unfetched.message}; what follows is the "
            "status branch as last fetched",
        )  # fmt: skip
    if failure is not None:
        table.add_row(
            "", "Failed", "True", "StatusWriteFailed",
            f"since {failure.at:%Y-%m-%dT%H:%M:%SZ} the status commit of revision "
            f"{(failure.revision or 'none')[:12]} could not be written: {failure.error}; "
            "what follows is the status branch as last written",
        )  # fmt: skip
    return table


def _resources_table(statuses: dict[str, ResourceStatus]) -> Any:
    from rich.table import Table

    table = Table("RESOURCE", "PHASE", "READY", "REASON", "STAGE", "MESSAGE", box=None)
    table.columns[-1].overflow = "fold"  # wrapped, never cut
    for key, status in sorted(statuses.items()):
        ready = status.condition("Ready")
        table.add_row(
            key,
            status.phase,
            ready.status if ready else "-",
            ready.reason if ready else "-",
            status.stage_reached or "-",
            ready.message if ready else "",
        )
    return table


# --- audit ---------------------------------------------------------------------------------


def show_audit(
    settings: Settings, resource: str | None, *, since: str | None, as_json: bool
) -> int:
    """The history of a resource (or all) from the status branch: see `reconciler.report.audit`."""
    from reconciler.report.audit import history, parse_time, read_history, render_json
    from reconciler.report.audit import render_text as render_history

    try:
        since_time = parse_time(since) if since else None
    except ValueError:
        print(f"reconciler: --since {since!r}: not an ISO date or time", file=sys.stderr)
        return EXIT_ERROR
    try:
        source = fetched_source(settings, "history")
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return EXIT_ERROR
    branch = StatusWriter.from_settings(source.mirror, settings).branch
    gathered = read_history(source.repo, branch, resource)
    if gathered is None:
        print(f"reconciler: no status branch {branch} yet", file=sys.stderr)
        return EXIT_ERROR
    entries = history(gathered, since=since_time)
    print(render_json(entries, resource) if as_json else render_history(entries, resource), end="")
    return EXIT_OK


# --- demo -----------------------------------------------------------------------------------

SAMPLE_PACKAGE_DIR = "_sample_repo"
"""Where the wheel carries sample-repo/ inside the package (pyproject's force-include)."""


@contextmanager
def sample_repo() -> Iterator[Path]:
    """The sample repository on disk: the wheel's package data, else (a source checkout,
    an editable install) the checkout's `sample-repo/`."""
    from importlib import resources

    packaged = resources.files("reconciler").joinpath(SAMPLE_PACKAGE_DIR)
    if packaged.is_dir():
        with resources.as_file(packaged) as path:
            yield path
        return
    checkout = Path(__file__).resolve().parents[2] / "sample-repo"
    if not checkout.is_dir():
        raise FileNotFoundError(f"sample-repo is neither in the package nor at {checkout}")
    yield checkout


DEMO_SINK_PORT = 8099
DEMO_SECRETS = {
    "INFRA_HOOK_SECRET": "demo-infra-hook-secret",
    "CHATOPS_HOOK_SECRET": "demo-chatops-hook-secret",
    "CMDB_TOKEN": "demo-cmdb-token",
    "R01_ROOT_PASSWORD": "demo-root-password",
}


def commit_directory(bare: Path, source: Path, message: str) -> str:
    """Make `bare` a repository whose `main` holds the files of `source` (one commit)."""
    repo = pygit2.init_repository(str(bare), bare=True, initial_head="main")
    builder_cache: dict[str, Any] = {}

    def tree_of(folder: Path) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") and entry.name != ".reconcilerignore":
                continue
            if entry.is_dir():
                builder.insert(entry.name, tree_of(entry), pygit2.enums.FileMode.TREE)
            elif entry.is_file():
                blob = repo.create_blob(entry.read_bytes())
                builder.insert(entry.name, blob, pygit2.enums.FileMode.BLOB)
        builder_cache[str(folder)] = True
        return builder.write()

    signature = pygit2.Signature("reconciler demo", "demo@localhost")
    oid = repo.create_commit("refs/heads/main", signature, signature, message, tree_of(source), [])
    return str(oid)


class _DemoSink(BaseHTTPRequestHandler):
    """Stands in for your chat webhook and CMDB during the demo: accepts and prints."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/cmdb/") and self.command in ("PUT", "POST"):
            self.send_response(202)
            host, port = self.server.server_address[:2]
            self.send_header("Location", f"http://{host}:{port}/operations/cmdb")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            payload = b'{"status": "succeeded"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        if self.path.startswith("/hooks/"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                data = {}
            resource = data.get("resource") if isinstance(data, dict) else None
            key = resource.get("key") if isinstance(resource, dict) else None
            message = str(data.get("message", "")) if isinstance(data, dict) else ""
            server: Any = self.server
            with server.lock:
                server.received.setdefault(key or "(no resource)", []).append((self.path, message))

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *_args: Any) -> None:
        return


class _SinkServer(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops a burst of webhooks
    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[str, str]]] = {}
        """Webhook notifications by resource key: (path, message), in arrival order."""


def webhook_summary(received: dict[str, list[tuple[str, str]]]) -> list[str]:
    """One line per resource: how many notifications each hook got, and the messages
    that are not the same for every stage. Pure."""
    lines = []
    for key, notes in sorted(received.items()):
        by_path: dict[str, list[str]] = {}
        for path, message in notes:
            by_path.setdefault(path, []).append(message)
        parts = []
        for path, messages in sorted(by_path.items()):
            shown = f" ({messages[0]!r})" if len(messages) == 1 and messages[0] else ""
            parts.append(f"{len(messages)} to {path}{shown}")
        lines.append(f"  [demo webhooks] {key}: {', '.join(parts)}")
    return lines


@contextmanager
def demo_sink(port: int = DEMO_SINK_PORT, *, summary: bool = False) -> Iterator[int]:
    """The demo's stand-in for a chat webhook and a CMDB on 127.0.0.1; yields its port.
    With `summary`, prints one line per resource about the webhooks it sent, at the end."""
    server = _SinkServer(("127.0.0.1", port), _DemoSink)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        if summary:
            for line in webhook_summary(server.received):
                print(line, file=sys.stderr)


def run_demo(settings: Settings, *, yes: bool = False) -> int:
    """sample-repo in a local Git repository, the simulator, one full cycle, shown."""
    state_dir = Path(settings.state_dir)
    remote = state_dir / "demo" / "infra.git"
    if not (remote / "HEAD").exists():
        remote.parent.mkdir(parents=True, exist_ok=True)
        with sample_repo() as sample:
            sha = commit_directory(remote, sample, "Declare the sample fleet")
        print(f"demo: made {remote} from sample-repo/ (main at {sha[:12]})")
    else:
        print(f"demo: using {remote} (edit it with git clone/push to try changes)")
    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)
    demo_settings = settings.model_copy(update={"repo": str(remote.resolve())})
    try:
        with demo_sink(summary=True):
            code = run_apply(demo_settings, yes=yes, ask=True)
    except OSError as exc:
        print(
            f"demo: cannot listen on 127.0.0.1:{DEMO_SINK_PORT} for the demo webhooks: {exc}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(f"demo: status branch {settings.status_branch} of {remote}")
    print(f"demo: see it with: git --git-dir {remote} log --stat {settings.status_branch}")
    print(
        "demo: drift a machine by hand: python -m reconciler.providers.simulator drift "
        f"--state-dir {state_dir} Machine/r01-node02 params.os '\"rhel-9\"'"
    )
    return code


__all__ = [
    "apply_exit_code",
    "confirmer",
    "plan_revisions",
    "run_apply",
    "run_demo",
    "show_audit",
    "show_status",
    "summary_line",
]
