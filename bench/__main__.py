"""The benchmark suite: `python -m bench [--quick] [--json PATH]`.

Runs each benchmark module in its own process (so peak memory is per figure),
then prints one table of the headline figures, each with its unit and the ratio
to a reference measured in the same run (these machines are shared and noisy:
ratios and medians, not single absolute times). Names are stable so figures can
be tracked over time. `--quick` (about a minute on 2 cores) uses smaller
repositories; figure names then carry the size they were measured at.

Nothing here fails on a timing: a benchmark that cannot run says why in its row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Figures = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Step:
    module: str
    full: tuple[str, ...]
    quick: tuple[str, ...]


STEPS = {
    "validate": Step("bench.validate", ("-n", "10000"), ("-n", "2000", "--repeat", "3")),
    "plan": Step("bench.plan_10k", ("-n", "10000"), ("-n", "2000", "--repeat", "1")),
    "source": Step("bench.source_incremental", (), ("--quick",)),
    "rss": Step("bench.rss", ("-n", "10000"), ("-n", "2000")),
    "apply": Step("bench.apply", (), ("--quick",)),
    "server": Step("bench.server_latency", (), ("--quick",)),
    "ansible": Step("bench.vs_ansible", (), ("--quick",)),
    "redact": Step("bench.redact", (), ("--repeat", "3")),
    "notify": Step("bench.notify", ("-n", "4000"), ("-n", "4000", "--repeat", "1")),
    "fairness": Step("bench.fairness", (), ("--repeat", "1")),
    "ui": Step("bench.ui", ("-n", "10000"), ("-n", "2000", "--repeat", "10")),
    "scale": Step("bench.scale_out", (), ("--quick",)),
    "rollout": Step("bench.rollout_overhead", ("--repeat", "21"), ("--repeat", "5")),
}


def run_step(name: str, step: Step, quick: bool, out: Path) -> tuple[Any, float | None, str]:
    """(its JSON, its peak RSS in MB, an error or '') for one benchmark module."""
    json_path = out / f"{name}.json"
    rss_path = out / f"{name}.rss"
    args = step.quick if quick else step.full
    cmd = [sys.executable, "-m", "bench._child", str(rss_path), step.module, *args]
    cmd += ["--json", str(json_path)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    print(f"  {name:<10} {seconds:7.1f} s  exit {done.returncode}", file=sys.stderr)
    if done.returncode != 0 or not json_path.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, None, f"{step.module} failed: {tail[0][:200]}"
    rss = float(rss_path.read_text()) if rss_path.exists() else None
    return json.loads(json_path.read_text()), rss, ""


def _get(data: Any, *names: str) -> float | None:
    """The first of `names` found among a module's figures (flat or under 'figures')."""
    if not isinstance(data, dict):
        return None
    pool = {**data, **data.get("figures", {})} if isinstance(data.get("figures"), dict) else data
    for name in names:
        found = pool.get(name)
        if isinstance(found, dict):
            for field in ("value", "seconds"):
                if isinstance(found.get(field), int | float):
                    return float(found[field])
        if isinstance(found, int | float):
            return float(found)
    return None


def _figure(
    value: float | None, unit: str, reference: str, ratio: float | None = None
) -> dict[str, Any]:
    return {"value": value, "unit": unit, "ratio": ratio, "reference": reference}


