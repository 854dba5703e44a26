"""Git source: the declared repository in, the controller's status commits out.

The edges of the flow that talk to Git (pull at the start, report at the end)::

    mirror.py     Mirror: bare mirror in <state_dir>/mirror.git; fetch, resolve, push;
                  credentials by reference, SSH host-key check; GitError translated here
    tree.py       read a revision without checkout: listings, blobs, changed paths,
                  the parse cache by blob id (one changed file -> one parse)
    declared.py   DeclaredSource.poll(): the revision in force and its LoadResult;
                  last good revision kept, force-push detection, why it is stale
    writeback.py  StatusWriter.write(): one commit per cycle on the status branch,
                  pushed with race handling, never forced; is_own_commit
    readback.py   read_statuses & co.: the last status commit read back (statuses
                  parsed once per blob, conditions, drift entries)
    backoff.py    Backoff, retry: bounded exponential backoff with jitter

Enters: the repository URL, credentials by reference, the status files of a
cycle. Leaves: revisions, their files and `LoadResult`, commit evidence as
values, the last status commit read back. May import `model`, `load`, `plan`,
`report` (their values and formats), `providers`, and `errors`, `settings`,
`secrets`; never `execute`, `controller` or `cli`.
"""

from reconciler.source.backoff import Backoff, retry
from reconciler.source.declared import DeclaredSource, SourceResult, Stale
from reconciler.source.mirror import GitAccess, Mirror, PushOutcome, Revision
from reconciler.source.tree import ParseCache, TreeLister, changed_paths, load_revision
from reconciler.source.writeback import StatusWriter, WriteResult, is_own_commit

__all__ = [
    "Backoff",
    "DeclaredSource",
    "GitAccess",
    "Mirror",
    "ParseCache",
    "PushOutcome",
    "Revision",
    "SourceResult",
    "Stale",
    "StatusWriter",
    "TreeLister",
    "WriteResult",
    "changed_paths",
    "is_own_commit",
    "load_revision",
    "retry",
]
