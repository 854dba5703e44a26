"""Report: a cycle's statuses, drift and audit records -> the files of ONE status commit.

Step 7 of the flow, pure: values in, `{path: bytes}` plus a commit message and
trailers out; `reconciler.source` commits and pushes them. Everything written is
deterministic for the same state (no "last run at" stamps), so a cycle that
changed nothing produces byte-identical files and therefore no commit.

What is written (see README, "What the controller writes back"):

- `status/<Kind>/<name>.yaml` — phase, conditions, stage reached, observed state,
  `lastApplied` (revision, resolution, stages done: the journal's record);
  `status/controller.yaml` — the source's own conditions (which revision is in
  force, why it may be stale, the last invalid revision's errors);
- `reports/drift.md` and `reports/drift.json` — what differs and since when;
- `audit/YYYY/MM/DD/<time>-<execution>-<digest>.jsonl` — one JSON line per task run,
  a new file per execution reported (named by the execution id and the digest of
  its content, so two executions within one second never collide), never rewritten;
  the commit's `Executions` trailer names the executions it reported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from reconciler.model.status import Condition, ResourceStatus, worst_phase
from reconciler.report.provenance import Approval
from reconciler.report.yaml_text import dump_yaml
from reconciler.secrets import REDACTOR

STATUS_DIR = "status"
REPORTS_DIR = "reports"
AUDIT_DIR = "audit"
EXECUTIONS_TRAILER = "Executions"
"""The status commit's trailer naming the executions whose audit records it added."""


@dataclass(frozen=True)
class AuditRecord:
    """One task run: who asked (the change, its author, who merged and approved it), at
    which revision, what ran, when (the journal's times), what happened."""

    revision: str | None
    author: str | None
    """Who asked: the author of the commit that introduced the change (`change`)."""
    plan_hash: str
    resource: str
    operation: str
    stage: str | None
    task: str | None
    result: str
    started: str
    finished: str
    message: str = ""
    operation_id: str | None = None
    approvers: tuple[str, ...] = ()
    """The verified approvers' names (see `approvals` for every one, verified or claimed)."""
    execution: str | None = None
    """The execution id (one run of the plan; a resumed one keeps it)."""
    change: str | None = None
    """The newest commit that changed a document the resource resolves from."""
    committer: str | None = None
    """Who merged the change (the merge commit's author), else who committed it."""
    merge: str | None = None
    """The merge commit that brought the change into the tracked branch, if any."""
    approvals: tuple[Approval, ...] = ()

    def to_json(self) -> str:
        # Its fields by name, not `asdict`: that deep-copies every value, and a cycle
        # writes one record per task (3,000 for 1,000 machines of 3 stages).
        data = {name: getattr(self, name) for name in _AUDIT_FIELDS}
        data["approvals"] = [a.to_data() for a in self.approvals]
        return json.dumps(REDACTOR.data(data), sort_keys=True, separators=(",", ":"))


_AUDIT_FIELDS = tuple(f.name for f in fields(AuditRecord))


@dataclass(frozen=True)
class DriftEntry:
    """One resource that differs from Git without Git having asked for it."""

    key: str
    since: datetime | None
    corrected: bool
    reason: str = ""
    fields: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ControllerStatus:
    """The source's side of the cycle: which revision is in force and why."""

    repository: str
    branch: str
    revision: str | None
    conditions: tuple[Condition, ...] = ()
    invalid_revision: str | None = None
    errors: tuple[str, ...] = ()
    owner: str = ""
    """The identity recorded on what this controller owns (`reconciler.source.identity`)."""

    def to_yaml(self) -> str:
        data: dict[str, Any] = {
            "repository": REDACTOR.text(self.repository),
            "owner": REDACTOR.text(self.owner or self.repository),
            "branch": self.branch,
            "revision": self.revision,
            "conditions": [c.model_dump(mode="json", by_alias=True) for c in self.conditions],
        }
        if self.invalid_revision:
            data["invalidRevision"] = {
                "revision": self.invalid_revision,
                "errors": list(self.errors),
            }
        return dump_yaml(REDACTOR.data(data))


