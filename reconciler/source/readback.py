"""Reading back what the status branch holds: the edge opposite `writeback`.

Each cycle starts from the last status commit (what was applied, since when, the
controller's conditions, the drift entries a targeted reconcile carries over).
Reads go through the mirror's object database, never a checkout; a status file
edited by hand into something unreadable is skipped rather than failing a cycle.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pygit2
import yaml

from reconciler.report import REPORTS_DIR, STATUS_DIR, DriftEntry
from reconciler.status import Condition, ResourceStatus


def status_tree(repo: pygit2.Repository, branch: str) -> pygit2.Tree | None:
    """The tree of the status branch's tip in the mirror, or None before the first commit."""
    try:
        return repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit).tree
    except (KeyError, ValueError, pygit2.GitError):
        return None


def read_statuses(
    repo: pygit2.Repository,
    branch: str,
    cache: dict[pygit2.Oid, ResourceStatus | None] | None = None,
) -> dict[str, ResourceStatus]:
    """Every resource status on the status branch (what was last applied, and since when).

    With a `cache` (blob id -> parsed status, kept across calls), a file unchanged
    since the last read is not parsed again; the cache keeps only the blobs read now.
    """
    tree = status_tree(repo, branch)
    if tree is None or STATUS_DIR not in tree:
        return {}
    statuses: dict[str, ResourceStatus] = {}
    known = dict(cache) if cache is not None else {}
    seen: dict[pygit2.Oid, ResourceStatus | None] = {}
    for kind_entry in repo[tree[STATUS_DIR].id]:
        if kind_entry.type_str != "tree":
            continue
        for entry in repo[kind_entry.id]:
            if not entry.name.endswith(".yaml"):
                continue
            if entry.id in known:
                status = known[entry.id]
            else:
                try:
                    status = ResourceStatus.from_yaml(repo[entry.id].data.decode())
                except Exception:  # a status file edited by hand is not worth failing over
                    status = None
            seen[entry.id] = status
            if status is not None:
                statuses[status.key] = status
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return statuses


def read_controller_conditions(repo: pygit2.Repository, branch: str) -> tuple[Condition, ...]:
    tree = status_tree(repo, branch)
    path = f"{STATUS_DIR}/controller.yaml"
    try:
        data = yaml.safe_load(repo[tree[path].id].data) if tree is not None else None
        return tuple(Condition.model_validate(c) for c in (data or {}).get("conditions", []))
    except (KeyError, ValueError, yaml.YAMLError):
        return ()


def read_drift(repo: pygit2.Repository, branch: str) -> list[DriftEntry]:
    """The drift entries of the last drift report (kept for resources a targeted reconcile
    did not look at)."""
    tree = status_tree(repo, branch)
    path = f"{REPORTS_DIR}/drift.json"
    try:
        data = json.loads(repo[tree[path].id].data) if tree is not None else {}
    except (KeyError, ValueError):
        return []
    entries = []
    for item in data.get("drifted", []):
        since = item.get("since")
        entries.append(
            DriftEntry(
                key=item["resource"],
                since=datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                if since
                else None,
                corrected=bool(item.get("corrected")),
                reason=item.get("reason", ""),
                fields=tuple(item.get("fields", ())),
            )
        )
    return entries


__all__ = ["read_controller_conditions", "read_drift", "read_statuses", "status_tree"]
