"""`reconciler demo`: the sample fleet committed into a local repository, applied, shown.

Beside `commands.py` (whose `run_apply` it calls): the sample repository (the wheel's
package data, else the checkout's `sample-repo/`), a one-commit bare repository of
it, the demo's values for the secrets the sample references, and a stand-in on
127.0.0.1 for the sample's chat webhook and CMDB, which prints what it received.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pygit2

from reconciler.cli.commands import EXIT_ERROR, run_apply
from reconciler.settings import Settings

SAMPLE_PACKAGE_DIR = "_sample_repo"
"""Where the wheel carries sample-repo/ inside the package (pyproject's force-include)."""


@contextmanager
def sample_repo() -> Iterator[Path]:
    """The sample repository on disk: the wheel's package data, else (a source checkout,
    an editable install) the checkout's `sample-repo/`."""
    from importlib import resources

    packaged = resources.files("reconciler").joinpath(SAMPLE_PACKAGE_DIR)
    if packaged.is_dir():
        with resources.as_file(packaged) as path:
            yield path
        return
    checkout = Path(__file__).resolve().parents[2] / "sample-repo"
    if not checkout.is_dir():
        raise FileNotFoundError(f"sample-repo is neither in the package nor at {checkout}")
    yield checkout


DEMO_SINK_PORT = 8099
DEMO_SECRETS = {
    "INFRA_HOOK_SECRET": "demo-infra-hook-secret",
    "CHATOPS_HOOK_SECRET": "demo-chatops-hook-secret",
    "CMDB_TOKEN": "demo-cmdb-token",
    "R01_ROOT_PASSWORD": "demo-root-password",
}


def commit_directory(bare: Path, source: Path, message: str) -> str:
    """Make `bare` a repository whose `main` holds the files of `source` (one commit)."""
    repo = pygit2.init_repository(str(bare), bare=True, initial_head="main")
    builder_cache: dict[str, Any] = {}

    def tree_of(folder: Path) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") and entry.name != ".reconcilerignore":
                continue
            if entry.is_dir():
                builder.insert(entry.name, tree_of(entry), pygit2.enums.FileMode.TREE)
            elif entry.is_file():
                blob = repo.create_blob(entry.read_bytes())
                builder.insert(entry.name, blob, pygit2.enums.FileMode.BLOB)
        builder_cache[str(folder)] = True
        return builder.write()

    signature = pygit2.Signature("reconciler demo", "demo@localhost")
    oid = repo.create_commit("refs/heads/main", signature, signature, message, tree_of(source), [])
    return str(oid)


class _DemoSink(BaseHTTPRequestHandler):
    """Stands in for your chat webhook and CMDB during the demo: accepts and prints."""

    server: _SinkServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/cmdb/") and self.command in ("PUT", "POST"):
            self.send_response(202)
            host, port = self.server.server_address[:2]
            self.send_header("Location", f"http://{host}:{port}/operations/cmdb")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            payload = b'{"status": "succeeded"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        if self.path.startswith("/hooks/"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                data = {}
            resource = data.get("resource") if isinstance(data, dict) else None
            key = resource.get("key") if isinstance(resource, dict) else None
            message = str(data.get("message", "")) if isinstance(data, dict) else ""
            server: Any = self.server
            with server.lock:
                server.received.setdefault(key or "(no resource)", []).append((self.path, message))

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *_args: Any) -> None:
        return


class _SinkServer(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops a burst of webhooks
    server_address: tuple[str, int]  # IPv4 (`demo_sink` binds 127.0.0.1): (host, port)
    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[str, str]]] = {}
        """Webhook notifications by resource key: (path, message), in arrival order."""


def webhook_summary(received: dict[str, list[tuple[str, str]]]) -> list[str]:
    """One line per resource: how many notifications each hook got, and the messages
    that are not the same for every stage. Pure."""
    lines = []
    for key, notes in sorted(received.items()):
        by_path: dict[str, list[str]] = {}
        for path, message in notes:
            by_path.setdefault(path, []).append(message)
        parts = []
        for path, messages in sorted(by_path.items()):
            shown = f" ({messages[0]!r})" if len(messages) == 1 and messages[0] else ""
            parts.append(f"{len(messages)} to {path}{shown}")
        lines.append(f"  [demo webhooks] {key}: {', '.join(parts)}")
    return lines


@contextmanager
def demo_sink(port: int = DEMO_SINK_PORT, *, summary: bool = False) -> Iterator[int]:
    """The demo's stand-in for a chat webhook and a CMDB on 127.0.0.1; yields its port.
    With `summary`, prints one line per resource about the webhooks it sent, at the end."""
    server = _SinkServer(("127.0.0.1", port), _DemoSink)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        if summary:
            for line in webhook_summary(server.received):
                print(line, file=sys.stderr)


def run_demo(settings: Settings, *, yes: bool = False) -> int:
    """sample-repo in a local Git repository, the simulator, one full cycle, shown."""
    state_dir = Path(settings.state_dir)
    remote = state_dir / "demo" / "infra.git"
    if not (remote / "HEAD").exists():
        remote.parent.mkdir(parents=True, exist_ok=True)
        with sample_repo() as sample:
            sha = commit_directory(remote, sample, "Declare the sample fleet")
        print(f"demo: made {remote} from sample-repo/ (main at {sha[:12]})")
    else:
        print(f"demo: using {remote} (edit it with git clone/push to try changes)")
    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)
    demo_settings = settings.model_copy(update={"repo": str(remote.resolve())})
    try:
        with demo_sink(summary=True):
            code = run_apply(demo_settings, yes=yes, ask=True)
    except OSError as exc:
        print(
            f"demo: cannot listen on 127.0.0.1:{DEMO_SINK_PORT} for the demo webhooks: {exc}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(f"demo: status branch {settings.status_branch} of {remote}")
    print(f"demo: see it with: git --git-dir {remote} log --stat {settings.status_branch}")
    print(
        "demo: drift a machine by hand: python -m reconciler.providers.simulator drift "
        f"--state-dir {state_dir} Machine/r01-node02 params.os '\"rhel-9\"'"
    )
    return code


__all__ = [
    "DEMO_SECRETS",
    "DEMO_SINK_PORT",
    "commit_directory",
    "demo_sink",
    "run_demo",
    "sample_repo",
]
