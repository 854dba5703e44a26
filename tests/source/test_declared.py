"""DeclaredSource against a real git daemon: new commits, bad commits, force-pushes, outages."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.source import DeclaredSource, Mirror, StatusWriter, changed_paths
from reconciler.source.declared import (
    FORCE_PUSH_REFUSED,
    REMOTE_UNAVAILABLE,
    VALIDATION_FAILED,
)
from tests.servers.git import DaemonControl, Server
from tests.source.conftest import BROKEN, provider, seeded, source_for


def test_first_clone_reports_the_revision(daemon: Server, human_factory, tmp_path: Path) -> None:
    human = human_factory(daemon)
    sha = seeded(human)
    source = source_for(daemon.url, tmp_path / "state")

    result = source.poll()

    assert (tmp_path / "state" / "mirror.git" / "HEAD").exists()
    assert result.ready and result.stale is None and result.declared_changed
    assert result.revision is not None
    assert result.revision.sha == sha
    assert (result.revision.author_name, result.revision.author_email) == (
        "A Human",
        "human@example.com",
    )
    assert result.revision.subject == "initial inventory"
    assert result.revision.time.tzinfo is not None
    assert result.changed_paths == {f"providers/p{i}.yaml" for i in range(3)}
    assert result.load is not None and result.load.desired is not None
    assert source.parse_calls == 3


def test_one_file_change_reparses_one_file(daemon: Server, human_factory, tmp_path: Path) -> None:
    human = human_factory(daemon)
    seeded(human, count=5)
    source = source_for(daemon.url, tmp_path / "state")
    assert source.poll().ready
    assert source.parse_calls == 5

    new = human.commit({"providers/p2.yaml": provider("p2", "redfish")}, "p2 is redfish now")
    human.push()
    result = source.poll()

    assert result.revision is not None and result.revision.sha == new
    assert result.declared_changed
    assert result.changed_paths == {"providers/p2.yaml"}
    assert source.parse_calls == 6  # one more parse, not five
    assert len(source.cache) == 5  # pruned to the revision in force

    before = source.repo[new].parents[0].id
    assert changed_paths(source.repo, before, new) == {"providers/p2.yaml"}

    again = source.poll()  # nothing new: no reload, no parse
    assert not again.declared_changed and again.revision == result.revision
    assert source.parse_calls == 6


def test_bad_commit_keeps_the_last_good_revision(
    daemon: Server, human_factory, tmp_path: Path
) -> None:
    human = human_factory(daemon)
    good = seeded(human)
    source = source_for(daemon.url, tmp_path / "state")
    source.poll()

    bad = human.commit({"providers/broken.yaml": BROKEN}, "oops")
    human.push()
    result = source.poll()

    assert result.revision is not None and result.revision.sha == good
    assert result.head is not None and result.head.sha == bad
    assert result.ready and not result.declared_changed
    assert result.stale is not None and result.stale.reason == VALIDATION_FAILED
    assert good[:12] in result.stale.message and bad[:12] in result.stale.message
    assert [d.path for d in result.diagnostics] == ["providers/broken.yaml"]
    assert result.diagnostics[0].line >= 1

    fixed = human.commit({"providers/broken.yaml": provider("fixed")}, "fix")
    human.push()
    result = source.poll()
    assert result.stale is None and result.revision is not None and result.revision.sha == fixed
    assert result.changed_paths == {"providers/broken.yaml"}


def test_force_push_is_detected_and_followed(daemon: Server, human_factory, tmp_path: Path) -> None:
    human = human_factory(daemon)
    base = seeded(human)
    human.commit({"providers/p9.yaml": provider("p9")}, "add p9")
    human.push()
    source = source_for(daemon.url, tmp_path / "state")
    first = source.poll()
    source.mark_reconciled(first.revision.sha)  # type: ignore[union-attr]

    human.reset(base)
    rewritten = human.commit({"providers/p8.yaml": provider("p8")}, "add p8 instead")
    human.push(force=True)
    result = source.poll()

    assert result.force_pushed
    assert result.stale is None
    assert result.revision is not None and result.revision.sha == rewritten
    assert result.changed_paths == {"providers/p8.yaml", "providers/p9.yaml"}


def test_force_push_refused_by_policy(daemon: Server, human_factory, tmp_path: Path) -> None:
    human = human_factory(daemon)
    base = seeded(human)
    kept = human.commit({"providers/p9.yaml": provider("p9")}, "add p9")
    human.push()
    source = source_for(daemon.url, tmp_path / "state", force_push_policy="refuse")
    source.mark_reconciled(source.poll().revision.sha)  # type: ignore[union-attr]

    human.reset(base)
    human.commit({"providers/p8.yaml": provider("p8")}, "rewrite")
    human.push(force=True)
    result = source.poll()

    assert result.force_pushed
    assert result.stale is not None and result.stale.reason == FORCE_PUSH_REFUSED
    assert result.revision is not None and result.revision.sha == kept


def test_remote_down_then_back(
    restartable_daemon: DaemonControl, human_factory, tmp_path: Path
) -> None:
    server = restartable_daemon.server
    human = human_factory(server)
    good = seeded(human)
    source = source_for(server.url, tmp_path / "state")
    source.poll()

    restartable_daemon.stop()
    down = source.poll()
    assert down.stale is not None and down.stale.reason == REMOTE_UNAVAILABLE
    assert server.url in down.stale.message
    assert down.revision is not None and down.revision.sha == good and down.ready
    assert down.retry_after is not None and 0 < down.retry_after <= source.backoff.cap
    second = source.poll()
    assert second.retry_after is not None

    # A restart while the remote is down: the last good revision is back in force.
    restarted = source_for(server.url, tmp_path / "state")
    after_restart = restarted.poll()
    assert after_restart.ready and after_restart.revision.sha == good  # type: ignore[union-attr]

    newer = human.commit({"providers/p7.yaml": provider("p7")}, "add p7")
    human.push()
    restartable_daemon.start()
    back = source.poll()
    assert back.stale is None and back.retry_after is None
    assert back.revision is not None and back.revision.sha == newer


def test_pinned_tag(daemon: Server, human_factory, tmp_path: Path) -> None:
    human = human_factory(daemon)
    pinned = seeded(human)
    from tests.servers.git import git

    git("tag", "v1", cwd=human.work)
    git("push", "-q", "origin", "v1", cwd=human.work)
    human.commit({"providers/p5.yaml": provider("p5")}, "later")
    human.push()

    result = source_for(daemon.url, tmp_path / "state", ref="v1").poll()
    assert result.revision is not None and result.revision.sha == pinned


def test_own_status_commits_on_the_tracked_branch_are_not_changes(
    daemon: Server, human_factory, tmp_path: Path
) -> None:
    human = human_factory(daemon)
    seeded(human)
    source = source_for(daemon.url, tmp_path / "state")
    source.own_email = "bot@example.com"
    first = source.poll()
    writer = StatusWriter(source.mirror, branch="main", author_email="bot@example.com")
    written = writer.write(
        {"status/Provider/p0.yaml": b"phase: Ready\n"},
        message="status",
        trailers={"Reconciled-Revision": first.revision.sha},  # type: ignore[union-attr]
    )
    assert written.commit is not None
    parses = source.parse_calls

    result = source.poll()
    # The head moved (the status commit), the revision in force did not: it is still
    # the last commit that changed declared files.
    assert result.head is not None and result.head.sha == written.commit
    assert result.revision is not None and result.revision.sha == first.revision.sha  # type: ignore[union-attr]
    assert not result.declared_changed and result.stale is None and not result.force_pushed
    assert source.parse_calls == parses
    from reconciler.source import is_own_commit

    repo = source.repo
    assert is_own_commit(repo, repo[written.commit], "bot@example.com")
    assert not is_own_commit(repo, repo[first.revision.sha], "bot@example.com")  # type: ignore[union-attr]


def test_plain_local_path_and_file_url_from_settings(human_factory, tmp_path: Path) -> None:
    from reconciler.settings import Settings
    from tests.servers.git import init_bare

    bare = init_bare(tmp_path / "local.git")
    sha = seeded(human_factory(Server(str(bare), bare, tmp_path)))
    for name, url in (("path", str(bare)), ("file", f"file://{bare}")):
        settings = Settings(repo=url, state_dir=tmp_path / name, branch="main")
        source = DeclaredSource.from_settings(settings)
        result = source.poll()
        assert result.revision is not None and result.revision.sha == sha, name
        assert (tmp_path / name / "mirror.git").is_dir()


def test_a_remote_that_hangs_times_out(tmp_path: Path) -> None:
    import socket
    import threading
    import time

    from reconciler.errors import TemporaryError
    from reconciler.source import GitAccess

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    url = f"git://127.0.0.1:{listener.getsockname()[1]}/repo.git"
    mirror = Mirror.in_state_dir(tmp_path / "state", GitAccess(url, io_timeout=0.5))
    started = time.monotonic()
    try:
        with pytest.raises(TemporaryError, match="timed out"):
            mirror.fetch()
    finally:
        listener.close()
    assert time.monotonic() - started < 5
