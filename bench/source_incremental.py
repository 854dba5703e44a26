"""Benchmark: one changed file in a 10,000-resource repository, incremental vs full load.

    python -m bench.source_incremental [--resources N] [--changes K] [--quick] [--json PATH]

Builds a bare repository (the sample repository's providers, pipelines, stages,
profiles and policy, plus N generated machines, one file each, 100 per folder),
then measures through `reconciler.source.DeclaredSource` with a local-path remote:

- `full_load`: a fresh source loading the head (list the tree, parse every
  file, assemble), after the clone;
- `incremental_load`: after a commit that changes one machine file, loading
  the new head with the warm caches (list changed folders, parse one file,
  assemble), median of K commits;
- `incremental_without_assemble` / `incremental_assemble`: that load split
  into the source's own work (listing, filtering, cache lookups, the one parse)
  and the loader's per-revision `assemble` (cross-document checks over all
  documents, which no per-file cache can skip);
- `fetch_one_commit`: fetching that commit into the mirror;
- `load_files`: `reconciler.load.load.load_files` on the same files (no Git), the
  in-run reference.
- `incremental_plan`: what a long-running controller does after that commit
  (`Controller.cycle` at a new head): the incremental load, `reconciler.plan.scope`,
  then observe and plan only the resources the commit changed, against a
  simulator where every resource is in place (medians of K commits);
- `full_plan`: the reference a plan without scope costs at the same head — a
  full load, observing every resource, planning them all; and `warm_full_plan`:
  the incremental load, then observing and planning every resource.

Each figure carries its ratio to the full load; parse counts are printed too
(the point: 1 file re-parsed per one-file commit).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any

import pygit2
import yaml

from bench.plan_10k import converge, plan_once
from reconciler.load import load
from reconciler.load.desired import Desired, subset
from reconciler.model.status import ResourceStatus
from reconciler.observe.observe import observe
from reconciler.plan.diff import LastApplied
from reconciler.plan.plan import Plan
from reconciler.plan.scope import Scope, revision_scope
from reconciler.providers import open_providers
from reconciler.source import DeclaredSource, GitAccess, Mirror, SourceResult

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
SIGNATURE = pygit2.Signature("bench", "bench@example.com", 1_700_000_000, 0)


def support_files() -> dict[str, bytes]:
    """The sample repository minus its machines and instances (the resources we generate)."""
    out: dict[str, bytes] = {}
    for path in sorted(SAMPLE_REPO.rglob("*")):
        rel = path.relative_to(SAMPLE_REPO).as_posix()
        if path.is_file() and not rel.startswith(("machines/", "instances/")):
            out[rel] = path.read_bytes()
    return out


def machine_template() -> dict[str, Any]:
    for path in sorted((SAMPLE_REPO / "machines").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "Machine":
                doc["spec"].pop("dependsOn", None)
                return doc
    raise SystemExit(f"no Machine document under {SAMPLE_REPO / 'machines'}")


def machine(template: dict[str, Any], i: int, revision: int = 0) -> bytes:
    doc = json.loads(json.dumps(template))
    rack = f"r{i // 100:03d}"
    doc["metadata"]["name"] = f"{rack}-node{i:05d}"
    doc["metadata"].setdefault("labels", {})["rack"] = rack
    doc["metadata"]["labels"]["revision"] = str(revision)
    doc["spec"]["rack"] = rack
    doc["spec"]["bmc"] = {
        "address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        "mac": f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
    }
    return yaml.safe_dump(doc, sort_keys=False).encode()


def machine_path(i: int) -> str:
    return f"machines/r{i // 100:03d}/node{i:05d}.yaml"


def write_tree(repo: pygit2.Repository, files: dict[str, bytes]) -> pygit2.Oid:
    """A tree for a {path: bytes} mapping, built bottom-up with TreeBuilders."""
    nested: dict[str, Any] = {}
    for path, data in files.items():
        node = nested
        *dirs, name = path.split("/")
        for part in dirs:
            node = node.setdefault(part, {})
        node[name] = data

    def build(node: dict[str, Any]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, value in sorted(node.items()):
            if isinstance(value, dict):
                builder.insert(name, build(value), pygit2.enums.FileMode.TREE)
            else:
                builder.insert(name, repo.create_blob(value), pygit2.enums.FileMode.BLOB)
        return builder.write()

    return build(nested)


def commit(repo: pygit2.Repository, files: dict[str, bytes], message: str) -> str:
    parents = [] if repo.head_is_unborn else [repo.head.target]
    oid = repo.create_commit(
        "refs/heads/main", SIGNATURE, SIGNATURE, message, write_tree(repo, files), parents
    )
    return str(oid)


def desired_of(result: SourceResult) -> Desired:
    """The Desired set in force after a poll, stamped with its revision (as the controller does)."""
    assert result.load is not None and result.load.desired is not None and result.revision
    return dataclasses.replace(result.load.desired, revision=result.revision.sha)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def run(resources: int, changes: int) -> dict[str, Any]:
    template = machine_template()
    with tempfile.TemporaryDirectory(prefix="bench-source-") as tmp:
        root = Path(tmp)
        remote = pygit2.init_repository(str(root / "remote.git"), bare=True)
        remote.set_head("refs/heads/main")
        files = support_files()
        files.update({machine_path(i): machine(template, i) for i in range(resources)})
        build_s, _ = timed(lambda: commit(remote, files, "inventory"))

        reference_s, reference = timed(lambda: load.load_files(files))
        if not reference.ok:
            first = "\n".join(str(d) for d in reference.diagnostics[:5])
            raise SystemExit(f"generated repository does not validate:\n{first}")
        del reference
        gc.collect()  # the reference's objects must not tax the source's garbage collections

        assemble_times: list[float] = []
        assembly = load.AssembleCache()  # what DeclaredSource uses by default

        def timed_assemble(parsed: Any, read: Callable[[str], bytes]) -> load.LoadResult:
            seconds, result = timed(lambda: load.assemble(parsed, read, cache=assembly))
            assemble_times.append(seconds)
            return result

        mirror = Mirror.in_state_dir(root / "state", GitAccess(str(root / "remote.git")))
        source = DeclaredSource(mirror, assemble=timed_assemble)
        clone_s, _ = timed(source.mirror.fetch)
        full_s, full = timed(lambda: source.poll(fetch=False))
        assert full.ready, full.stale
        full_parses = source.parse_calls

        in_force = desired_of(full)
        providers, failed = open_providers(in_force.providers, state_dir=root / "providers")
        assert not failed, failed
        converge(in_force, providers)
        last = {
            key: LastApplied(
                r.fingerprint(), r.declared(), "bench", r.resolution(), r.stage_digests()
            )
            for key, r in in_force.resources.items()
        }
        statuses = {
            key: ResourceStatus(kind=r.kind, name=r.name, phase="Ready")
            for key, r in in_force.resources.items()
        }
        existing = dict(asyncio.run(observe(in_force, providers)).existing)

        def plan_of(desired: Desired, keys: Collection[str] | None = None) -> Plan:
            target = desired if keys is None else subset(desired, set(keys))
            # As the controller does: nothing removed, so no provider lists what it owns.
            listed = None if keys is None else ()
            return plan_once(target, providers, last, existing, list_owned=listed)[0]

        fetch_times: list[float] = []
        load_times: list[float] = []
        overhead_times: list[float] = []
        plan_times: list[float] = []
        parts: list[tuple[float, float, float]] = []
        warm_full_times: list[float] = []
        full_plan_times: list[float] = []
        parses: list[int] = []
        for k in range(1, changes + 1):
            i = (k * 7919) % resources
            files[machine_path(i)] = machine(template, i, revision=k)
            commit(remote, files, f"change {machine_path(i)}")
            before = source.parse_calls
            fetch_s, _ = timed(source.mirror.fetch)
            load_s, result = timed(lambda: source.poll(fetch=False))
            assert result.ready and result.changed_paths == {machine_path(i)}, result
            fetch_times.append(fetch_s)
            load_times.append(load_s)
            overhead_times.append(load_s - assemble_times[-1])
            parses.append(source.parse_calls - before)

            head = desired_of(result)
            scope_s, scope = timed(partial(revision_scope, in_force, head, statuses))
            assert isinstance(scope, Scope) and len(scope.keys) == 1, scope
            narrow_s, narrow = timed(partial(plan_of, head, scope.observed))
            wide_s, wide = timed(partial(plan_of, head))
            assert narrow.in_sync and wide.in_sync, (narrow.summary, wide.summary)
            plan_times.append(load_s + scope_s + narrow_s)
            parts.append((load_s, scope_s, narrow_s))
            warm_full_times.append(load_s + wide_s)
            cold = DeclaredSource(
                Mirror.in_state_dir(root / "state", GitAccess(str(root / "remote.git")))
            )
            cold_load_s, cold_result = timed(partial(cold.poll, fetch=False))
            cold_plan_s, _ = timed(partial(plan_of, desired_of(cold_result)))
            full_plan_times.append(cold_load_s + cold_plan_s)
            in_force = head
        for provider in providers.values():
            asyncio.run(provider.close())

    plan_s = statistics.median(plan_times)
    full_plan_s = statistics.median(full_plan_times)
    warm_full_s = statistics.median(warm_full_times)
    incremental_s = statistics.median(load_times)
    fetch_s = statistics.median(fetch_times)
    overhead_s = statistics.median(overhead_times)
    assemble_s = incremental_s - overhead_s
    figures = {
        "source_full_load_s": (full_s, 1.0),
        "source_incremental_load_s": (incremental_s, incremental_s / full_s),
        "source_incremental_without_assemble_s": (overhead_s, overhead_s / full_s),
        "source_incremental_assemble_s": (assemble_s, assemble_s / full_s),
        "source_fetch_one_commit_s": (fetch_s, fetch_s / full_s),
        "source_clone_s": (clone_s, clone_s / full_s),
        "load_files_reference_s": (reference_s, reference_s / full_s),
        "source_full_plan_s": (full_plan_s, full_plan_s / full_s),
        "source_warm_full_plan_s": (warm_full_s, warm_full_s / full_s),
        "source_incremental_plan_s": (plan_s, plan_s / full_s),
    }
    return {
        "resources": resources,
        "files": len(files),
        "changes": changes,
        "build_repo_s": build_s,
        "full_load_parses": full_parses,
        "incremental_parses": parses,
        "figures": {k: {"value": v, "ratio_to_full_load": r} for k, (v, r) in figures.items()},
        "incremental_plan_parts_s": {
            name: statistics.median(p[n] for p in parts)
            for n, name in enumerate(("load", "scope", "observe_and_plan"))
        },
        "incremental_plan_vs_full_plan": plan_s / full_plan_s,
        "incremental_plan_vs_warm_full_plan": plan_s / warm_full_s,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"source incremental load: {report['resources']} resources in {report['files']} files, "
        f"{report['changes']} one-file commits"
    )
    print(f"{'figure':<38} {'seconds':>10} {'vs full load':>13}")
    for name, fig in report["figures"].items():
        print(f"{name:<38} {fig['value']:>10.4f} {fig['ratio_to_full_load']:>12.3f}x")
    print(
        f"files parsed: full load {report['full_load_parses']}, "
        f"per one-file commit {report['incremental_parses']}"
    )
    print(
        "incremental plan / full plan: "
        f"{report['incremental_plan_vs_full_plan']:.3f} "
        f"(/ a plan of every resource after the incremental load: "
        f"{report['incremental_plan_vs_warm_full_plan']:.3f}); its parts: "
        + ", ".join(f"{k} {v:.4f} s" for k, v in report["incremental_plan_parts_s"].items())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 resources, 3 commits")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    resources, changes = (1_000, 3) if args.quick else (args.resources, args.changes)
    report = run(resources, changes)
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
