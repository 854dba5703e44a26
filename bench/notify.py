"""Benchmark: notifications for 4,000 transitions in one cycle, against the bare sends.

A cycle in which 4,000 resources became Ready (a fleet coming up) hands
`Notifier.cycle_done` 4,000 transitions for one webhook target, a
ThreadingHTTPServer on 127.0.0.1 answering 204. `notify_transitions_4k_s` is
the whole call — deciding each alert, the ledger, the signed POSTs (at most
`SEND_CONCURRENCY` in flight), the ledger written — as the controller's worker
loop spends it. The in-run reference is the transport floor: the same 4,000
bodies POSTed with httpx at the same concurrency and nothing else; the ratio says
what the notifier adds to the sends. Before the ledger was written once per cycle
it was rewritten whole after each transition: 32 s for 4,000 (quadratic).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.figures import Figures, report


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a chat service's endpoint would

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


@contextmanager
def sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def statuses(n: int) -> dict[str, Any]:
    from reconciler.model.status import ResourceStatus, set_condition

    now = datetime(2026, 12, 1, tzinfo=UTC)
    ready = set_condition(
        (), "Ready", "True", "Reconciled", "in sync at revision 0123456789ab", now
    )
    return {
        f"Machine/m{i:05d}": ResourceStatus(kind="Machine", name=f"m{i:05d}", conditions=ready)
        for i in range(n)
    }


async def notify_once(n: int, url: str, state: Path) -> float:
    from reconciler.controller.notify import Notifier
    from reconciler.model.kinds import NotificationTarget

    after = statuses(n)
    target = NotificationTarget.model_validate({"url": url})
    notifier = Notifier(state)
    started = time.perf_counter()
    decisions = await notifier.cycle_done([target], {}, after, revision="0" * 40)
    seconds = time.perf_counter() - started
    assert len(decisions) == n and not notifier.ledger.pending, "every alert delivered"
    return seconds


async def sends_alone(n: int, url: str) -> float:
    import httpx

    from reconciler.controller.notify import SEND_CONCURRENCY

    bodies = [json.dumps({"event": "Ready", "resource": f"Machine/m{i:05d}"}) for i in range(n)]
    limit = asyncio.Semaphore(SEND_CONCURRENCY)
    limits = httpx.Limits(max_connections=SEND_CONCURRENCY)
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as client:

        async def one(body: str) -> None:
            async with limit:
                (await client.post(url, content=body)).raise_for_status()

        await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - started


def run(n: int, repeat: int) -> Figures:
    with sink() as url:
        floor = min(asyncio.run(sends_alone(n, url)) for _ in range(repeat))
        times = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                times.append(asyncio.run(notify_once(n, url, Path(tmp))))
    seconds = min(times)
    label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    return {
        f"notify_transitions_{label}_s": {
            "value": seconds,
            "unit": "s",
            "reference": f"the same {n} POSTs alone ({floor:.2f} s): ratio {seconds / floor:.2f}; "
            "32 s before the ledger was written once per cycle",
        },
        f"notify_sends_alone_{label}_s": {"value": floor, "unit": "s", "reference": "-"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(run(args.n, args.repeat), args.json)


if __name__ == "__main__":
    main()
