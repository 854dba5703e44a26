"""Benchmark: how fast `reconciler run` reacts to a push, in a 1,000-resource repository.

    python -m bench.server_latency [--resources N] [--changes K] [--latency S] [--json PATH]

Builds a Git repository with `bench.generate` (N resources across racks and the
cloud, simulator providers), starts the real controller (the scheduler's worker
and uvicorn on a free port of 127.0.0.1) and lets its first cycle provision the
fleet. Then, K times, commits a small change (the application of 3 machines),
sends a signed GitHub push webhook at once and measures:

- `webhook_answer`: the webhook's `202 Accepted` (the HTTP round trip);
- `webhook_to_first_action`: from sending the webhook to the first action the
  simulator records as started (its action log's wall-clock time);
- `commit_to_ready`: from the commit to every changed resource Ready at the new
  revision, as the API (`GET /api/v1/resources/{kind}/{name}`) shows it;

medians over the K changes, and as the in-run reference `noop_cycle`: a full
cycle (`POST /api/v1/sync`) when nothing changed (fetch, observe N resources,
diff, plan, status). Each figure carries its ratio to that reference. The first
provisioning of the whole fleet is printed too (`initial_provisioning`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.generate import commit, generate, write
from reconciler.controller.scheduler import Scheduler
from reconciler.controller.server import create_app
from reconciler.controller.webhooks import hmac_signature
from reconciler.providers.simulator import SimulatorProvider
from reconciler.settings import Settings

TOKEN = "bench-api-token-0123456789"
SECRET = "bench-webhook-secret-0123456789"
CHANGED_APPLICATION = "ceph-osd"  # rack r0000's profile (k8s) says kubernetes-node


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"bench: {what} did not happen within {timeout:.0f}s")


def _first_started_after(state: Path, since: float) -> float | None:
    sim = SimulatorProvider.open(state, name="sim-dc1")
    try:
        row = sim._db.execute(
            "SELECT MIN(at) FROM action_log WHERE event = 'started' AND at >= ?", (since,)
        ).fetchone()
    finally:
        sim._db.close()
    return row[0] if row and row[0] is not None else None


def _changed(files: dict[str, bytes], machines: list[str], application: str) -> dict[str, bytes]:
    """`files` with each of `machines` declaring `application` (install-app reruns)."""
    out = dict(files)
    for name in machines:
        rack = name.split("-")[0].removeprefix("r")
        path = f"machines/rack-{rack}.yaml"
        text = out[path].decode()
        marker = f"  name: {name}\n"
        start = text.index(marker)
        params = text.index("  params: {role: worker", start)
        end = text.index("}", params)
        text = text[:params] + f"  params: {{role: worker, application: {application}" + text[end:]
        out[path] = text.encode()
    return out


def run(resources: int, changes: int, latency: float) -> dict[str, Any]:
    os.environ["RECONCILER_BENCH_TOKEN"] = TOKEN
    os.environ["RECONCILER_BENCH_WEBHOOK"] = SECRET
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "infra"
        state = Path(folder) / "state"
        files = generate(resources)
        if latency:
            files["providers.yaml"] = files["providers.yaml"].replace(
                b"spec: {type: simulator,",
                f'spec: {{type: simulator, settings: {{latency: "{latency}s"}},'.encode(),
            )
        write(root, files)
        commit(root, "fleet")
        remote = Path(folder) / "infra.git"  # the controller pushes status: a bare remote
        subprocess.run(["git", "clone", "-q", "--bare", str(root), str(remote)], check=True)
        subprocess.run(["git", "-C", str(root), "remote", "add", "origin", str(remote)], check=True)
        port = _free_port()
        settings = Settings(
            repo=str(remote),
            state_dir=state,
            listen=f"127.0.0.1:{port}",
            interval=3600.0,
            interval_jitter=0.0,
            api_token="env:RECONCILER_BENCH_TOKEN",
            webhook_secret="env:RECONCILER_BENCH_WEBHOOK",
        )
        began = time.monotonic()
        scheduler = Scheduler(settings)
        scheduler.start()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(scheduler),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30.0,
        )
        try:
            _wait(lambda: server.started, 30, "server start")
            _wait(
                lambda: scheduler.cycles_run >= 1 and not scheduler.busy,
                1800,
                "the first provisioning",
            )
            initial = time.monotonic() - began
            phases = {s.phase for s in scheduler.statuses.values()}
            print(
                f"initial provisioning of {len(scheduler.statuses)} resources: {initial:.1f}s "
                f"(phases: {sorted(phases)})",
                file=sys.stderr,
            )

            noop = []
            for _ in range(3):
                t0 = time.monotonic()
                op = client.post("/api/v1/sync").json()["id"]
                _wait(
                    lambda op=op: (
                        client.get(f"/api/v1/operations/{op}").json()["phase"]
                        in ("succeeded", "failed")
                    ),
                    600,
                    "a no-op cycle",
                )
                noop.append(time.monotonic() - t0)

            answers, first_action, ready = [], [], []
            for n in range(changes):  # 3 machines of rack r0000 not changed before
                picked = [f"r0000-n{i:02d}" for i in range(1 + n * 3, 4 + n * 3)]
                files = _changed(files, picked, CHANGED_APPLICATION)
                write(root, files)
                commit_mono = time.monotonic()
                sha = commit(root, f"change {n}")
                subprocess.run(["git", "-C", str(root), "push", "-q", "origin", "main"], check=True)
                body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
                sent_wall = time.time()
                sent = time.monotonic()
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/api/v1/webhooks/github",
                    content=body,
                    headers={
                        "X-GitHub-Event": "push",
                        "X-Hub-Signature-256": hmac_signature(SECRET, body),
                    },
                )
                answers.append(time.monotonic() - sent)
                if answer.status_code != 202:
                    raise SystemExit(f"bench: webhook answered {answer.status_code}")

                def all_ready(names: list[str] = picked, sha: str = sha) -> bool:
                    for name in names:
                        got = client.get(f"/api/v1/resources/Machine/{name}").json()
                        applied = (got.get("lastApplied") or {}).get("revision")
                        if got.get("phase") != "Ready" or applied != sha:
                            return False
                    return True

                _wait(all_ready, 600, f"change {n} Ready")
                ready.append(time.monotonic() - commit_mono)
                started = _first_started_after(state, sent_wall)
                if started is not None:
                    first_action.append(started - sent_wall)
        finally:
            client.close()
            server.should_exit = True
            thread.join(10)
            scheduler.stop("bench over", timeout=120)
    reference = statistics.median(noop)
    figures = {
        "noop_cycle": reference,
        "webhook_answer": statistics.median(answers),
        "webhook_to_first_action": statistics.median(first_action) if first_action else None,
        "commit_to_ready": statistics.median(ready),
    }
    return {
        "resources": resources,
        "changes": changes,
        "changed_per_commit": 3,
        "simulator_latency": latency,
        "initial_provisioning": initial,
        "figures": {
            name: {
                "seconds": value,
                "ratio_to_noop_cycle": (value / reference) if value is not None else None,
            }
            for name, value in figures.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=3, choices=range(1, 14))
    parser.add_argument("--latency", type=float, default=0.0, help="simulator seconds per action")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="300 resources, 2 changes")
    args = parser.parse_args(argv)
    resources, changes = (300, 2) if args.quick else (args.resources, args.changes)
    report = run(resources, changes, args.latency)
    print(f"{'figure':<26} {'seconds':>9} {'x noop cycle':>13}")
    for name, figure in report["figures"].items():
        seconds = figure["seconds"]
        ratio = figure["ratio_to_noop_cycle"]
        shown = f"{seconds:9.3f}" if seconds is not None else "        -"
        print(f"{name:<26} {shown} {ratio if ratio is None else f'{ratio:13.2f}'}")
    print(
        f"({report['resources']} resources, {report['changes']} commits of 3 machines each; "
        f"first provisioning {report['initial_provisioning']:.1f}s)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
