"""Reading back what the status branch holds: the edge opposite `writeback`.

Each cycle starts from the last status commit (what was applied, since when, the
controller's conditions, the drift entries a targeted reconcile carries over).
Reads go through the mirror's object database, never a checkout. Status files are
read tolerantly (a field this version does not know is ignored); one that still
cannot be read (a hand edit broke its YAML, a value of the wrong type) does not fail
the cycle: it is named, with why, and the controller reports it as a condition of
its own (`unreadable_condition`: Failed, `StatusUnreadable`) — the resource's last
applied state is the journal's, not the file's. `reported_executions` names the
executions whose audit the last status commits hold (a plan resumed after a crash
that came after its status push is not reported twice).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pygit2
import yaml
from pygit2.enums import SortMode

from reconciler.model.status import Condition, ResourceStatus, remove_condition, set_condition
from reconciler.report.report import EXECUTIONS_TRAILER, REPORTS_DIR, STATUS_DIR, DriftEntry
from reconciler.source.writeback import parse_trailers

UNREADABLE_REASON = "StatusUnreadable"


def status_tree(repo: pygit2.Repository, branch: str) -> pygit2.Tree | None:
    """The tree of the status branch's tip in the mirror, or None before the first commit."""
    try:
        return repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit).tree
    except (KeyError, ValueError, pygit2.GitError):
        return None


def _blob_at(tree: pygit2.Tree | None, path: str) -> bytes | None:
    """The bytes of the file at `path` in `tree`; None when there is no file there."""
    try:
        found = tree[path] if tree is not None else None
    except KeyError:
        return None
    return found.data if isinstance(found, pygit2.Blob) else None


def _parse_status(data: bytes) -> tuple[ResourceStatus | None, str | None]:
    try:
        return ResourceStatus.from_yaml(data.decode()), None
    except Exception as exc:  # any bytes: a hand edit, another tool, a truncated file
        return None, _why(exc)


