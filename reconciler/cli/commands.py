"""What each command does, behind `cli.py`'s flag parsing: plan, apply, status, audit.

The outer edge next to the CLI: composes the flow's steps (source, load,
observe, plan, controller) for one invocation and prints what people read. Each
function returns the command's exit code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2

from reconciler.controller.controller import WRITE_FAILURE, Controller, CycleResult
from reconciler.controller.cycle import INCREMENTAL, Targeted
from reconciler.controller.planning import PlanContext, judge_rules, plan_revision
from reconciler.controller.progress import Progress
from reconciler.errors import Diagnostic, ReconcilerError, TemporaryError
from reconciler.execute.lease import LeaseHeld
from reconciler.execute.secret_check import declared_uses, unresolvable
from reconciler.execute.secret_check import environment as secret_environment
from reconciler.execute.store import open_reader
from reconciler.load.desired import Desired, subset, with_dependencies
from reconciler.model.status import ResourceStatus
from reconciler.observe.observe import discover, observe_desired
from reconciler.plan.diff import LastApplied
from reconciler.plan.plan import Operation, Plan, relative_to
from reconciler.plan.render import render_text, summary_line
from reconciler.providers import open_providers
from reconciler.report.discovery import DiscoveryReport, documents_yaml
from reconciler.report.discovery import documents as documents_of
from reconciler.report.report import WriteFailure
from reconciler.report.rollout_progress import ROLLOUTS_JSON, RolloutProgress, read_rollouts
from reconciler.report.transitions import failed_stages, records_from_statuses
from reconciler.report.yaml_text import status_yaml
from reconciler.secrets import REDACTOR
from reconciler.settings import Settings
from reconciler.source import DeclaredSource, Stale, StatusWriter
from reconciler.source.declared import REMOTE_REFUSED, REMOTE_UNAVAILABLE
from reconciler.source.readback import (
    ControllerShown,
    read_controller,
    read_files,
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
    if result.desired is None or not result.ok:
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


def journal_history(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Per resource, the resolutions the journal saw applied (none without a journal)."""
    journal = open_reader(settings)
    if journal is None:
        return {}
    try:
        return journal.resolution_history()
    finally:
        journal.close()


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
        history=journal_history(settings),
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


# --- discover: the inbox as documents ------------------------------------------------


def show_discovered(settings: Settings, provider: str | None, output: str) -> int:
    """`reconciler discover`: ask the head's providers (or one) what they see undeclared,
    and print it: documents to commit (yaml), data (json) or one line each (text)."""
    try:
        source = fetched_source(settings, "revisions")
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return EXIT_ERROR
    desired, diagnostics, error = _desired_at(source, settings.ref or settings.branch)
    if desired is None:
        for diagnostic in diagnostics:
            print(str(diagnostic), file=sys.stderr)
        print(f"reconciler: {error}", file=sys.stderr)
        return EXIT_ERROR
    documents = desired.providers
    if provider is not None:
        if provider not in documents:
            known = ", ".join(sorted(documents)) or "none"
            print(
                f"reconciler: --provider {provider}: not declared; known: {known}", file=sys.stderr
            )
            return EXIT_ERROR
        documents = {provider: documents[provider]}
    report = asyncio.run(_discover(desired, documents, Path(settings.state_dir), source.owner))
    for name, why in sorted(report.errors.items()):
        print(f"reconciler: provider {name} could not list what it sees: {why}", file=sys.stderr)
    if output == "json":
        data = report.to_data()
        data["documents"] = REDACTOR.data(documents_of(report.found, desired))
        print(json.dumps(data, indent=2, sort_keys=True))
    elif output == "text":
        for d in report.found:
            identity = ", ".join(f"{k}={v}" for k, v in sorted(d.identity.items()))
            print(REDACTOR.text(f"{d.provider}\t{d.kind}\t{d.name or '-'}\t{identity}"))
        print(f"{len(report.found)} undeclared", file=sys.stderr)
    else:
        print(documents_yaml(report.found, desired), end="")
    return EXIT_ERROR if report.errors else EXIT_OK


async def _discover(
    desired: Desired, documents: Mapping[str, Any], state_dir: Path, repository: str
) -> DiscoveryReport:
    providers, failed = open_providers(documents, state_dir=state_dir, repository=repository)
    try:
        found, errors = await discover(desired, providers)
    finally:
        for opened in providers.values():
            await opened.close()
    return DiscoveryReport(desired.revision, tuple(found), {**errors, **failed})


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
    confirm = confirmer(yes=yes, interactive=sys.stdin.isatty()) if ask else None
    progress = Progress()
    stop = StopRequest(grace, in_flight=progress.in_flight)
    try:
        show_plan = None if quiet else (lambda p: print(REDACTOR.text(render_text(p)), flush=True))
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
            print(status_yaml(found), end="")
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
    rollouts = read_rollouts(read_files(source.repo, branch, (ROLLOUTS_JSON,)).get(ROLLOUTS_JSON))
    if rollouts:
        console.print()
        console.print(_rollouts_table(rollouts))
    console.print()
    console.print(_resources_table(statuses))
    return EXIT_OK


ROLLOUT_WHY_SHOWN = 10
"""Waiting and failed resources named per rollout; the others are counted."""


def _rollouts_table(rollouts: tuple[RolloutProgress, ...]) -> Any:
    """Each rollout's counts and why it is paused, then its failed and waiting resources
    with why (the first few)."""
    from rich.table import Table

    table = Table(
        "ROLLOUT", "DONE", "RUNNING", "WAITING", "FAILED", "PAUSED", box=None, title_justify="left"
    )
    table.columns[-1].overflow = "fold"
    for progress in rollouts:
        paused = (
            f"yes: {progress.paused} (resume: change rollout.resume in Git, or "
            f"POST /api/v1/rollouts/{progress.id}/resume)"
            if progress.paused
            else "no"
        )
        counts = (str(progress.count(s)) for s in ("done", "running", "waiting", "failed"))
        table.add_row(progress.id, *counts, paused)
        for state in ("failed", "running", "waiting"):
            members = [m for m in progress.members if m.state == state]
            for member in members[:ROLLOUT_WHY_SHOWN]:
                why = f": {member.why}" if member.why else ""
                table.add_row("", "", "", "", "", f"{state} {member.key} ({member.batch}){why}")
            if len(members) > ROLLOUT_WHY_SHOWN:
                table.add_row(
                    "", "", "", "", "", f"… and {len(members) - ROLLOUT_WHY_SHOWN} more {state}"
                )
    return table


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


__all__ = [
    "apply_exit_code",
    "confirmer",
    "plan_revisions",
    "run_apply",
    "show_audit",
    "show_status",
    "summary_line",
]