def headline(results: dict[str, tuple[Any, float | None, str]], quick: bool) -> Figures:
    size = "2k" if quick else "10k"
    get: Callable[[str, str], float | None] = lambda step, *names: _get(results[step][0], *names)  # noqa: E731
    floor = get("validate", f"parse_floor_{size}_s")
    validate = get("validate", f"validate_{size}_s")
    full_plan = get("plan", f"full_plan_{size}_s")
    incremental_load = get("source", "source_incremental_load_s")
    source_full = get("source", "source_full_load_s")
    figures: Figures = {}
    figures[f"validate_{size}_vs_parse_floor"] = _figure(
        validate / floor if validate and floor else None,
        "x",
        f"PyYAML C loader on the same files ({floor or 0:.2f} s); target <= 3",
        validate / floor if validate and floor else None,
    )
    figures[f"plan_full_{size}_s"] = _figure(
        full_plan,
        "s",
        "load + observe + diff + plan vs the parse floor; target < 5 s at 10k",
        full_plan / floor if full_plan and floor else None,
    )
    incremental_plan = get("source", "source_incremental_plan_s")
    source_full_plan = get("source", "source_full_plan_s")
    source_size = "1k" if quick else "10k"
    figures[f"plan_incremental_1_of_{source_size}_ratio"] = _figure(
        incremental_plan / source_full_plan if incremental_plan and source_full_plan else None,
        "x",
        "one-file commit, as `reconciler run` plans it (incremental load, scope, observe and "
        f"plan what changed) / a full plan of the same head ({source_size}); target <= 0.05",
        incremental_plan / source_full_plan if incremental_plan and source_full_plan else None,
    )
    figures["source_incremental_load_ratio"] = _figure(
        incremental_load / source_full if incremental_load and source_full else None,
        "x",
        "one-file commit re-parses one file; / full load of the same repository",
        incremental_load / source_full if incremental_load and source_full else None,
    )
    throughput = get("apply", "apply_throughput_vs_ideal")
    figures["apply_throughput_vs_ideal"] = _figure(
        throughput, "x", "ops x latency / concurrency; target >= 0.8", throughput
    )
    apply_size = "200" if quick else "1k"
    process = get("apply", f"apply_{apply_size}_throughput_vs_ideal")
    figures["apply_process_vs_ideal"] = _figure(
        process,
        "x",
        f"a whole `reconciler apply` process ({apply_size} machines: start-up, load, plan, "
        "execute, status commit) / the same ideal",
        process,
    )
    for name in ("webhook_to_first_action_s", "commit_to_ready_s"):
        value = get("server", name, name.removesuffix("_s"))
        figures[name] = _figure(
            value, "s", f"small change in a {'300' if quick else '1,000'}-resource repository"
        )
    figures[f"peak_rss_{size}_mb"] = _figure(
        get("rss", f"peak_rss_{size}_mb"),
        "MB",
        "one load + observe + plan in a fresh process; target <= 300 at 10k",
    )
    ratio = get("ansible", "vs_ansible")
    figures["vs_ansible"] = _figure(
        ratio, "x", "Ansible uri playbook wall time / reconciler's, same REST calls", ratio
    )
    per_string = get("redact", "redact_10k_secrets_per_string_us")
    few = get("redact", "redact_10_secrets_per_string_us")
    figures["redact_10k_secrets_per_string_us"] = _figure(
        per_string,
        "us",
        f"a 200-character string with 10 secrets known ({few or 0:.2f} us); ratio target <= 1.5 "
        "(0.42 ms per string before one matcher)",
        per_string / few if per_string and few else None,
    )
    notify = get("notify", "notify_transitions_4k_s")
    sends = get("notify", "notify_sends_alone_4k_s")
    figures["notify_transitions_4k_s"] = _figure(
        notify,
        "s",
        f"4,000 transitions in one cycle, one 127.0.0.1 target / the same 4,000 POSTs alone "
        f"({sends or 0:.2f} s); 32-44 s before the ledger was written once per cycle",
        notify / sends if notify and sends else None,
    )
    fairness = get("fairness", "fairness_fast_beside_slow_ratio")
    figures["fairness_fast_beside_slow_ratio"] = _figure(
        fairness,
        "x",
        "a fast provider's machines beside a slow provider's (concurrency 1) / alone; "
        "target <= 2 (25 when tasks took the global slot first)",
        fairness,
    )
    api_page = get("ui", f"api_resources_page_{size}_ms")
    for name, what in (("resources", "the list's page 2"), ("resource", "a drifted machine")):
        value = get("ui", f"ui_{name}_page_{size}_ms")
        figures[f"ui_{name}_page_{size}_ms"] = _figure(
            value,
            "ms",
            f"{what} as HTML / GET /api/v1/resources?offset=50&limit=50 ({api_page or 0:.1f} ms), "
            "over 127.0.0.1; target <= 1.5",
            value / api_page if value and api_page else None,
        )
    speedup = get("scale", "workers_speedup_4")
    figures["workers_speedup_4"] = _figure(
        speedup,
        "x",
        "the same plan of slow tasks with 4 `reconciler worker` processes (concurrency 1) / "
        "with 1; ideal 4",
        speedup,
    )
    figures["leader_takeover_s"] = _figure(
        get("scale", "leader_takeover_s"),
        "s",
        "SIGKILL of the leader to the standby's first action (lease 3 s)",
    )
    figures["queue_claims_per_s"] = _figure(
        get("scale", "queue_claims_per_s"),
        "/s",
        "trivial tasks claimed and completed by 4 workers on this machine's PostgreSQL",
    )
    overhead = get("rollout", "rollout_overhead_ratio")
    plan_only = get("rollout", "rollout_overhead_plan_only_ratio")
    figures["rollout_overhead_ratio"] = _figure(
        overhead,
        "x",
        "planning a 1,000-machine update with a rollout policy that never binds / the same "
        f"without (CPU time; the planning step alone: {plan_only or 0:.3f}); target <= 1.05",
        overhead,
    )
    for step, (_data, _rss, error) in results.items():
        if error:
            figures[f"error_{step}"] = _figure(None, "-", error)
    return figures


def print_table(figures: Figures) -> None:
    print(f"{'figure':<34} {'value':>10} {'unit':<4} {'ratio':>8}  reference")
    for name, figure in figures.items():
        value = figure["value"]
        ratio = figure["ratio"]
        shown = f"{value:10.3f}" if isinstance(value, float) else f"{'n/a':>10}"
        shown_ratio = f"{ratio:8.3f}" if isinstance(ratio, float) else f"{'':>8}"
        print(f"{name:<34} {shown} {figure['unit']:<4} {shown_ratio}  {figure['reference']}")


def main() -> None:
    parser = argparse.ArgumentParser(description="reconciler benchmark suite")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about 2 minutes")
    parser.add_argument("--json", type=Path, help="write the figures (and each module's) here")
    parser.add_argument("--only", action="append", choices=sorted(STEPS), help="run these only")
    args = parser.parse_args()
    chosen = args.only or list(STEPS)
    results: dict[str, tuple[Any, float | None, str]] = {
        name: (None, None, "not run") for name in STEPS
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            results[name] = run_step(name, STEPS[name], args.quick, Path(tmp))
    figures = headline(results, args.quick)
    if args.only:
        figures = {
            k: v
            for k, v in figures.items()
            if not k.startswith("error_") or v["reference"] != "not run"
        }
    print_table(figures)
    if args.json:
        report = {
            "quick": args.quick,
            "figures": figures,
            "modules": {
                name: {"figures": r[0], "peak_rss_mb": r[1], "error": r[2]}
                for name, r in results.items()
            },
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
