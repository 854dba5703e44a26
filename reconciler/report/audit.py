"""Audit: the history of resources, read back from the status branch — for auditors.

Reads only, after the fact (the controller writes these in `report`): the
append-only `audit/` records (one JSON line per task run: declared revision,
the change that asked for it — its commit, author, who merged it — every
approval, verified or claimed, plan hash, execution id, stage, task, result,
the journal's times, operation id) and the status commits (their trailers, and
the status file of a resource each one changed). Behind `reconciler audit
[KIND/NAME] [--since DATE] [--output json]`:

- an *action* entry per resource and execution: who asked (the commit that
  changed it, its subject and author), who merged it, who approved it (and
  whether that was verified or only claimed), at which declared revision, what
  ran (stages, tasks, operation ids) and how it ended;
- a *status* entry per status commit that changed the resource's phase or Ready
  condition (blocked, failed, drifted, reconciled), with the revision it reconciled.

`history()` is pure over what `read_history()` gathers from the repository.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pygit2
import yaml
from pygit2.enums import SortMode

from reconciler.report.provenance import Approval
from reconciler.report.report import AUDIT_DIR, EXECUTIONS_TRAILER, STATUS_DIR, AuditRecord
from reconciler.source.writeback import parse_trailers


@dataclass(frozen=True)
class Declared:
    """A declared revision as the mirror knows it."""

    sha: str
    subject: str = ""
    author: str = ""


@dataclass(frozen=True)
class StatusEvent:
    """A status commit that changed one resource's status."""

    resource: str
    commit: str
    time: str
    revision: str | None
    phase: str | None
    reason: str = ""
    message: str = ""
    cycle: int = 0
    """The status commit's position on the branch (0 = oldest)."""


@dataclass(frozen=True)
class Cycle:
    """One status commit: its position, time and the plan it executed (`Plan-Hash`)."""

    index: int
    time: datetime
    plan_hash: str | None
    executions: frozenset[str] = frozenset()
    """The executions whose audit records it added (`Executions` trailer)."""


@dataclass(frozen=True)
class Entry:
    """One line of a resource's history (`kind` is `action` or `status`)."""

    kind: str
    time: str
    resource: str
    revision: str | None
    subject: str = ""
    author: str | None = None
    approvers: tuple[str, ...] = ()
    change: str | None = None
    """The commit that asked for it (changed a document the resource resolves from)."""
    change_subject: str = ""
    committer: str | None = None
    """Who merged the change, else who committed it."""
    merge: str | None = None
    approvals: tuple[Mapping[str, Any], ...] = ()
    """Every approval: name, commit, `verified` or `claimed`, via trailer or signature."""
    execution: str | None = None
    plan_hash: str | None = None
    operation: str | None = None
    stages: tuple[str, ...] = ()
    result: str | None = None
    finished: str | None = None
    tasks: tuple[Mapping[str, Any], ...] = ()
    status_commit: str | None = None
    phase: str | None = None
    reason: str = ""
    message: str = ""

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = [dict(t) for t in self.tasks]
        data["approvals"] = [dict(a) for a in self.approvals]
        return {k: v for k, v in data.items() if v not in (None, "", (), [])}


