"""Reading a revision without a checkout: file listings, blobs, changed paths, parse cache.

Between fetch (`mirror`) and load (`reconciler.load.load`). A revision's files come
straight from Git tree objects in the mirror; their repository paths travel with
them, so the loader's diagnostics still read `path:line:col`.

Incremental loading rests on two caches keyed by object ids, which Git makes
content addresses:

- `TreeLister` remembers the listing of every subtree by tree id, so listing a
  revision that changed one file re-walks only the folders on that file's path;
- `ParseCache` remembers `parse_file` results by (path, blob id): a commit that
  changes one file re-parses one file. The path is part of the key because a
  parsed file carries its path in its diagnostics (two identical files, or a
  rename, must not share one). `prune` keeps only the entries of the trees in
  use, so the cache stays as large as one or two revisions.

`changed_paths` compares two revisions' trees (a Git tree diff).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pygit2
from pygit2.enums import FileMode, ObjectType

from reconciler.load import load
from reconciler.load.load import LoadResult, ParsedFile

ParseFn = Callable[[str, bytes], ParsedFile]
AssembleFn = Callable[[Iterable[ParsedFile], Callable[[str], bytes]], LoadResult]

_BLOB_MODES = (FileMode.BLOB, FileMode.BLOB_EXECUTABLE)


def commit_of(repo: pygit2.Repository, rev: str | pygit2.Oid) -> pygit2.Commit:
    return repo[rev].peel(pygit2.Commit)


class TreeLister:
    """Recursive listings of trees ({path: blob id}), memoized per tree id."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo
        self._trees: dict[pygit2.Oid, tuple[tuple[str, pygit2.Oid], ...]] = {}
        self.trees_walked = 0

    def files(self, rev: str | pygit2.Oid) -> dict[str, pygit2.Oid]:
        """Every regular file of a commit's tree; symlinks and submodules are not files."""
        return dict(self._listing(commit_of(self.repo, rev).tree))

    def _listing(self, tree: pygit2.Tree) -> tuple[tuple[str, pygit2.Oid], ...]:
        cached = self._trees.get(tree.id)
        if cached is not None:
            return cached
        self.trees_walked += 1
        out: list[tuple[str, pygit2.Oid]] = []
        for entry in tree:
            if entry.type == ObjectType.TREE:
                sub = self.repo[entry.id]
                assert isinstance(sub, pygit2.Tree)
                prefix = f"{entry.name}/"
                out.extend((prefix + path, oid) for path, oid in self._listing(sub))
            elif entry.type == ObjectType.BLOB and entry.filemode in _BLOB_MODES:
                out.append((entry.name or "", entry.id))
        listing = tuple(out)
        self._trees[tree.id] = listing
        return listing

    def prune(self, keep: Iterable[str | pygit2.Oid]) -> None:
        """Forget subtrees not reachable from the given commits."""
        wanted: set[pygit2.Oid] = set()
        for rev in keep:
            stack = [commit_of(self.repo, rev).tree]
            while stack:
                tree = stack.pop()
                if tree.id in wanted:
                    continue
                wanted.add(tree.id)
                stack.extend(self.repo[e.id] for e in tree if e.type == ObjectType.TREE)  # type: ignore[misc]
        self._trees = {k: v for k, v in self._trees.items() if k in wanted}


def declared_files(
    files: Mapping[str, pygit2.Oid], repo: pygit2.Repository
) -> dict[str, pygit2.Oid]:
    """The files that hold declared documents, after `.reconcilerignore`."""
    ignore_oid = files.get(load.IGNORE_FILE)
    patterns = load.read_ignore_patterns(read_blob(repo, ignore_oid) if ignore_oid else None)
    return {p: oid for p, oid in files.items() if _is_declared(p, patterns)}


@functools.lru_cache(maxsize=1 << 17)
def _is_declared(path: str, patterns: tuple[str, ...]) -> bool:
    """`load.is_declared_path`, remembered: paths rarely change between revisions."""
    return load.is_declared_path(path, patterns)


def read_blob(repo: pygit2.Repository, oid: pygit2.Oid) -> bytes:
    blob = repo[oid]
    assert isinstance(blob, pygit2.Blob)
    return blob.data


def read_file(repo: pygit2.Repository, rev: str | pygit2.Oid, path: str) -> bytes | None:
    """One file's bytes at a revision, or None when the path is not a file there."""
    try:
        entry = commit_of(repo, rev).tree[path]
    except KeyError:
        return None
    if entry.type != ObjectType.BLOB:
        return None
    return read_blob(repo, entry.id)


def changed_paths(
    repo: pygit2.Repository, old: str | pygit2.Oid, new: str | pygit2.Oid
) -> frozenset[str]:
    """Paths added, removed or modified between two revisions (a tree diff)."""
    diff = commit_of(repo, old).tree.diff_to_tree(commit_of(repo, new).tree)
    paths: set[str] = set()
    for delta in diff.deltas:
        paths.add(delta.old_file.path)
        paths.add(delta.new_file.path)
    return frozenset(paths)


class ParseCache:
    """`parse_file` results by (path, blob id); `parse_calls` counts real parses."""

    def __init__(self, parse: ParseFn = load.parse_file) -> None:
        self._parse = parse
        self._entries: dict[tuple[str, pygit2.Oid], ParsedFile] = {}
        self.parse_calls = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str, oid: pygit2.Oid, read: Callable[[], bytes]) -> ParsedFile:
        key = (path, oid)
        parsed = self._entries.get(key)
        if parsed is None:
            self.parse_calls += 1
            parsed = self._parse(path, read())
            self._entries[key] = parsed
        return parsed

    def prune(self, keep: Iterable[Mapping[str, pygit2.Oid]]) -> None:
        """Keep only the entries of the given file listings (the revisions in use)."""
        wanted = {(path, oid) for files in keep for path, oid in files.items()}
        self._entries = {k: v for k, v in self._entries.items() if k in wanted}


@dataclass(frozen=True)
class LoadedRevision:
    """A revision's declared files (path -> blob id) and the loader's verdict on them."""

    sha: str
    files: Mapping[str, pygit2.Oid]
    result: LoadResult


def load_revision(
    repo: pygit2.Repository,
    rev: str | pygit2.Oid,
    *,
    lister: TreeLister,
    cache: ParseCache,
    assemble: AssembleFn = load.assemble,
    files: Mapping[str, pygit2.Oid] | None = None,
) -> LoadedRevision:
    """Load the declared documents of one revision; unchanged blobs come from the cache."""
    sha = str(commit_of(repo, rev).id)
    if files is None:
        files = declared_files(lister.files(sha), repo)
    parsed = [
        cache.get(path, oid, functools.partial(read_blob, repo, oid))
        for path, oid in sorted(files.items())
    ]

    def read(path: str) -> bytes:
        oid = files.get(path)
        return read_blob(repo, oid) if oid is not None else b""

    return LoadedRevision(sha, dict(files), assemble(parsed, read))
