"""The controller: one reconcile cycle as a short list of steps, the flow end to end.

    pull -> load (last good revision stays in force) -> resume an unfinished plan
    -> scope -> observe -> diff + plan -> execute -> observe what changed -> status
    -> one commit

A cycle at a new head plans only what the head changed (`reconciler.plan.scope`), as
long as a full cycle ran within `full_resync_interval`; a cycle at the same head,
and any change beyond resources (Policy, Providers), observes everything.

A plan counts as finished in the journal only once the status commit reporting it
is written: a crash in between resumes it next cycle (every task's result comes
from the journal, nothing runs again) so its outcome and audit are reported.

Every cycle takes one path, `Controller.reconcile(scope)`: the scope
(`reconciler.controller.cycle`) says whether it is a cycle at the head (incremental,
full, holding failures in backoff) or targeted (`apply --target`, provider events at
the revision in force); each step returns a frozen result the next takes.

Each step is a module of its own; this file only chains them and owns the
long-lived pieces (mirror, parse cache, journal, lease). `reconciler apply` runs
one cycle; `reconciler run` (`reconciler.controller.scheduler`,
`reconciler.controller.server`) schedules cycles, and between them reconciles single
resources named by provider events; what a cycle leaves waiting (`CycleResult.requeue`)
is for the scheduler to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2

from reconciler.controller.branch_plans import PLANS_DIR, BranchPlans, patterns_of, watched_branches
from reconciler.controller.cycle import (
    Coverage,
    CycleScope,
    Executed,
    Fetched,
    Planned,
    ProviderEvents,
    Requeue,
    Resumed,
    Targeted,
)
from reconciler.controller.leader import acquire_lease
from reconciler.controller.planning import PlanContext, judge_rules, plan_revision
from reconciler.errors import ReconcilerError
from reconciler.execute.engine import EventSink, ExecutionResult, Executor
from reconciler.execute.journal import PlanRow
from reconciler.execute.retention import Retention, apply_retention
from reconciler.execute.rollout_gate import PAUSE_FACT
from reconciler.execute.store import (
    HeldLease,
    keep_existing,
    open_journal,
    recall_existing,
)
from reconciler.execute.windows import next_opening
from reconciler.execute.worker import dispatcher_for
from reconciler.load.desired import Desired, ResolvedResource, subset, with_dependencies
from reconciler.load.load import LoadResult
from reconciler.model.status import ResourceStatus, set_condition
from reconciler.observe.observe import ObservedState, discover, observe, observe_desired
from reconciler.plan.approvals import Decision
from reconciler.plan.diff import Diff, LastApplied
from reconciler.plan.gates import RulesVerdict
from reconciler.plan.plan import Plan
from reconciler.plan.render import summary_line
from reconciler.plan.rollouts import rollout_spec
from reconciler.plan.scope import FullCycle, Scope, held_failures, revision_scope
from reconciler.providers import open_providers
from reconciler.providers.base import Provider
from reconciler.report.discovery import DISCOVERED_JSON, DISCOVERED_MD, DiscoveryReport
from reconciler.report.report import (
    AuditRecord,
    ControllerStatus,
    CycleReport,
    StatusFiles,
    WriteFailure,
    build_report,
)
from reconciler.report.rollout_progress import (
    ROLLOUTS_JSON,
    rollout_progress,
    rollouts_json,
    states_of,
)
from reconciler.report.transitions import (
    audit_records,
    controller_conditions,
    failed_stages,
    next_statuses,
    observation_records,
    records_from_statuses,
    refreshed_records,
    unreported,
)
from reconciler.secrets import REDACTOR
from reconciler.settings import Settings
from reconciler.source import DeclaredSource, SourceResult, StatusWriter
from reconciler.source.history import DocumentChanges, provenance_for
from reconciler.source.identity import canonical_location
from reconciler.source.mirror import display_url, normalize_url
from reconciler.source.readback import (
    read_controller_conditions,
    read_drift,
    read_files,
    read_statuses,
    reported_executions,
    unreadable_condition,
)
from reconciler.source.worktree import materialize, prune_trees
from reconciler.source.writeback import WriteResult


class ResumeDeferred(ReconcilerError):
    """An interrupted plan cannot be resumed now (a passing failure): nothing new runs."""


RULES_REVISION = "rules_revision"
"""The journal fact naming the revision whose approval rules are in force."""
WRITE_FAILURE = "status_write_failure"
"""The journal fact holding why the last status commit could not be written (`WriteFailure`),
empty once one is written again: the status branch cannot say it."""


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did: for the CLI's exit code and summary, and the API's operations."""

    source: SourceResult
    plan: Plan | None = None
    execution: ExecutionResult | None = None
    statuses: Mapping[str, ResourceStatus] = field(default_factory=dict)
    written: WriteResult | None = None
    report: CycleReport | None = None
    resumed: ExecutionResult | None = None
    resumed_revision: str | None = None
    write_error: str | None = None
    """Why the status commit could not be written (the cycle's results wait in the journal)."""
    decision: Decision | None = None
    """The approval gate's verdict on this cycle's plan (approvers for the audit)."""
    branch_plans: Mapping[str, bytes] | None = None
    """`plans/<branch>.md` of the watched branches; None: not computed, plans/ kept."""
    held: Mapping[str, datetime] = field(default_factory=dict)
    window_opens: datetime | None = None
    """A destructive action waited for a change window, which opens then."""
    """Failed resources this cycle left alone, and when scheduled cycles try them again."""
    resume_error: str | None = None
    """Why an interrupted plan could not be resumed this cycle (nothing new ran)."""
    earlier: tuple[tuple[ExecutionResult, str | None], ...] = ()
    """Plans that ended before this cycle (a failed status push, a crash after their
    last task) and are reported by its commit, with their revisions, in order."""
    scope: Scope | FullCycle | None = None
    """What the cycle planned: the resources of an incremental one (`reconciler.plan.scope`),
    or why it planned everything; None for a targeted reconcile or with no revision."""
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds spent in each phase: fetch, load, observe, plan, execute, write (metrics)."""
    discovered: DiscoveryReport | None = None
    """What providers see that nothing declares (a full cycle's); None: the last report
    on the status branch is kept."""

    def __repr__(self) -> str:
        # Short: asyncio formats the repr of a finished main task's result (when it
        # restores the SIGINT handler); the default one would print the whole
        # Desired set, a second of CPU for 1,000 resources.
        revision = self.source.revision.sha[:12] if self.source.revision else None
        actions = len(self.plan.actions) if self.plan else 0
        return f"CycleResult(revision={revision!r}, actions={actions}, ok={self.ok})"

    @property
    def incremental(self) -> bool:
        return isinstance(self.scope, Scope)

    @property
    def requeue(self) -> Requeue:
        """What this cycle left waiting, and for how long: the scheduler acts on it."""
        failures = {
            key: status.failure.retry_at
            for key, status in self.statuses.items()
            if status.phase == "Failed" and status.failure and status.failure.retry_at
        }
        return Requeue(
            fetch_after=self.source.retry_after, failures=failures, window_opens=self.window_opens
        )

    @property
    def ok(self) -> bool:
        """The head was applied: no stale source, nothing failed, every observation
        answered (what `apply` exits on)."""
        if self.source.revision is None or self.source.stale is not None:
            return False
        if self.write_error is not None or self.resume_error is not None:
            return False
        if any(s.phase in ("Failed", "Unknown") for s in self.statuses.values()):
            return False
        failed = self.execution.failed if self.execution else []
        return not failed and not (self.resumed and self.resumed.failed)


class Controller:
    """The long-lived pieces of a controller over one state directory."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_event: EventSink | None = None,
        on_plan: Callable[[Plan], None] | None = None,
        confirm: Callable[[Plan], bool] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease: HeldLease | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(settings.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The state directory's flock, or the leader lease of the shared database (given
        # by `reconciler run`'s election, else taken now): one writer at a time.
        self.lease = lease or acquire_lease(settings, holder="reconciler")
        when_lost = getattr(self.lease, "when_lost", None)
        if when_lost is not None:
            when_lost(self.request_stop)  # a lost leader lease starts no new task
        try:
            self.source = DeclaredSource.from_settings(settings, writing=True)
            self.journal = open_journal(settings, lease=self.lease, owner=self.source.owner)
        except BaseException:
            self.lease.release()
            raise
        self.writer = StatusWriter.from_settings(self.source.mirror, settings)
        self.on_event = on_event
        self.on_plan = on_plan
        self.confirm = confirm
        """Asked after planning, before executing (`apply` on a terminal): False, nothing
        runs and the planned resources stay Pending. None: no one is asked."""
        self.clock = clock
        self.existing: dict[str, frozenset[str]] = dict(
            recall_existing(self.journal, self.state_dir)
        )
        """Per provider, the declared keys it last reported existing: kept in the state
        directory, so a provider that suddenly reports nothing is unknown in the next
        process too, never "everything is gone"."""
        self._executor: Executor | None = None
        self._stop: str | None = None
        self.last: CycleResult | None = None
        self.decision: Decision | None = None
        self._rules_from: tuple[str, Desired | None] | None = None
        self._status_files = StatusFiles()
        """Status file text of the last cycle: only changed statuses are dumped again."""
        self._status_blobs: dict[pygit2.Oid, ResourceStatus | None] = {}
        """Parsed status files by blob id: a cycle parses only the ones that changed."""
        self._in_force: Desired | None = None
        """The Desired set of the last cycle whose status commit was written."""
        self._full_at: float | None = None
        """When (monotonic) the last full cycle's status commit was written."""
        self._resumed: list[tuple[str, str]] = []
        """Rollouts resumed since the last status commit, and by whom (for the audit)."""
        self._timings: dict[str, float] = {}
        """This cycle's seconds per phase (`CycleResult.timings`)."""
        self.branch_plans = BranchPlans()
        """The watched branches' plan files, kept between cycles."""
        self.changes = DocumentChanges()
        """The documents each commit changed (the audit's "asked by"), kept by commit."""
        self._unreadable: dict[str, str] = {}
        """Status files the last read could not parse, and why (a controller condition)."""

    def close(self) -> None:
        self.journal.close()
        self.lease.release()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def repository(self) -> str:
        """The owner identity providers record on what they create (tags, fields)."""
        return self.source.owner

    def records(self, previous: Mapping[str, ResourceStatus]) -> dict[str, LastApplied]:
        """What was applied per resource: the journal's records, and for a resource it
        has none of (a new state directory) what the status branch shows."""
        journal = {k: LastApplied.from_dict(v) for k, v in self.journal.applied().items()}
        return {**records_from_statuses(previous), **journal}

    def request_stop(self, reason: str) -> None:
        """Start no new task, now or in a later execution of this controller (the first
        reason given is the one journaled)."""
        reason = self._stop or reason
        self._stop = reason
        if self._executor is not None:
            self._executor.request_stop(reason)

    # --- the steps ---------------------------------------------------------------

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self._timings[phase] = self._timings.get(phase, 0.0) + time.monotonic() - began

    def pull(self) -> SourceResult:
        began = time.monotonic()
        result = self.source.poll()
        fetched = self.source.fetch_seconds
        self._timings["fetch"] = fetched
        self._timings["load"] = time.monotonic() - began - fetched
        return result

    def statuses(self) -> dict[str, ResourceStatus]:
        self._unreadable = {}
        return read_statuses(
            self.source.repo, self.writer.branch, self._status_blobs, self._unreadable
        )

    async def observe(
        self, desired: Desired, providers: Mapping[str, Provider], failed: Mapping[str, str]
    ) -> ObservedState:
        with self._timed("observe"):
            observed = await observe(desired, providers, previous=self.existing, unavailable=failed)
        self.remember_existing(observed.existing)
        return observed

    def remember_existing(self, existing: Mapping[str, frozenset[str]]) -> None:
        self.existing.update(existing)
        keep_existing(self.journal, self.state_dir, self.existing)

    def plan_context(
        self, previous: Mapping[str, ResourceStatus], head: Desired | None = None
    ) -> PlanContext:
        """What this cycle's plans depend on besides the revision and the observation;
        `head` is judged against the rules in force (`gates.judge_rules`)."""
        verdict = self.judge_rules(head) if head is not None else None
        return PlanContext(
            repo=self.source.repo,
            records=self.records(previous),
            failed=failed_stages(previous),
            rules_from=verdict.rules if verdict else self.rules_desired(),
            rules_note=verdict.note if verdict else None,
            reconciled=self.source.last_reconciled,
            load=self.desired_at,
            status_branch=self.writer.branch,
            phases={key: status.phase for key, status in previous.items()},
            paused=self.paused_rollouts(head) if head is not None else {},
            history=self.journal.resolution_history(),
        )

    def paused_rollouts(self, head: Desired) -> dict[str, str]:
        """Rollouts paused by failures and not resumed since; one whose `resume` value
        changed in Git since it paused is resumed (its pause forgotten)."""
        paused: dict[str, str] = {}
        for name, value in self.journal.facts(PAUSE_FACT).items():
            rollout = name.removeprefix(PAUSE_FACT)
            record = json.loads(value)
            spec = rollout_spec(head, rollout)
            if spec is None or spec.resume != record.get("resume"):
                self.journal.forget_fact(name)  # resumed by a commit (or gone from Git)
                self._resumed.append((rollout, "a commit changing rollout.resume"))
                continue
            paused[rollout] = str(record.get("reason", "paused"))
        return paused

    def resume_rollout(self, rollout: str, who: str) -> bool:
        """`POST /api/v1/rollouts/{id}/resume`: forget the pause; False if not paused."""
        name = f"{PAUSE_FACT}{rollout}"
        if name not in self.journal.facts(name):
            return False
        self.journal.forget_fact(name)
        self._resumed.append((rollout, who))
        return True

    def plan(
        self, desired: Desired, observed: ObservedState, previous: Mapping[str, ResourceStatus]
    ) -> tuple[Diff, Plan]:
        with self._timed("plan"):
            found, gated = plan_revision(self.plan_context(previous, desired), desired, observed)
        self.decision = gated.decision
        return found, gated.plan

    def rules_desired(self) -> Desired | None:
        """The revision whose approval rules are in force: the last one whose changes to
        them were approved (kept in the journal), else the last reconciled one."""
        revision = self.journal.fact(RULES_REVISION) or self.source.last_reconciled
        if not revision:
            return None
        if self._in_force is not None and self._in_force.revision == revision:
            return self._in_force  # no second load of the revision just reconciled
        if self._rules_from is None or self._rules_from[0] != revision:
            self._rules_from = (revision, self.desired_at(revision))
        return self._rules_from[1]

    def judge_rules(self, head: Desired) -> RulesVerdict:
        """The rules that judge `head`; a newly approved rules revision is kept."""
        verdict = judge_rules(self.source.repo, self.rules_desired(), head)
        if verdict.revision and verdict.revision != self.journal.fact(RULES_REVISION):
            self.journal.set_fact(RULES_REVISION, verdict.revision)
            self.source.keep_revision("rules", verdict.revision)
        return verdict

    async def plan_branches(
        self, desired: Desired, previous: Mapping[str, ResourceStatus]
    ) -> dict[str, bytes] | None:
        """`plans/<branch>.md` for the branches `plan_branches` watches (see branch_plans:
        the fleet observed once, a branch planned again only when its key moved); none
        watched: plans/ is emptied."""
        patterns = patterns_of(self.settings.plan_branches)
        branches = watched_branches(
            self.source.repo, patterns, exclude={self.settings.branch, self.writer.branch}
        )
        if not branches:
            return {}
        context = dataclasses.replace(self.plan_context(previous), status_branch=None)
        rules = self.rules_desired()

        async def observe_now(target: Desired) -> ObservedState:
            return await observe_desired(
                target,
                state_dir=self.state_dir,
                repository=self.repository,
                previous=self.existing,
                remember=False,
            )

        def plan_at(target: Desired, observed: ObservedState) -> Plan:
            # Judged as it will be once merged: by the rules in force, the branch's own
            # changes to them only once approved.
            verdict = judge_rules(self.source.repo, rules, target)
            judged = dataclasses.replace(context, rules_from=verdict.rules, rules_note=verdict.note)
            return plan_revision(judged, target, observed, base=desired.revision)[1].plan

        return await self.branch_plans.files(
            branches,
            base=desired,
            base_branch=self.settings.branch,
            context=context,
            observe=observe_now,
            load=self._load,
            plan=plan_at,
        )

    async def execute(
        self,
        plan_value: Plan,
        desired: Desired,
        providers: Mapping[str, Provider],
        *,
        execution: str | None = None,
    ) -> ExecutionResult:
        repo_dir = None
        url = display_url(normalize_url(self.settings.repo)) if self.settings.repo else None
        if plan_value.revision:
            # Playbooks, relative file: secrets and a command's cwd read the revision's files.
            repo_dir = await asyncio.to_thread(
                materialize, self.source.repo, plan_value.revision, self.state_dir
            )
        self._executor = Executor(
            journal=self.journal,
            providers=providers,
            desired=desired,
            state_dir=self.state_dir,
            repo_dir=repo_dir,
            on_event=self.on_event,
            clock=self.clock,
            finish=False,  # finished in the journal once its results are committed
            dispatch=dispatcher_for(self.settings, self.journal),  # None: tasks run here
            repository=self.repository,
            repository_url=url,  # workers materialize the revision's tree from it
        )
        if self._stop is not None:
            self._executor.request_stop(self._stop)
        try:
            with self._timed("execute"):
                return await self._executor.execute(plan_value, execution=execution)
        finally:
            self._executor = None

    async def resume(self) -> tuple[ExecutionResult, str | None] | None:
        """A plan whose tasks may still run (a crash or a stop interrupted it) runs to its
        end, with its own idempotency keys, before anything new is planned.

        It is given up (superseded) only for a permanent reason: its revision is gone
        from the repository (force-pushed away) or no longer loads as valid. A passing
        failure to load it leaves it as it is, and this cycle plans nothing new
        (`ResumeDeferred`): its started operations must not be issued again under new
        keys.
        """
        unfinished = self.journal.unfinished_plan()
        if unfinished is None:
            return None
        old = Plan.from_json(unfinished.plan_json)
        desired, why, permanent = self._resumable(old.revision)
        if desired is None:
            if not permanent:
                raise ResumeDeferred(
                    f"plan {unfinished.plan_hash[:12]} could not be resumed: {why}; it is "
                    "resumed when its revision loads again, nothing new runs before"
                )
            self.journal.supersede_plan(unfinished.plan_hash, why)
            return None
        providers, _failed = open_providers(
            desired.providers, state_dir=self.state_dir, repository=self.repository
        )
        try:
            done = await self.execute(old, desired, providers, execution=unfinished.plan_hash)
        finally:
            await _close(providers)
        return done, old.revision

    def _resumable(self, sha: str | None) -> tuple[Desired | None, str, bool]:
        """The Desired set a plan of `sha` resumes with, or why not and whether for good."""
        if not sha:
            return None, "it names no revision", True
        try:
            self.source.repo[sha].peel(pygit2.Commit)
        except (KeyError, ValueError, AttributeError, pygit2.GitError):
            return None, f"its revision {sha[:12]} is gone (force-pushed away?)", True
        away = self._force_pushed_away(sha)
        if away is not None:
            return None, away, True
        try:
            loaded = self._load_strict(sha)
        except Exception as exc:  # I/O, a lock: it may load next time
            return None, f"loading revision {sha[:12]} failed: {type(exc).__name__}: {exc}", False
        if loaded.desired is None:
            first = str(loaded.diagnostics[0]) if loaded.diagnostics else "invalid"
            return None, f"its revision {sha[:12]} no longer validates: {first}", True
        return dataclasses.replace(loaded.desired, revision=sha), "", False

    def _force_pushed_away(self, sha: str) -> str | None:
        """Why `sha` is no longer on the tracked branch, when a force-push took it away.

        The mirror keeps the commit's objects (its last-good ref), so "gone" alone would
        never say so. Under `forcePushPolicy: refuse` the old history stays in force, and
        a branch that cannot be read (a transient fetch failure) is no reason either.
        """
        if self.settings.force_push_policy == "refuse":
            return None
        try:
            head = self.source.mirror.commit_for(self.settings.branch, self.settings.ref)
        except ReconcilerError:
            return None
        if str(head.id) == sha:
            return None
        try:
            if self.source.repo.descendant_of(head.id, sha):
                return None
        except (KeyError, ValueError, pygit2.GitError):
            pass
        where = self.settings.ref or self.settings.branch
        return (
            f"its revision {sha[:12]} is no longer on {where} (force-pushed away; "
            f"the head is {str(head.id)[:12]})"
        )

    def desired_at(self, sha: str) -> Desired | None:
        loaded = self._load(sha)
        if loaded is None or loaded.desired is None:
            return None
        return dataclasses.replace(loaded.desired, revision=sha)

    def _load(self, sha: str) -> LoadResult | None:
        try:
            return self._load_strict(sha)
        except Exception:
            return None

    def _load_strict(self, sha: str) -> LoadResult:
        from reconciler.source.tree import load_revision

        return load_revision(
            self.source.repo,
            sha,
            lister=self.source.lister,
            cache=self.source.cache,
            assemble=self.source.assemble_other,
        ).result

    # --- one cycle -------------------------------------------------------------------

    async def reconcile(self, scope: CycleScope) -> CycleResult:
        """One cycle over what `scope` asks for (`reconciler.controller.cycle`): fetch,
        resume an interrupted plan, cover, observe, plan, execute, report in one commit.

        Raises ValueError when a `Targeted` key is not declared.
        """
        self._timings = {}
        fetched = await self._fetch(scope)
        resumed = await self._resume_step(scope)
        base = CycleResult(
            source=fetched.source,
            resumed=resumed.execution,
            resumed_revision=resumed.revision,
            resume_error=resumed.deferred,
        )
        if resumed.deferred is not None:
            return await self._report(base, fetched)
        cover = self._cover(scope, fetched, resumed)
        if cover is None:
            if isinstance(scope, ProviderEvents):  # nothing in force: nothing to report
                return CycleResult(source=fetched.source, statuses=fetched.previous)
            # Nothing is in force, or a stop came while the interrupted plan resumed.
            return await self._report(base, fetched)
        providers, failed = open_providers(
            {n: p for n, p in cover.full.providers.items() if n in cover.providers},
            state_dir=self.state_dir,
            repository=self.repository,
        )
        try:
            observed = await self._observe_step(cover, providers, failed)
            discovered = await self._discover_step(cover, providers, failed)
            planned = self._plan_step(cover, observed, fetched.previous)
            executed = await self._execute_step(cover, planned, providers, observed)
        finally:
            await _close(providers)
        branch_plans = (
            await self.plan_branches(cover.full, fetched.previous) if cover.at_head else None
        )
        result = dataclasses.replace(
            base,
            plan=planned.plan,
            execution=executed.execution,
            decision=planned.decision,
            branch_plans=branch_plans,
            held=cover.held,
            window_opens=self._window_opens(cover, executed),
            scope=cover.scope,
            discovered=discovered,
        )
        result = await self._report(result, fetched, cover, planned.diff, executed.observed)
        if cover.at_head and result.written is not None:
            self._in_force = cover.full
            if not isinstance(cover.scope, Scope):
                self._full_at = time.monotonic()
        return result

    def _window_opens(self, cover: Coverage, executed: Executed) -> datetime | None:
        if executed.execution is None or not executed.execution.waits_for_window:
            return None
        return next_opening(cover.full.policy.change_windows, self.clock())

    async def _fetch(self, scope: CycleScope) -> Fetched:
        """Poll the source (provider events: no fetch, the revision in force) and read
        the statuses the status branch holds."""
        if isinstance(scope, ProviderEvents):
            source = await asyncio.to_thread(self.source.poll, fetch=False)
        else:
            source = await asyncio.to_thread(self.pull)
        now = self.clock()
        previous = await asyncio.to_thread(self.statuses)
        return Fetched(source=source, previous=previous, now=now)

    async def _resume_step(self, scope: CycleScope) -> Resumed:
        """Run an interrupted plan to its end first (not for provider events: a cycle does)."""
        if isinstance(scope, ProviderEvents):
            return Resumed()
        try:
            done = await self.resume()
        except ResumeDeferred as exc:
            return Resumed(deferred=str(exc))
        return Resumed(*done) if done is not None else Resumed()

    def _cover(self, scope: CycleScope, fetched: Fetched, resumed: Resumed) -> Coverage | None:
        """The resources this cycle looks at; None when no revision is in force (or a stop
        came while the interrupted plan resumed)."""
        source, previous = fetched.source, fetched.previous
        if source.load is None or source.load.desired is None:
            return None
        if self._stop is not None and not isinstance(scope, ProviderEvents):
            return None
        full = dataclasses.replace(
            source.load.desired, revision=source.revision.sha if source.revision else None
        )
        if isinstance(scope, ProviderEvents):
            return _narrowed(full, scope.keys | self._awaiting_report(), at_head=False)
        if isinstance(scope, Targeted):
            keys = with_dependencies(full, scope.keys)  # ValueError: not declared
            return _narrowed(full, keys | self._awaiting_report(), at_head=False)
        held = held_failures(full, previous, fetched.now) if scope.hold_failures else {}
        # A provider event about a held resource is news (its BMC answers again): tried.
        held = {key: until for key, until in held.items() if key not in scope.also}
        found = self._scope(
            full, previous, resumed=resumed.execution is not None, full=scope.full, also=scope.also
        )
        if isinstance(found, Scope):
            in_force = self._in_force
            removed = {k: in_force.resources[k] for k in found.removed} if in_force else {}
            narrowed = _narrowed(full, found.observed - held.keys(), removed=removed)
            return dataclasses.replace(narrowed, held=held, scope=found)
        # Every resource but the held ones: their status and drift entries are carried
        # over, and they are not found orphaned.
        desired = subset(full, full.resources.keys() - held.keys()) if held else full
        reported = frozenset((previous.keys() | full.resources.keys()) - held.keys())
        return Coverage(
            full=full,
            desired=desired,
            providers=tuple(desired.providers),
            narrowed=False,
            held=held,
            scope=found,
            reported=reported if held else None,
        )

    def _scope(
        self,
        desired: Desired,
        previous: Mapping[str, ResourceStatus],
        *,
        resumed: bool,
        full: bool,
        also: Collection[str],
    ) -> Scope | FullCycle:
        every = self.settings.full_resync_interval
        if full:
            return FullCycle("a full cycle was asked for")
        if not every:
            return FullCycle("incremental cycles are off (full_resync_interval is 0)")
        if resumed:
            return FullCycle("a plan interrupted by a crash was finished first")
        if self._full_at is None or time.monotonic() - self._full_at >= every:
            return FullCycle("the last full cycle is older than full_resync_interval")
        return revision_scope(self._in_force, desired, previous, also=also)

    async def _discover_step(
        self, cover: Coverage, providers: Mapping[str, Provider], failed: Mapping[str, str]
    ) -> DiscoveryReport | None:
        """The discovery inbox, on cycles over the whole fleet: what providers see that
        nothing declares and nobody owns; listed, never acted on (none when narrowed)."""
        if cover.narrowed:
            return None
        with self._timed("observe"):
            found_now, why = await discover(cover.full, providers)
        return DiscoveryReport(cover.full.revision, tuple(found_now), {**why, **failed})

    async def _observe_step(
        self, cover: Coverage, providers: Mapping[str, Provider], failed: Mapping[str, str]
    ) -> ObservedState:
        """Observe the covered resources; what providers own counts only where this cycle
        may find orphans (everywhere but the held resources, or only the removed ones)."""
        removed = cover.removed
        with self._timed("observe"):
            observed = await observe(
                cover.desired,
                providers,
                previous=self.existing,
                unavailable=failed,
                list_owned={r.provider for r in removed.values()} if cover.narrowed else None,
            )
        if not cover.narrowed:
            self.remember_existing(observed.existing)
            if not cover.held:
                return observed
            owned = {k: o for k, o in observed.owned.items() if k not in cover.held}
            return dataclasses.replace(observed, owned=owned)
        looked_at = cover.desired.resources.keys() | removed.keys()
        self.remember_existing(
            {
                name: (frozenset(self.existing.get(name, ())) - looked_at) | seen
                for name, seen in observed.existing.items()
            }
        )
        owned = {k: o for k, o in observed.owned.items() if k in removed}
        return dataclasses.replace(observed, owned=owned)

    def _plan_step(
        self, cover: Coverage, observed: ObservedState, previous: Mapping[str, ResourceStatus]
    ) -> Planned:
        found, plan_value = self.plan(cover.desired, observed, previous)
        if cover.announced and self.on_plan is not None:
            self.on_plan(plan_value)
        return Planned(diff=found, plan=plan_value, decision=self.decision)

    async def _execute_step(
        self,
        cover: Coverage,
        planned: Planned,
        providers: Mapping[str, Provider],
        observed: ObservedState,
    ) -> Executed:
        """Run the plan if anything in it can run and whoever is asked agrees."""
        plan_value = planned.plan
        if not any(a.runnable for a in plan_value.actions) or not self._confirmed(plan_value):
            return Executed(execution=None, observed=observed)
        execution, observed = await self._execute_and_observe(
            plan_value, cover.desired, providers, observed
        )
        return Executed(execution=execution, observed=observed)

    def _confirmed(self, plan_value: Plan) -> bool:
        return self.confirm is None or self.confirm(plan_value)

    async def _execute_and_observe(
        self,
        plan_value: Plan,
        desired: Desired,
        providers: Mapping[str, Provider],
        observed: ObservedState,
    ) -> tuple[ExecutionResult, ObservedState]:
        """Run the plan, then observe again what it touched: status shows the result."""
        execution = await self.execute(plan_value, desired, providers)
        touched = {k for k, o in execution.outcomes.items() if o.tasks}
        if touched:
            with self._timed("observe"):
                after = await observe(subset(desired, touched), providers, previous={})
            self.remember_existing(
                {
                    name: (frozenset(self.existing.get(name, ())) - touched) | seen
                    for name, seen in after.existing.items()
                    if name not in after.unknown_providers
                }
            )
            observed = dataclasses.replace(
                observed, observations={**observed.observations, **after.observations}
            )
        return execution, observed

    async def _report(
        self,
        result: CycleResult,
        fetched: Fetched,
        cover: Coverage | None = None,
        found: Diff | None = None,
        observed: ObservedState | None = None,
    ) -> CycleResult:
        """The report step: the statuses, drift and audit of what this cycle did, in one
        status commit (with the plans earlier cycles could not report)."""
        now = fetched.now
        desired = cover.desired if cover is not None else None
        planned = desired is not None and found is not None and result.plan is not None
        if planned:
            # Their statuses come with this commit's: reported by it.
            result = dataclasses.replace(result, earlier=self._earlier(result))
        statuses, drift = await self._statuses_and_drift(
            result, cover, fetched.previous, found, observed, now
        )
        controller = self._controller_status(result.source, result.resume_error, now)
        author = None
        if result.source.revision is not None:
            revision = result.source.revision
            author = f"{revision.author_name} <{revision.author_email}>"
        decision = result.decision or self.decision or Decision()  # this cycle's plan's
        audit = await self._audit(result, desired, decision, revision=controller.revision)
        audit += self._resume_records(controller.revision, author, now)
        if result.plan is not None:  # what changed in what observed-only resources show
            audit += observation_records(
                result.plan, fetched.previous, statuses, revision=controller.revision, now=now
            )
        report = build_report(
            controller=controller,
            statuses=statuses,
            drift=drift,
            audit=audit,
            plan_hash=result.execution.plan_hash
            if result.execution
            else (result.plan.content_hash if result.plan else None),
            plan_summary=_plan_summary(result),
            author=author,
            now=now,
            status_files=self._status_files,
        )
        return await self._commit(result, report, statuses, controller.revision, now)

    async def _statuses_and_drift(
        self,
        result: CycleResult,
        cover: Coverage | None,
        previous: Mapping[str, ResourceStatus],
        found: Diff | None,
        observed: ObservedState | None,
        now: datetime,
    ) -> tuple[dict[str, ResourceStatus], list[Any]]:
        """Every resource's next status and the drift entries; the resources this cycle
        did not cover keep theirs."""
        statuses = dict(previous)
        drift: list[Any] = []
        if cover is not None and found is not None and result.plan is not None:
            desired = cover.desired
            records = self.records(previous)
            for key, record in refreshed_records(desired, found, records).items():
                self.journal.record_applied(key, record.to_dict())
                records[key] = record
            statuses, drift = next_statuses(
                records=records,
                desired=desired,
                previous=previous,
                diff=found,
                plan=result.plan,
                execution=result.execution,
                observed=observed,
                now=now,
                resumed=_merged(*(e for e, _ in result.earlier), result.resumed),
            )
        only = cover.reported if cover is not None else None
        if only is not None:
            # A targeted reconcile: every other resource keeps its status and drift entry;
            # a key looked at and no longer declared has none.
            statuses = {**{k: v for k, v in previous.items() if k not in only}, **statuses}
            kept = await asyncio.to_thread(read_drift, self.source.repo, self.writer.branch)
            drift = sorted(
                [e for e in kept if e.key not in only] + drift,
                key=lambda e: e.key,
            )
        return statuses, drift

    def _controller_status(
        self, source: SourceResult, resume_error: str | None, now: datetime
    ) -> ControllerStatus:
        """The controller's own status file: the source's conditions, unreadable status
        files, and a plan that could not be resumed."""
        controller = ControllerStatus(
            repository=canonical_location(self.settings.repo or ""),
            owner=self.repository,
            branch=self.settings.branch,
            revision=source.revision.sha if source.revision else None,
            conditions=unreadable_condition(
                controller_conditions(
                    source,
                    previous_conditions=read_controller_conditions(
                        self.source.repo, self.writer.branch
                    ),
                    now=now,
                ),
                self._unreadable,
                now,
            ),
            invalid_revision=source.head.sha if source.diagnostics and source.head else None,
            errors=tuple(str(d) for d in source.diagnostics),
        )
        if resume_error is not None:
            controller = dataclasses.replace(
                controller,
                conditions=set_condition(
                    controller.conditions, "Ready", "False", "ResumeDeferred",
                    resume_error, now,
                ),
            )  # fmt: skip
        return controller

    async def _commit(
        self,
        result: CycleResult,
        report: CycleReport,
        statuses: dict[str, ResourceStatus],
        revision: str | None,
        now: datetime,
    ) -> CycleResult:
        """Write the status commit; only once it is written are the reported plans
        finished in the journal (a failed push keeps them for the next commit)."""
        files, replaced = dict(report.files), report.managed_prefixes
        files.update(self._rollout_files(result))
        if result.discovered is not None:
            files.update(result.discovered.files())
        else:  # a targeted or incremental cycle looked at part of the fleet: kept
            files.update(
                await asyncio.to_thread(
                    read_files,
                    self.source.repo,
                    self.writer.branch,
                    (DISCOVERED_MD, DISCOVERED_JSON),
                )
            )
        if result.branch_plans is not None:
            files.update(result.branch_plans)
            replaced = (*replaced, f"{PLANS_DIR}/")
        try:
            with self._timed("write"):
                written = await asyncio.to_thread(
                    self.writer.write,
                    files,
                    message=report.message,
                    trailers=report.trailers,
                    replaced=replaced,
                )
        except ReconcilerError as exc:
            # Nothing is lost: the plans stay unreported in the journal (`executed`), and
            # the next commit that lands reports them, in order.
            final = dataclasses.replace(
                result,
                statuses=statuses,
                report=report,
                write_error=REDACTOR.text(str(exc)),
                timings=dict(self._timings),
            )
            failure = WriteFailure(now, final.write_error or "", revision)
            self.journal.set_fact(WRITE_FAILURE, failure.to_fact())
            self.last = final
            return final
        await self._written(result, statuses, now)
        final = dataclasses.replace(
            result,
            statuses=statuses,
            written=written,
            report=report,
            timings=dict(self._timings),
        )
        self.last = final
        return final

    async def _written(
        self, result: CycleResult, statuses: Mapping[str, ResourceStatus], now: datetime
    ) -> None:
        """After a status commit landed: its revision is reconciled, its plans reported,
        and what no longer needs keeping (trees, journal rows, logs) is pruned."""
        source = result.source
        self._resumed = []  # their audit records landed
        if self.journal.fact(WRITE_FAILURE):
            self.journal.set_fact(WRITE_FAILURE, "")  # the status branch is current again
        if source.revision is not None:
            await asyncio.to_thread(self.source.mark_reconciled, source.revision.sha)
        for done in (*(e for e, _ in result.earlier), result.resumed, result.execution):
            if done is not None and not done.stopped:  # a stopped plan is resumed later
                self.journal.mark_reported(done.execution_id)
        await asyncio.to_thread(
            prune_trees, self.state_dir, keep=self.settings.trees_kept, needed=self._needed_trees()
        )
        await asyncio.to_thread(  # journal plans, task logs, providers' operation records
            apply_retention, self.state_dir, Retention.from_settings(self.settings),
            now=now, statuses=statuses, store=self.journal,
        )  # fmt: skip

    def _awaiting_report(self) -> set[str]:
        """The resources of executed plans no status commit reported yet (a push failed).

        A targeted reconcile looks at them too: the commit that reports such a plan's
        audit also holds its resources' statuses, observed afresh."""
        return {
            key
            for row in self.journal.unreported_plans()
            for key in self.journal.outcomes(row.plan_hash)
        }

    def _rollout_files(self, result: CycleResult) -> dict[str, bytes]:
        """`reports/rollouts.json`: each rollout of this cycle's plan with what became of
        its resources, and the pauses the journal holds; kept when nothing was planned."""
        if result.plan is None:
            return read_files(self.source.repo, self.writer.branch, (ROLLOUTS_JSON,))
        states: dict[str, tuple[str, str]] = {}
        for done in (result.resumed, result.execution):
            if done is not None:
                states.update(states_of(done.outcomes))
        paused = {
            name.removeprefix(PAUSE_FACT): str(json.loads(value).get("reason", "paused"))
            for name, value in self.journal.facts(PAUSE_FACT).items()
        }
        progress = rollout_progress(result.plan, states, paused)
        return {ROLLOUTS_JSON: rollouts_json(progress, result.plan.revision).encode()}

    def _earlier(self, result: CycleResult) -> tuple[tuple[ExecutionResult, str | None], ...]:
        """The executed plans no commit reported yet, but this cycle's own, in order."""
        own = {e.execution_id for e in (result.resumed, result.execution) if e is not None}
        return tuple(
            (ExecutionResult.from_journal(self.journal, row.plan_hash, _content_hash(row)),
             row.revision)
            for row in self.journal.unreported_plans()
            if row.plan_hash not in own
        )  # fmt: skip

    def _resume_records(
        self, revision: str | None, author: str | None, now: datetime
    ) -> list[AuditRecord]:
        """Who resumed which paused rollout: by a commit (its author) or through the API."""
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return [
            AuditRecord(
                revision=revision,
                author=author if who.startswith("a commit") else who,
                plan_hash="",
                resource=f"Rollout/{rollout}",
                operation="resume-rollout",
                stage=None,
                task=None,
                result="succeeded",
                started=stamp,
                finished=stamp,
                message=f"resumed by {who}",
            )
            for rollout, who in self._resumed
        ]

    async def _audit(
        self,
        result: CycleResult,
        desired: Desired | None,
        decision: Decision,
        *,
        revision: str | None,
    ) -> list[AuditRecord]:
        """The audit records of the executions this cycle reports (a resumed plan's first),
        each with who asked for its resources' changes (at the plan's own revision), who
        merged and approved them; none of an execution the status branch already holds."""
        rules = self.rules_desired()
        audit: list[AuditRecord] = []
        reports: list[tuple[ExecutionResult | None, str | None, Desired | None, Any]] = [
            *((earlier, at, None, {}) for earlier, at in result.earlier),
            (result.resumed, result.resumed_revision, None, {}),
            (result.execution, revision, desired, decision.approvers),
        ]
        for report, at, declared, counted in reports:
            # Only executions that ended: a stopped one is reported whole once resumed.
            done = _ended(report)
            if done is None:
                continue
            if declared is None and at:
                declared = self.desired_at(at)
            keys = [key for key, outcome in done.outcomes.items() if outcome.tasks]
            asked = await asyncio.to_thread(
                provenance_for,
                self.source.repo,
                self.changes,
                keys,
                cache=self.source.cache,
                revision=at,
                desired=declared,
                rules=rules,
                counted=counted,
            )
            audit += audit_records(done, revision=at, provenance=asked)
        if not audit:
            return audit
        reported = await asyncio.to_thread(
            reported_executions, self.source.repo, self.writer.branch
        )
        return unreported(audit, reported)

    def _needed_trees(self) -> set[str]:
        """The revision an unfinished plan resumes at keeps its materialized tree."""
        unfinished = self.journal.unfinished_plan()
        row = self.journal.plan(unfinished.plan_hash) if unfinished is not None else None
        return {row.revision} if row is not None and row.revision else set()


def _narrowed(
    full: Desired,
    keys: Collection[str],
    *,
    removed: Mapping[str, ResolvedResource] | None = None,
    at_head: bool = True,
) -> Coverage:
    """The declared `keys` of `full`, and the `removed` resources to find orphaned: only
    the providers these use are opened, and only these keys are reported."""
    removed = removed or {}
    desired = subset(full, set(keys) & full.resources.keys())
    names = {r.provider for r in desired.resources.values()}
    names |= {r.provider for r in removed.values()}
    return Coverage(
        full=full,
        desired=desired,
        providers=tuple(name for name in full.providers if name in names),
        narrowed=True,
        removed=removed,
        reported=frozenset(desired.resources.keys() | removed.keys()),
        at_head=at_head,
    )


def _plan_summary(result: CycleResult) -> str:
    if result.plan is None:
        return "No plan: no declared revision is in force."
    scope = f" ({result.scope.describe()})" if isinstance(result.scope, Scope) else ""
    return summary_line(result.plan) + scope


def _content_hash(row: PlanRow) -> str:
    try:
        return Plan.from_json(row.plan_json).content_hash
    except ValueError:
        return row.plan_hash


def _ended(execution: ExecutionResult | None) -> ExecutionResult | None:
    return execution if execution is not None and not execution.stopped else None


def _merged(*executions: ExecutionResult | None) -> ExecutionResult | None:
    """Outcomes of several earlier executions as one (a later one's outcome wins)."""
    present = [e for e in executions if e is not None]
    if not present:
        return None
    outcomes: dict[str, Any] = {}
    for execution in present:
        outcomes.update(execution.outcomes)
    last = present[-1]
    return ExecutionResult(last.execution_id, last.plan_hash, outcomes, last.stopped)


async def _close(providers: Mapping[str, Provider]) -> None:
    for provider in providers.values():
        with contextlib.suppress(Exception):  # closing must never hide the cycle's result
            await provider.close()


__all__ = ["Controller", "CycleResult"]
