"""Benchmark: the web UI's pages with 10,000 resources declared, against the API's JSON.

    python -m bench.ui [-n N] [--repeat R] [--json PATH]

Builds the state `reconciler run` holds after a cycle over a `bench.generate`
repository of N resources (simulator providers, every resource in place as an
apply leaves it, one in ten drifted): the Desired set, the plan, and each
resource's status as the cycle's transitions make it (`next_statuses`). A
`Scheduler` holding them serves the real app (`create_app`, in process, through
uvicorn on 127.0.0.1 and one keep-alive client: what a browser waits for), and the
median time of R requests is taken for:

- `ui_resources_page_10k_ms`: `GET /resources?page=2` (50 rows of the table);
- `ui_resource_page_10k_ms`: `GET /resources/Machine/<name>` (conditions, pipeline,
  fields, drift, plan action, task logs; its audit timeline loads after the page,
  from the status branch, and is not part of it);
- the reference: `GET /api/v1/resources?offset=50&limit=50`, the JSON of the same page;
  each UI figure's ratio is to it (target <= 1.5);
- `ui_resources_filtered_10k_ms`: a filtered page (phase and label: a scan of every row);
- `ui_index_build_10k_ms`: building the table's rows, once per cycle (the first list
  request after a cycle waits for it; the others reuse them).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.figures import Figures, report
from bench.generate import generate
from bench.plan_10k import converge, load
from reconciler.controller.scheduler import Scheduler
from reconciler.controller.server import create_app
from reconciler.controller.ui.query import FleetIndex
from reconciler.observe.observe import observe
from reconciler.plan.diff import LastApplied, diff
from reconciler.plan.plan import plan as compute_plan
from reconciler.providers import open_providers
from reconciler.report.transitions import next_statuses
from reconciler.settings import Settings


def fleet_state(n: int, state_dir: Path) -> dict[str, Any]:
    """What a scheduler holds after a cycle over N resources, one in ten drifted."""
    import asyncio

    desired = load(generate(n))
    providers, failed = open_providers(desired.providers, state_dir=state_dir / "sim")
    assert not failed, failed
    converge(desired, providers, drift_every=10)
    last = {
        key: LastApplied(
            r.fingerprint(), r.declared(), "bench", r.resolution(), stages=r.stage_digests()
        )
        for key, r in desired.resources.items()
    }
    seen = asyncio.run(observe(desired, providers))
    found = diff(desired, seen, last_applied=last)
    plan = compute_plan(desired, found)
    statuses, _ = next_statuses(
        desired=desired,
        previous={},
        diff=found,
        plan=plan,
        execution=None,
        observed=seen,
        now=datetime.now(UTC),
        records=last,
    )
    return {"desired": desired, "plan": plan, "statuses": statuses}


@contextlib.contextmanager
def serving(scheduler: Scheduler) -> Iterator[httpx.Client]:
    """The app on a free port of 127.0.0.1 (uvicorn in a thread), and a client of it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(scheduler),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 30
            while not server.started:
                if time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start")
                time.sleep(0.02)
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def median_ms(client: httpx.Client, path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return statistics.median(times) * 1000


def run(n: int, repeat: int) -> Figures:
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    with tempfile.TemporaryDirectory() as tmp:
        state = fleet_state(n, Path(tmp))
        settings = Settings(repo=str(Path(tmp) / "none.git"), state_dir=Path(tmp) / "state")
        settings = settings.model_copy(update={"api_read_open": True})
        scheduler = Scheduler(settings)
        scheduler.desired = state["desired"]
        scheduler.plan = state["plan"]
        scheduler.statuses = dict(state["statuses"])
        scheduler.revision = "bench"
        scheduler.ready = True
        drifted = sorted(k for k, s in scheduler.statuses.items() if s.phase == "Drifted")
        machine = next(k for k in drifted if k.startswith("Machine/"))
        with serving(scheduler) as client:
            assert client.get("/resources?phase=Failed").status_code == 200  # templates compiled
            started = time.perf_counter()
            FleetIndex.build(scheduler.statuses, scheduler.desired)
            index_ms = (time.perf_counter() - started) * 1000
            json_ms = median_ms(client, "/api/v1/resources?offset=50&limit=50", repeat)
            page_ms = median_ms(client, "/resources?page=2", repeat)
            resource_ms = median_ms(client, f"/resources/{machine}", repeat)
            filtered_ms = median_ms(client, "/resources?phase=Drifted&label=rack%3Dr0001", repeat)
            one_json_ms = median_ms(client, f"/api/v1/resources/{machine}", repeat)
    reference = f"GET /api/v1/resources?offset=50&limit=50 ({json_ms:.1f} ms); target <= 1.5"
    return {
        f"ui_resources_page_{label}_ms": {
            "value": page_ms,
            "unit": "ms",
            "ratio": page_ms / json_ms,
            "reference": reference,
        },
        f"ui_resource_page_{label}_ms": {
            "value": resource_ms,
            "unit": "ms",
            "ratio": resource_ms / json_ms,
            "reference": f"{reference}; one status as JSON: {one_json_ms:.1f} ms",
        },
        f"ui_resources_filtered_{label}_ms": {
            "value": filtered_ms,
            "unit": "ms",
            "ratio": filtered_ms / json_ms,
            "reference": "phase and label filter: a scan of every row",
        },
        f"ui_index_build_{label}_ms": {
            "value": index_ms,
            "unit": "ms",
            "reference": "the table's rows, built once per cycle (the first page after it waits)",
        },
        f"api_resources_page_{label}_ms": {
            "value": json_ms,
            "unit": "ms",
            "reference": "50 statuses as JSON (the reference)",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(run(args.n, args.repeat), args.json)


if __name__ == "__main__":
    main()
