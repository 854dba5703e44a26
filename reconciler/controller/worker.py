"""`reconciler worker`: a process beside the controller that runs tasks claimed from the
shared database.

The queue, the claims and how a claimed task runs are execute's
(`reconciler.execute.worker`); this is the process around them: its logging, its
signals, its own mirror of the repository (`<state>/mirror.git`, its own `--repo` and
Git credentials) from which it builds the revision's tree a task reads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from reconciler.errors import PermanentError, ReconcilerError
from reconciler.execute.worker import PgWorkQueue, RevisionTrees, Worker
from reconciler.logs import configure_logging
from reconciler.source.mirror import GitAccess, Mirror
from reconciler.source.worktree import materialize, prune_trees, tree_path

if TYPE_CHECKING:
    from reconciler.settings import Settings

log = structlog.get_logger("reconciler.worker")


def revision_tree(state_dir: Path, access: GitAccess, sha: str, keep: int) -> Path:
    """`<state>/trees/<sha>` from the worker's own mirror (`<state>/mirror.git`), fetched
    when it lacks the revision; older trees beyond `keep` go."""
    if tree_path(state_dir, sha).is_dir():
        return tree_path(state_dir, sha)
    mirror = Mirror.in_state_dir(state_dir, access)
    if sha not in mirror.repo:
        mirror.fetch()
    if sha not in mirror.repo:
        raise PermanentError(f"revision {sha[:12]} is not in {access.display_url}")
    tree = materialize(mirror.repo, sha, state_dir)
    prune_trees(state_dir, keep=keep, needed={sha})
    return tree


def git_access_for(settings: Settings) -> Callable[[str | None], GitAccess]:
    """The worker's repository access: its own `--repo` when given (a site's nearer
    mirror), else the manifest's URL; its own Git credentials either way."""

    def access(url: str | None) -> GitAccess:
        repo = settings.repo or url
        if not repo:
            raise PermanentError("no repository: start the worker with --repo")
        return GitAccess.from_settings(settings.model_copy(update={"repo": repo}))

    return access


def revision_trees(settings: Settings) -> RevisionTrees:
    """The worker's trees: (repository URL, revision) -> the revision's tree."""
    access = git_access_for(settings)
    state_dir = Path(settings.state_dir)
    return lambda url, sha: revision_tree(state_dir, access(url), sha, settings.trees_kept)


def run_worker(settings: Settings, *, site: str | None, concurrency: int, name: str | None) -> int:
    """`reconciler worker`: claim and run tasks until SIGTERM/SIGINT (then exit 0)."""
    configure_logging(json_logs=True, tracebacks=True)
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    try:
        queue = PgWorkQueue.connect(settings, name=name, site=site)
    except ReconcilerError as exc:
        print(f"reconciler worker: {exc}", file=sys.stderr)
        return 1
    worker = Worker(
        queue,
        state_dir=Path(settings.state_dir),
        concurrency=concurrency,
        lease=settings.claim_lease,
        trees=revision_trees(settings),
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        log.info("worker started", worker=name, site=site, concurrency=concurrency)
        await worker.run()

    try:
        asyncio.run(main())
    except ReconcilerError as exc:
        print(f"reconciler worker: {exc}", file=sys.stderr)
        return 1
    finally:
        queue.close()
    log.info("worker stopped", worker=name, tasks=worker.ran)
    return 0


__all__ = ["git_access_for", "revision_tree", "revision_trees", "run_worker"]