@dataclass(frozen=True)
class WriteFailure:
    """Why the last status commit could not be written, and when: kept in the journal
    (the status branch cannot say it), shown at the top of `reconciler status`."""

    at: datetime
    error: str
    revision: str | None = None

    def to_fact(self) -> str:
        data = {"at": self.at.isoformat(), "error": self.error, "revision": self.revision}
        return json.dumps(REDACTOR.data(data), sort_keys=True)

    @classmethod
    def from_fact(cls, text: str | None) -> WriteFailure | None:
        """The journal fact's value; None when empty (written since) or unreadable."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                at=datetime.fromisoformat(data["at"]),
                error=str(data.get("error", "")),
                revision=data.get("revision"),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class CycleReport:
    files: Mapping[str, bytes]
    message: str
    trailers: Mapping[str, str] = field(default_factory=dict)
    managed_prefixes: tuple[str, ...] = (f"{STATUS_DIR}/", f"{REPORTS_DIR}/")
    """Folders the writer owns whole: files there that are not in `files` are removed.
    `audit/` is not among them: audit files are only ever added."""


def status_path(kind: str, name: str) -> str:
    return f"{STATUS_DIR}/{kind}/{name}.yaml"


def audit_path(now: datetime, execution: str, content: bytes) -> str:
    """Where one execution's records go: its id and the digest of the file's bytes make
    the name unique (two executions within a second, one reported twice with more)."""
    digest = hashlib.sha256(content).hexdigest()[:8]
    return f"{AUDIT_DIR}/{now:%Y/%m/%d}/{now:%Y%m%dT%H%M%SZ}-{execution[:12]}-{digest}.jsonl"


def audit_files(records: Sequence[AuditRecord], now: datetime) -> dict[str, bytes]:
    """One file per execution, records in the order given."""
    by_execution: dict[str, list[AuditRecord]] = {}
    for record in records:
        by_execution.setdefault(record.execution or record.plan_hash, []).append(record)
    files = {}
    for execution, group in by_execution.items():
        content = ("\n".join(record.to_json() for record in group) + "\n").encode()
        files[audit_path(now, execution, content)] = content
    return files


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def drift_markdown(entries: Sequence[DriftEntry], revision: str | None) -> str:
    lines = ["# Drift report", ""]
    lines.append(f"Declared revision: `{revision or 'unknown'}`")
    lines.append("")
    if not entries:
        lines.append("No drift: every observed resource matches what Git last applied.")
        return "\n".join(lines) + "\n"
    lines.append(f"{len(entries)} resource(s) differ from Git outside Git:")
    lines.append("")
    lines.append("| resource | since | field | declared | observed | action |")
    lines.append("|---|---|---|---|---|---|")
    for entry in entries:
        since = entry.since.strftime("%Y-%m-%dT%H:%M:%SZ") if entry.since else "-"
        action = "corrected (selfHeal)" if entry.corrected else "reported only"
        rows = entry.fields or ({"path": "-", "declared": None, "observed": entry.reason},)
        for row in rows:
            lines.append(
                f"| `{entry.key}` | {since} | `{row.get('path')}` | "
                f"`{_value(row.get('declared'))}` | `{_value(row.get('observed'))}` | {action} |"
            )
    return REDACTOR.text("\n".join(lines) + "\n")


def drift_json(entries: Sequence[DriftEntry], revision: str | None) -> str:
    data = {
        "revision": revision,
        "drifted": [
            {
                "resource": e.key,
                "since": e.since.strftime("%Y-%m-%dT%H:%M:%SZ") if e.since else None,
                "corrected": e.corrected,
                "reason": e.reason,
                "fields": [dict(f) for f in e.fields],
            }
            for e in entries
        ],
    }
    return json.dumps(REDACTOR.data(data), indent=2, sort_keys=True) + "\n"


def status_file(status: ResourceStatus) -> bytes:
    """`ResourceStatus.to_yaml`'s text, redacted on the way (not dumped, redacted,
    validated and dumped again: a fifth of the time of a report)."""
    data = REDACTOR.data(status.model_dump(mode="json", by_alias=True, exclude_none=True))
    return dump_yaml(data).encode()


class StatusFiles:
    """Status file text by path, kept by a long-running controller between cycles.

    A status equal to the one rendered last cycle (carried over, or recomputed with
    nothing new) is not dumped again: a cycle over 10,000 resources dumps only the
    few that changed. Emptied when the redactor learns a new secret.
    """

    def __init__(self) -> None:
        self._texts: dict[str, tuple[ResourceStatus, bytes]] = {}
        self._generation = REDACTOR.generation

    def __call__(self, statuses: Iterable[ResourceStatus]) -> dict[str, bytes]:
        if self._generation != REDACTOR.generation:
            self._texts, self._generation = {}, REDACTOR.generation
        texts: dict[str, tuple[ResourceStatus, bytes]] = {}
        for status in statuses:
            path = status_path(status.kind, status.name)
            known = self._texts.get(path)
            if known is not None and (known[0] is status or known[0] == status):
                texts[path] = known
            else:
                texts[path] = (status, status_file(status))
        self._texts = texts
        return {path: text for path, (_status, text) in texts.items()}


def build_report(
    *,
    controller: ControllerStatus,
    statuses: Mapping[str, ResourceStatus],
    drift: Sequence[DriftEntry],
    audit: Sequence[AuditRecord],
    plan_hash: str | None,
    plan_summary: str,
    author: str | None,
    now: datetime,
    status_files: Callable[[Iterable[ResourceStatus]], dict[str, bytes]] | None = None,
) -> CycleReport:
    """The files, message and trailers of this cycle's one status commit.

    `status_files` renders the status files (a `StatusFiles` keeps them between cycles).
    """
    files: dict[str, bytes] = {
        f"{STATUS_DIR}/controller.yaml": controller.to_yaml().encode(),
    }
    if status_files is not None:
        files.update(status_files(statuses.values()))
    else:
        for status in statuses.values():
            files[status_path(status.kind, status.name)] = status_file(status)
    files[f"{REPORTS_DIR}/drift.md"] = drift_markdown(drift, controller.revision).encode()
    files[f"{REPORTS_DIR}/drift.json"] = drift_json(drift, controller.revision).encode()
    files.update(audit_files(audit, now))

    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status.phase] = counts.get(status.phase, 0) + 1
    health = worst_phase(list(counts))
    revision = controller.revision or "none"
    shown = (
        ", ".join(f"{n} {phase.lower()}" for phase, n in sorted(counts.items())) or "no resources"
    )
    message = f"reconcile {revision[:12]}: {shown}\n\n{plan_summary}\n"
    trailers = {
        "Reconciled-Revision": revision,
        "Reconciled-Health": health,
        "Resources": str(len(statuses)),
        **{f"Resources-{phase}": str(n) for phase, n in sorted(counts.items())},
        "Drifted": str(len(drift)),
        "Actions": str(len(audit)),
    }
    if author:
        trailers["Declared-By"] = author
    if plan_hash:
        trailers["Plan-Hash"] = plan_hash
    executions = list(dict.fromkeys(r.execution for r in audit if r.execution))
    if executions:
        trailers[EXECUTIONS_TRAILER] = ", ".join(executions)
    return CycleReport(files=files, message=REDACTOR.text(message), trailers=trailers)
