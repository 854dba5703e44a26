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

`BranchPlans` keeps the files between cycles. A cycle observes the fleet once —
the base's resources, shared by every branch — and, per branch, only what the
branch declares differently (its `Delta`: new resources, or resources observed
through another provider or reference); a branch's file is computed again only
when its key moves: (branch head, base head, observed generation), the
generation being a digest of everything the plan is computed against besides
the two revisions (the observations, what was applied, what failed).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pygit2

from reconciler.load.desired import Desired, canonical_json, subset
from reconciler.observe.observe import ObservedState, resource_ref
from reconciler.plan.approvals import Reviewed
from reconciler.plan.plan import Plan, relative_to
from reconciler.plan.render import render_markdown
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    from reconciler.controller.planning import PlanContext
    from reconciler.load.load import LoadResult

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
        # Rendering is pure: redacted here, where the text becomes a committed file.
        return "\n".join(lines) + "\n" + REDACTOR.text(summary)


# --- kept between cycles ----------------------------------------------------------------


def delta(base: Desired, target: Desired) -> Desired:
    """The resources of `target` (a branch) the base's observation does not answer for:
    new ones, and ones a provider would be asked about differently (another provider,
    another Provider document, another reference: a new BMC address, new params). Pure."""

    def asked(desired: Desired, key: str) -> tuple[Any, ...]:
        resource = desired.resources[key]
        return (resource.provider, desired.providers.get(resource.provider), resource_ref(resource))

    keys = {
        key
        for key in target.resources
        if key not in base.resources or asked(target, key) != asked(base, key)
    }
    return subset(target, keys)


def merged(base: ObservedState, extra: ObservedState) -> ObservedState:
    """The base's observation with a branch's own observations in place. Pure."""
    return dataclasses.replace(
        base,
        observations={**base.observations, **extra.observations},
        unknown_providers={**base.unknown_providers, **extra.unknown_providers},
    )


def generation(observed: ObservedState, context: PlanContext | None = None) -> str:
    """A digest of what a plan is computed against besides the revisions: what was
    observed, and (from the context) what was applied, what failed, what was reconciled.
    Pure."""
    state: dict[str, Any] = {
        "observations": {k: o.to_dict() for k, o in sorted(observed.observations.items())},
        "owned": sorted(observed.owned),
        "unknown": dict(sorted(observed.unknown_providers.items())),
    }
    if context is not None:
        state["records"] = {k: r.to_dict() for k, r in sorted(context.records.items())}
        state["failed"] = dict(sorted(context.failed.items()))
        state["reconciled"] = context.reconciled
    return hashlib.sha256(canonical_json(state).encode()).hexdigest()


@dataclass(frozen=True)
class _Delta:
    """A branch against one base: its own resources, or why it does not load."""

    desired: Desired | None
    errors: tuple[str, ...] = ()


Observe = Callable[[Desired], Awaitable[ObservedState]]
"""Observe a Desired set now (the controller opens its providers, observes, closes)."""
PlanAt = Callable[[Desired, ObservedState], Plan]
"""The gated plan of a revision against an observation (the controller's plan context)."""
Load = Callable[[str], "LoadResult | None"]


@dataclass
class _Cycle:
    """What every branch's plan of one cycle shares."""

    base: Desired
    base_branch: str
    fleet: ObservedState
    generation: str
    plan: PlanAt
    observe: Observe
    load: Load
    _base_plan: Plan | None = None

    def base_plan(self) -> Plan:
        """The base's plan, computed once, when a branch's plan is first needed."""
        if self._base_plan is None:
            self._base_plan = self.plan(self.base, self.fleet)
        return self._base_plan


class BranchPlans:
    """The watched branches' plan files, kept between cycles (see the module docstring)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[tuple[str, str | None, str], bytes]] = {}
        self._deltas: dict[tuple[str, str | None], _Delta] = {}
        self.planned = 0
        """Branch plans computed (not reused) so far."""
        self.observed_resources = 0
        """Resources observed so far: the fleet once a cycle, and each branch's delta."""

    async def files(
        self,
        branches: Mapping[str, str],
        *,
        base: Desired,
        base_branch: str,
        context: PlanContext,
        observe: Observe,
        load: Load,
        plan: PlanAt,
    ) -> dict[str, bytes]:
        """`plans/<branch>.md` for each watched branch: reused when its key did not move."""
        fleet = await self._observe(observe, base)
        cycle = _Cycle(base, base_branch, fleet, generation(fleet, context), plan, observe, load)
        files = {
            plan_path(branch): await self._file(branch, head, cycle)
            for branch, head in sorted(branches.items())
        }
        self._forget(branches, base.revision)
        return files

    async def _file(self, branch: str, head: str, cycle: _Cycle) -> bytes:
        base = cycle.base

        def planned(**fields: Any) -> bytes:
            found = BranchPlan(branch, head, cycle.base_branch, base.revision, **fields)
            return found.markdown().encode()

        own_resources = self._delta(head, base, cycle.load)
        if own_resources.desired is None:
            return planned(errors=own_resources.errors)
        own = None
        if own_resources.desired.resources:
            own = await self._observe(cycle.observe, own_resources.desired)
        key = (head, base.revision, cycle.generation + (generation(own) if own else ""))
        cached = self._files.get(branch)
        if cached is not None and cached[0] == key:
            return cached[1]
        target = _desired_at(cycle.load, head)
        if target is None:  # it loaded a moment ago: only vanished objects get here
            return planned(errors=("unreadable",))
        observed = merged(cycle.fleet, own) if own is not None else cycle.fleet
        data = planned(plan=relative_to(cycle.plan(target, observed), cycle.base_plan()))
        self.planned += 1
        self._files[branch] = (key, data)
        return data

    async def _observe(self, observe: Observe, desired: Desired) -> ObservedState:
        self.observed_resources += len(desired.resources)
        return await observe(desired)

    def _delta(self, head: str, base: Desired, load: Load) -> _Delta:
        key = (head, base.revision)
        found = self._deltas.get(key)
        if found is None:
            loaded = load(head)
            if loaded is None or loaded.desired is None:
                errors = tuple(str(d) for d in loaded.diagnostics) if loaded else ("unreadable",)
                found = _Delta(None, errors)
            else:
                target = dataclasses.replace(loaded.desired, revision=head)
                found = _Delta(delta(base, target))
            self._deltas[key] = found
        return found

    def _forget(self, branches: Mapping[str, str], base: str | None) -> None:
        """Only the current branches, heads and base are kept."""
        self._files = {b: entry for b, entry in self._files.items() if b in branches}
        heads = {(head, base) for head in branches.values()}
        self._deltas = {k: d for k, d in self._deltas.items() if k in heads}


def _desired_at(load: Load, head: str) -> Desired | None:
    loaded = load(head)
    if loaded is None or loaded.desired is None:
        return None
    return dataclasses.replace(loaded.desired, revision=head)


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
            stack = [commit.tree[PLANS_DIR]]
            while stack:
                tree = stack.pop()
                if not isinstance(tree, pygit2.Tree):
                    continue
                for entry in tree:
                    obj = repo[entry.id]
                    if isinstance(obj, pygit2.Tree):
                        stack.append(obj)
                    elif isinstance(obj, pygit2.Blob) and entry.id not in seen_blobs:
                        seen_blobs.add(entry.id)
                        reviewed = read_reviewed(obj.data.decode("utf-8", "replace"))
                        if reviewed and reviewed.head in wanted and reviewed.head not in found:
                            found[reviewed.head] = reviewed
        commit = commit.parents[0] if commit.parents else None
    return list(found.values())
