"""Plans for pull requests: each watched branch's plan as `plans/<branch>.md` on the status branch.

Part of the controller's cycle, after execute and before report: for every
branch of the mirror matching `RECONCILER_PLAN_BRANCHES` (globs, comma-separated,
e.g. `request/*`; none by default), the plan of merging it — computed like
`reconciler plan --base <tracked> --head <branch> --output markdown`, against
what providers observe now, approval gates included — rendered for reviewers.
The files go into the cycle's one status commit; `plans/` is replaced whole, so
a deleted branch's file goes away and an unchanged one costs no commit.

The first line of each file is a machine-readable comment with the branch's
head, the base and the plan's content hash, so a reviewer (or a later pin) can
tell which plan was seen.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import pygit2

from reconciler.approvals import Reviewed
from reconciler.plan import Plan
from reconciler.render import render_markdown

PLANS_DIR = "plans"
MAX_BRANCHES = 100
"""At most this many watched branches are planned per cycle (by name)."""


def patterns_of(setting: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (setting or "").split(",") if p.strip())


def watched_branches(
    repo: pygit2.Repository, patterns: Iterable[str], *, exclude: Iterable[str] = ()
) -> dict[str, str]:
    """Branch name -> head SHA, for every local branch of the mirror matching a pattern."""
    wanted = tuple(patterns)
    skip = set(exclude)
    found: dict[str, str] = {}
    if not wanted:
        return found
    for ref in sorted(repo.references):
        if not ref.startswith("refs/heads/"):
            continue
        name = ref.removeprefix("refs/heads/")
        if name in skip or not any(fnmatch.fnmatchcase(name, p) for p in wanted):
            continue
        try:
            found[name] = str(repo.references[ref].peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.GitError):
            continue
        if len(found) >= MAX_BRANCHES:
            break
    return found


def plan_path(branch: str) -> str:
    return f"{PLANS_DIR}/{branch}.md"


@dataclass(frozen=True)
class BranchPlan:
    """One branch's plan, or why there is none (invalid documents, no base)."""

    branch: str
    head: str
    base_branch: str
    base: str | None
    plan: Plan | None = None
    errors: tuple[str, ...] = ()

    def markdown(self) -> str:
        hash_ = self.plan.content_hash if self.plan else "none"
        destructive = [
            [a.key, a.operation.value, list(a.stages)]
            for a in (self.plan.actions if self.plan else ())
            if a.destructive
        ]
        lines = [
            f"<!-- reconciler-plan branch={self.branch} head={self.head} "
            f"base={self.base or 'none'} plan-hash={hash_} -->",
            f"<!-- reconciler-destructive {json.dumps(destructive, separators=(',', ':'))} -->",
            f"# Plan for branch `{self.branch}`",
            "",
            f"Merging `{self.branch}` (at `{self.head[:12]}`) into `{self.base_branch}` "
            f"(at `{(self.base or 'none')[:12]}`). Plan hash: `{hash_}`.",
            "",
        ]
        if self.errors:
            lines += ["**Invalid: the branch does not load.**", "", "```"]
            lines += list(self.errors)
            lines += ["```", ""]
            return "\n".join(lines)
        assert self.plan is not None
        summary, _full = render_markdown(self.plan)
        return "\n".join(lines) + "\n" + summary


PlanOf = Callable[[str, str], Awaitable[BranchPlan]]
"""(branch, head sha) -> its plan; the controller supplies it."""


async def plan_files(branches: Mapping[str, str], plan_of: PlanOf) -> dict[str, bytes]:
    """`plans/<branch>.md` for each watched branch."""
    files: dict[str, bytes] = {}
    for branch, head in sorted(branches.items()):
        planned = await plan_of(branch, head)
        files[plan_path(branch)] = planned.markdown().encode()
    return files


def read_plan_header(text: str) -> dict[str, str]:
    """The fields of a plan file's first-line comment (branch, head, base, plan-hash)."""
    first = text.split("\n", 1)[0]
    if not first.startswith("<!-- reconciler-plan "):
        return {}
    body = first.removeprefix("<!-- reconciler-plan ").removesuffix(" -->")
    return dict(part.split("=", 1) for part in body.split() if "=" in part)


def read_reviewed(text: str) -> Reviewed | None:
    """The reviewed plan a plan file records (None for another file or an invalid branch)."""
    header = read_plan_header(text)
    if not header.get("head") or header.get("plan-hash") in (None, "none"):
        return None
    second = text.split("\n", 2)[1] if text.count("\n") >= 1 else ""
    destructive: list[tuple[str, str, tuple[str, ...]]] = []
    if second.startswith("<!-- reconciler-destructive "):
        try:
            body = second.removeprefix("<!-- reconciler-destructive ").removesuffix(" -->")
            raw = json.loads(body)
            destructive = [(str(k), str(op), tuple(st)) for k, op, st in raw]
        except (ValueError, TypeError):
            destructive = []
    return Reviewed(
        branch=header.get("branch", "?"),
        head=header["head"],
        plan_hash=header["plan-hash"],
        destructive=tuple(destructive),
    )


def reviewed_plans(
    repo: pygit2.Repository, status_branch: str, heads: Iterable[str], *, limit: int = 500
) -> list[Reviewed]:
    """Plans reviewers saw for any of `heads`, from the status branch's recent history.

    Plan files go away with their branch, so the last `limit` status commits are read;
    the newest plan recorded for a head wins.
    """
    wanted = set(heads)
    found: dict[str, Reviewed] = {}
    try:
        tip = repo.revparse_single(f"refs/heads/{status_branch}").peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return []
    seen_blobs: set[pygit2.Oid] = set()
    commit: pygit2.Commit | None = tip
    for _ in range(limit):
        if commit is None or len(found) == len(wanted):
            break
        if PLANS_DIR in commit.tree:
            stack = [repo[commit.tree[PLANS_DIR].id]]
            while stack:
                tree = stack.pop()
                for entry in tree:
                    if entry.type_str == "tree":
                        stack.append(repo[entry.id])
                    elif entry.id not in seen_blobs:
                        seen_blobs.add(entry.id)
                        reviewed = read_reviewed(repo[entry.id].data.decode("utf-8", "replace"))
                        if reviewed and reviewed.head in wanted and reviewed.head not in found:
                            found[reviewed.head] = reviewed
        commit = commit.parents[0] if commit.parents else None
    return list(found.values())