def _why(exc: Exception) -> str:
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"not YAML{where}: {getattr(exc, 'problem', None) or exc}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic: the first field that does not fit
        first = (errors() or [{}])[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "the document"
        return f"{loc}: {first.get('msg', 'invalid')}"
    return f"{type(exc).__name__}: {exc}"


def read_statuses(
    repo: pygit2.Repository,
    branch: str,
    cache: dict[pygit2.Oid, ResourceStatus | None] | None = None,
    unreadable: dict[str, str] | None = None,
) -> dict[str, ResourceStatus]:
    """Every resource status on the status branch (what was last applied, and since when).

    With a `cache` (blob id -> parsed status, kept across calls), a file unchanged
    since the last read is not parsed again; the cache keeps only the blobs read now.
    `unreadable` (if given) is filled with the path of each file that could not be
    read and why.
    """
    tree = status_tree(repo, branch)
    if tree is None or STATUS_DIR not in tree:
        return {}
    statuses: dict[str, ResourceStatus] = {}
    known = dict(cache) if cache is not None else {}
    seen: dict[pygit2.Oid, ResourceStatus | None] = {}
    folder = tree[STATUS_DIR]
    kinds = folder if isinstance(folder, pygit2.Tree) else ()
    for kind_entry in kinds:
        if not isinstance(kind_entry, pygit2.Tree):
            continue
        for entry in kind_entry:
            if not isinstance(entry, pygit2.Blob) or not (entry.name or "").endswith(".yaml"):
                continue
            path = f"{STATUS_DIR}/{kind_entry.name}/{entry.name}"
            if entry.id in known and (known[entry.id] is not None or unreadable is None):
                status = known[entry.id]
            else:  # (an unreadable one is parsed again to say why: rare)
                status, why = _parse_status(entry.data)
                if why is not None and unreadable is not None:
                    unreadable[path] = why
            seen[entry.id] = status
            if status is not None:
                statuses[status.key] = status
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return statuses


def unreadable_condition(
    conditions: tuple[Condition, ...], unreadable: Mapping[str, str], now: datetime
) -> tuple[Condition, ...]:
    """The controller's conditions with Failed=True `StatusUnreadable` naming the status
    files that could not be read, or without it when every one could. Pure."""
    if not unreadable:
        failed = next((c for c in conditions if c.type == "Failed"), None)
        if failed is not None and failed.reason == UNREADABLE_REASON:
            return remove_condition(conditions, "Failed")
        return conditions
    shown = "; ".join(f"{path}: {why}" for path, why in sorted(unreadable.items())[:5])
    more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
    message = (
        f"{len(unreadable)} status file(s) on the status branch could not be read: "
        f"{shown}{more}; their resources' last applied state is the journal's, and this "
        "cycle writes their status again"
    )
    return set_condition(conditions, "Failed", "True", UNREADABLE_REASON, message, now)


def reported_executions(repo: pygit2.Repository, branch: str, *, depth: int = 20) -> set[str]:
    """The executions whose audit records the last `depth` status commits added (their
    `Executions` trailers)."""
    try:
        tip = repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return set()
    walker = repo.walk(tip.id, SortMode.TOPOLOGICAL)
    walker.simplify_first_parent()
    found: set[str] = set()
    for index, commit in enumerate(walker):
        if index >= depth:
            break
        named = parse_trailers(commit.message).get(EXECUTIONS_TRAILER, "")
        found.update(e.strip() for e in named.split(",") if e.strip())
    return found


@dataclass(frozen=True)
class ControllerShown:
    """`status/controller.yaml` as read back (for `reconciler status`)."""

    branch: str
    revision: str | None
    conditions: tuple[Condition, ...] = ()
    invalid_revision: str | None = None
    errors: tuple[str, ...] = ()


def read_controller(repo: pygit2.Repository, branch: str) -> ControllerShown | None:
    """The controller's file on the status branch; None when there is none. Read
    tolerantly: a condition that cannot be read is left out."""
    text = _blob_at(status_tree(repo, branch), f"{STATUS_DIR}/controller.yaml")
    try:
        data = yaml.safe_load(text) if text is not None else None
    except (ValueError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    conditions = []
    listed = data.get("conditions")
    for item in listed if isinstance(listed, list) else ():
        try:
            conditions.append(Condition.model_validate(item))
        except ValueError:
            continue
    invalid = data.get("invalidRevision")
    if not isinstance(invalid, dict):
        invalid = {}
    revision = data.get("revision")
    return ControllerShown(
        branch=str(data.get("branch") or ""),
        revision=revision if isinstance(revision, str) else None,
        conditions=tuple(conditions),
        invalid_revision=invalid.get("revision"),
        errors=tuple(str(e) for e in invalid.get("errors") or ()),
    )


def read_controller_conditions(repo: pygit2.Repository, branch: str) -> tuple[Condition, ...]:
    """The controller's last conditions; none when its file is missing or cannot be read
    (a hand edit may leave any YAML there: a list, a number where the list belongs)."""
    text = _blob_at(status_tree(repo, branch), f"{STATUS_DIR}/controller.yaml")
    try:
        data = yaml.safe_load(text) if text is not None else None
    except (ValueError, yaml.YAMLError):
        return ()
    listed = data.get("conditions") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return ()
    try:
        return tuple(Condition.model_validate(c) for c in listed)
    except ValueError:
        return ()


def read_drift(repo: pygit2.Repository, branch: str) -> list[DriftEntry]:
    """The drift entries of the last drift report (kept for resources a targeted reconcile
    did not look at)."""
    text = _blob_at(status_tree(repo, branch), f"{REPORTS_DIR}/drift.json")
    try:
        data = json.loads(text) if text is not None else {}
    except ValueError:
        return []
    listed = data.get("drifted") if isinstance(data, dict) else None
    entries = []
    for item in listed if isinstance(listed, list) else ():
        try:
            entries.append(_drift_entry(item))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # an entry edited out of shape: left out, the next report has it again
    return entries


def read_files(repo: pygit2.Repository, branch: str, paths: Iterable[str]) -> dict[str, bytes]:
    """The given files of the status branch's tip, those that exist (a report a cycle
    that did not recompute it carries over)."""
    tree = status_tree(repo, branch)
    found: dict[str, bytes] = {}
    for path in paths:
        data = _blob_at(tree, path)
        if data is not None:
            found[path] = data
    return found


def _drift_entry(item: Any) -> DriftEntry:
    since = item.get("since")
    return DriftEntry(
        key=str(item["resource"]),
        since=datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if since else None,
        corrected=bool(item.get("corrected")),
        reason=item.get("reason", ""),
        fields=tuple(item.get("fields", ())),
    )


__all__ = [
    "ControllerShown",
    "read_controller",
    "read_controller_conditions",
    "read_drift",
    "read_files",
    "read_statuses",
    "reported_executions",
    "status_tree",
    "unreadable_condition",
]