def parse_time(value: str) -> datetime:
    """ISO time (`Z` or an offset) or a date, as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reading the repository ---------------------------------------------------------------


def _blobs_under(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str) -> Iterable[bytes]:
    for entry in tree:
        if isinstance(entry, pygit2.Tree):
            yield from _blobs_under(repo, entry, f"{prefix}{entry.name}/")
        elif isinstance(entry, pygit2.Blob) and (entry.name or "").endswith(".jsonl"):
            yield entry.data


def read_records(repo: pygit2.Repository, tip: pygit2.Commit) -> list[AuditRecord]:
    """Every audit record on the status branch (its tip holds them all: append-only)."""
    try:
        audit = tip.tree[AUDIT_DIR]
    except KeyError:
        return []
    if not isinstance(audit, pygit2.Tree):
        return []
    records = []
    fields = set(AuditRecord.__dataclass_fields__)
    for data in _blobs_under(repo, audit, f"{AUDIT_DIR}/"):
        for line in data.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            if not isinstance(raw, dict):
                continue
            raw = {k: v for k, v in raw.items() if k in fields}
            try:
                raw["approvers"] = tuple(str(a) for a in raw.get("approvers") or ())
                raw["approvals"] = tuple(Approval.from_data(a) for a in raw.get("approvals") or ())
                records.append(AuditRecord(**raw))
            except (TypeError, AttributeError):
                continue
    return records


def _shown_state(
    repo: pygit2.Repository, commit: pygit2.Commit, path: str
) -> tuple[Any, Any, Any] | None:
    """(phase, reason, message) of a status file in a commit: its Stalled or Failed
    condition, else its Ready one. None when the commit has no readable status there:
    absent, not YAML, or YAML of another shape (the branch can be edited by hand)."""
    try:
        blob = commit.tree[path]
    except KeyError:
        return None
    if not isinstance(blob, pygit2.Blob):
        return None
    try:
        data = yaml.safe_load(blob.data) or {}
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    listed = data.get("conditions")
    conditions = [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
    ready = next((c for c in conditions if c.get("type") == "Ready"), {})
    stalled = next((c for c in conditions if c.get("type") in ("Stalled", "Failed")), {})
    shown = stalled or ready
    return (data.get("phase"), shown.get("reason"), shown.get("message"))


def status_events(
    repo: pygit2.Repository, tip: pygit2.Commit, resources: Iterable[str]
) -> tuple[list[StatusEvent], list[Cycle]]:
    """For each resource, the status commits that changed its phase or Ready condition;
    and every status commit (cycle) in order."""
    paths = {}
    for key in resources:
        kind, _, name = key.partition("/")
        paths[key] = f"{STATUS_DIR}/{kind}/{name}.yaml"
    walker = repo.walk(tip.id, SortMode.TOPOLOGICAL | SortMode.REVERSE)
    walker.simplify_first_parent()
    last: dict[str, tuple[Any, ...]] = {}
    events: list[StatusEvent] = []
    cycles: list[Cycle] = []
    for index, commit in enumerate(walker):
        trailers = parse_trailers(commit.message)
        moment = datetime.fromtimestamp(commit.commit_time, UTC)
        named = trailers.get(EXECUTIONS_TRAILER, "")
        executions = frozenset(e.strip() for e in named.split(",") if e.strip())
        cycles.append(Cycle(index, moment, trailers.get("Plan-Hash"), executions))
        for key, path in paths.items():
            state = _shown_state(repo, commit, path)
            if state is None or last.get(key) == state:
                continue
            last[key] = state
            events.append(
                StatusEvent(
                    resource=key,
                    commit=str(commit.id),
                    time=_iso(moment),
                    revision=trailers.get("Reconciled-Revision"),
                    phase=state[0],
                    reason=state[1] or "",
                    message=state[2] or "",
                    cycle=index,
                )
            )
    return events, cycles


def declared_revisions(repo: pygit2.Repository, shas: Iterable[str | None]) -> dict[str, Declared]:
    out: dict[str, Declared] = {}
    for sha in shas:
        if not sha or sha in out:
            continue
        try:
            found = repo.get(sha)
            commit = found.peel(pygit2.Commit) if found is not None else None
        except (KeyError, ValueError, AttributeError, pygit2.GitError):
            commit = None
        if commit is None:
            out[sha] = Declared(sha)
            continue
        out[sha] = Declared(
            sha,
            subject=commit.message.split("\n", 1)[0],
            author=f"{commit.author.name} <{commit.author.email}>",
        )
    return out


@dataclass(frozen=True)
class Gathered:
    records: list[AuditRecord]
    events: list[StatusEvent]
    declared: Mapping[str, Declared] = field(default_factory=dict)
    cycles: list[Cycle] = field(default_factory=list)


def read_history(repo: pygit2.Repository, branch: str, resource: str | None) -> Gathered | None:
    """Everything the history needs from the mirror; None when the status branch is absent."""
    try:
        tip = repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    records = read_records(repo, tip)
    if resource is not None:
        records = [r for r in records if r.resource == resource]
    keys = [resource] if resource is not None else sorted({r.resource for r in records})
    events, cycles = status_events(repo, tip, keys)
    declared = declared_revisions(
        repo,
        [r.revision for r in records] + [r.change for r in records] + [e.revision for e in events],
    )
    return Gathered(records, events, declared, cycles)


# --- the story ------------------------------------------------------------------------------


def _cycle_of(
    cycles: list[Cycle], execution: str | None, plan_hash: str | None, finished: datetime
) -> int:
    """The status commit that reported an execution: the one naming it, else the one
    naming its plan, else the first committed after it finished (commit times have
    whole seconds)."""
    for cycle in cycles:
        if execution and execution in cycle.executions:
            return cycle.index
    for cycle in cycles:
        if plan_hash and cycle.plan_hash == plan_hash:
            return cycle.index
    for cycle in cycles:
        if cycle.time >= finished.replace(microsecond=0):
            return cycle.index
    return len(cycles)


def _approvals(records: Iterable[AuditRecord]) -> tuple[Mapping[str, Any], ...]:
    """Every approval on an action's records, each once, as data."""
    seen = dict.fromkeys(a for r in records for a in r.approvals)
    return tuple(a.to_data() for a in seen)


def history(gathered: Gathered, *, since: datetime | None = None) -> list[Entry]:
    """Action and status entries, oldest first: who asked, what ran, what happened.

    Ordered by status commit (an execution just before the commit that reported
    it), which stays right when several cycles fall within the same second.
    """
    order: dict[int, tuple[int, int]] = {}
    groups: dict[tuple[str, str], list[AuditRecord]] = {}
    for record in gathered.records:
        run = record.execution or record.plan_hash
        groups.setdefault((record.resource, run), []).append(record)
    entries: list[Entry] = []
    for (resource, _run), records in groups.items():
        records.sort(key=lambda r: r.started)
        first = records[0]
        declared = gathered.declared.get(first.revision or "", Declared(first.revision or ""))
        change = gathered.declared.get(first.change or "", Declared(first.change or ""))
        failed = [r for r in records if r.result not in ("succeeded", "skipped")]
        finished = max(r.finished for r in records)
        order[len(entries)] = (
            _cycle_of(gathered.cycles, first.execution, first.plan_hash, parse_time(finished)),
            0,
        )
        # Records before provenance (no execution id) named the revision's author.
        author = first.author or (None if first.execution else declared.author or None)
        entries.append(
            Entry(
                kind="action",
                time=_iso(parse_time(first.started)),
                resource=resource,
                revision=first.revision,
                subject=declared.subject,
                author=author,
                approvers=tuple(dict.fromkeys(a for r in records for a in r.approvers)),
                change=first.change,
                change_subject=change.subject,
                committer=first.committer,
                merge=first.merge,
                approvals=_approvals(records),
                execution=first.execution,
                plan_hash=first.plan_hash,
                operation=first.operation,
                stages=tuple(dict.fromkeys(r.stage for r in records if r.stage)),
                result=failed[-1].result if failed else "succeeded",
                finished=_iso(parse_time(finished)),
                tasks=tuple(
                    {
                        "stage": r.stage,
                        "task": r.task,
                        "result": r.result,
                        "started": r.started,
                        "finished": r.finished,
                        **({"operationId": r.operation_id} if r.operation_id else {}),
                        **({"message": r.message} if r.message else {}),
                    }
                    for r in records
                ),
            )
        )
    for event in gathered.events:
        declared = gathered.declared.get(event.revision or "", Declared(event.revision or ""))
        order[len(entries)] = (event.cycle, 1)
        entries.append(
            Entry(
                kind="status",
                time=event.time,
                resource=event.resource,
                revision=event.revision,
                subject=declared.subject,
                status_commit=event.commit,
                phase=event.phase,
                reason=event.reason,
                message=event.message,
            )
        )
    ranked = sorted(range(len(entries)), key=lambda i: (*order[i], entries[i].resource))
    story = [entries[i] for i in ranked]
    if since is not None:
        story = [e for e in story if parse_time(e.time) >= since]
    return story


def render_text(entries: list[Entry], resource: str | None) -> str:
    what = resource or "every resource"
    if not entries:
        return f"No history for {what}.\n"
    lines = [f"History of {what}: {len(entries)} entries", ""]
    for e in entries:
        revision = (e.revision or "none")[:12]
        subject = f' "{e.subject}"' if e.subject else ""
        if e.kind == "action":
            lines.append(f"{e.time}  {e.resource}  {e.operation}  revision {revision}{subject}")
            asked = e.author or "unknown"
            if e.change:
                said = f' "{e.change_subject}"' if e.change_subject else ""
                asked += f" (commit {e.change[:12]}{said})"
            lines.append(f"    asked by:    {asked}")
            if e.committer:
                merge = f" (merge {e.merge[:12]})" if e.merge else ""
                lines.append(f"    merged by:   {e.committer}{merge}")
            if e.approvals:
                shown = [
                    f"{a['name']} ({a['status']}"
                    + (", signature" if a.get("via") == "signature" else "")
                    + (f", commit {a['commit'][:12]})" if a.get("commit") else ")")
                    for a in e.approvals
                ]
                lines.append(f"    approved by: {', '.join(shown)}")
            elif e.approvers:
                lines.append(f"    approved by: {', '.join(e.approvers)}")
            lines.append(f"    plan:        {(e.plan_hash or '')[:16]}")
            lines.append(f"    ran:         {' → '.join(e.stages) or '-'}")
            for task in e.tasks:
                op = f"  operation {task['operationId']}" if task.get("operationId") else ""
                lines.append(f"      {task['stage']}: {task['task']}  {task['result']}{op}")
            lines.append(f"    result:      {e.result} at {e.finished}")
        else:
            lines.append(
                f"{e.time}  {e.resource}  status {e.phase}"
                + (f" ({e.reason}: {e.message})" if e.reason else "")
            )
            lines.append(
                f"    status commit {(e.status_commit or '')[:12]}, "
                f"reconciled revision {revision}{subject}"
            )
        lines.append("")
    return "\n".join(lines)


def render_json(entries: list[Entry], resource: str | None) -> str:
    return (
        json.dumps(
            {"resource": resource, "entries": [e.to_data() for e in entries]},
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
