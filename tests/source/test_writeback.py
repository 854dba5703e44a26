"""StatusWriter against a real git daemon: one commit per cycle, races, refusals."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from reconciler.errors import PermanentError, TemporaryError
from reconciler.source import DeclaredSource, StatusWriter
from reconciler.source.writeback import check_path, format_message, parse_trailers
from tests.servers.git import DaemonControl, Server, git
from tests.source.conftest import provider, seeded, source_for

STATUS = "reconciler/status"


def ready_source(daemon: Server, human_factory, tmp_path: Path) -> DeclaredSource:  # type: ignore[no-untyped-def]
    seeded(human_factory(daemon))
    source = source_for(daemon.url, tmp_path / "state")
    assert source.poll().ready
    return source


def remote_files(server: Server, branch: str) -> dict[str, bytes]:
    repo = pygit2.Repository(str(server.bare))
    commit = repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit)
    out: dict[str, bytes] = {}

    def walk(tree: pygit2.Tree, prefix: str) -> None:
        for entry in tree:
            obj = repo[entry.id]
            if isinstance(obj, pygit2.Tree):
                walk(obj, prefix + entry.name + "/")
            else:
                out[prefix + entry.name] = obj.data  # type: ignore[union-attr]

    walk(commit.tree, "")
    return out


def remote_log(server: Server, branch: str) -> list[str]:
    return git("log", "--format=%H %an %s", branch, cwd=server.bare).splitlines()


def test_status_commit_pushed_to_an_orphan_branch(
    daemon: Server, human_factory, tmp_path: Path
) -> None:
    source = ready_source(daemon, human_factory, tmp_path)
    sha = source.last_good.sha  # type: ignore[union-attr]
    writer = StatusWriter(source.mirror, author_name="bot", author_email="bot@example.com")
    files = {
        "status/Provider/p0.yaml": b"phase: Ready\n",
        "status/Provider/p1.yaml": b"phase: Ready\n",
        "reports/drift.md": b"# Drift\n\nnone\n",
        "audit/2026-11-29T21-00-00Z-p0.yaml": b"action: create\n",
    }

    result = writer.write(
        files, message=f"reconcile {sha[:12]}: 2 ready", trailers={"Reconciled-Revision": sha}
    )

    assert result.changed and result.attempts == 1
    assert remote_files(daemon, STATUS) == files
    repo = pygit2.Repository(str(daemon.bare))
    commit = repo.revparse_single(f"refs/heads/{STATUS}").peel(pygit2.Commit)
    assert str(commit.id) == result.commit
    assert commit.parents == []  # orphan: no declared files on the status branch
    assert (commit.author.name, commit.author.email) == ("bot", "bot@example.com")
    assert (commit.committer.name, commit.committer.email) == ("bot", "bot@example.com")
    assert parse_trailers(commit.message) == {"Reconciled-Revision": sha}
    assert commit.message.startswith(f"reconcile {sha[:12]}: 2 ready\n\n")


def test_no_empty_commits_across_repeated_cycles(
    daemon: Server, human_factory, tmp_path: Path
) -> None:
    source = ready_source(daemon, human_factory, tmp_path)
    writer = StatusWriter(source.mirror)
    files = {"status/Provider/p0.yaml": b"phase: Ready\n", "audit/1.yaml": b"a: 1\n"}
    assert writer.write(files, message="cycle 1").changed
    for cycle in range(2, 5):
        source.poll()
        again = writer.write(files, message=f"cycle {cycle}")
        assert not again.changed and again.commit is None
    assert len(remote_log(daemon, STATUS)) == 1

    # The status of a deleted resource goes away; audit files stay (append-only).
    third = writer.write({"status/Provider/p1.yaml": b"phase: Ready\n"}, message="cycle 5")
    assert third.changed
    assert remote_files(daemon, STATUS) == {
        "status/Provider/p1.yaml": b"phase: Ready\n",
        "audit/1.yaml": b"a: 1\n",
    }
    # Folders not named in `replaced` keep what the mapping does not mention.
    fourth = writer.write(
        {"reports/drift.md": b"none\n"}, message="cycle 6", replaced=("reports/",)
    )
    assert fourth.changed
    assert set(remote_files(daemon, STATUS)) == {
        "status/Provider/p1.yaml",
        "reports/drift.md",
        "audit/1.yaml",
    }
    with pytest.raises(PermanentError, match="append-only"):
        writer.write({"audit/1.yaml": b"a: 2\n"}, message="rewrite history")


def test_concurrent_human_push_between_fetch_and_push(
    daemon: Server, human_factory, tmp_path: Path
) -> None:
    source = ready_source(daemon, human_factory, tmp_path)
    writer = StatusWriter(source.mirror)
    writer.write({"status/Provider/p0.yaml": b"phase: Pending\n"}, message="cycle 1")
    source.poll()  # the cycle's fetch

    # A human pushes to the status branch after the fetch, before the controller's push.
    human = human_factory(daemon, STATUS)
    human.pull(STATUS)
    theirs = human.commit({"NOTES.md": "kept by a person\n"}, "human note")
    human.push(branch=STATUS)

    result = writer.write({"status/Provider/p0.yaml": b"phase: Ready\n"}, message="cycle 2")

    assert result.changed and result.attempts == 2
    log = remote_log(daemon, STATUS)
    assert log[0].startswith(result.commit)  # type: ignore[arg-type]
    assert any(line.startswith(theirs) for line in log)
    assert remote_files(daemon, STATUS) == {
        "NOTES.md": b"kept by a person\n",
        "status/Provider/p0.yaml": b"phase: Ready\n",
    }


def test_status_on_the_tracked_branch_survives_a_concurrent_declared_change(
    daemon: Server, human_factory, tmp_path: Path
) -> None:
    source = ready_source(daemon, human_factory, tmp_path)
    human = human_factory(daemon)
    human.pull()
    theirs = human.commit({"providers/p4.yaml": provider("p4")}, "add p4")
    human.push()

    writer = StatusWriter(source.mirror, branch="main")
    result = writer.write({"status/Provider/p0.yaml": b"phase: Ready\n"}, message="status")

    assert result.attempts == 2
    files = remote_files(daemon, "main")
    assert "providers/p4.yaml" in files and "status/Provider/p0.yaml" in files
    assert any(line.startswith(theirs) for line in remote_log(daemon, "main"))
    polled = source.poll()  # the human's change is declared; ours is not
    assert polled.declared_changed and polled.changed_paths == {"providers/p4.yaml"}


def test_push_refused_by_a_hook_raises(daemon: Server, human_factory, tmp_path: Path) -> None:
    source = ready_source(daemon, human_factory, tmp_path)
    hook = daemon.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'status pushes are frozen' >&2\nexit 1\n", encoding="utf-8")
    hook.chmod(0o755)
    writer = StatusWriter(source.mirror)

    with pytest.raises(PermanentError, match="refused") as caught:
        writer.write({"status/Provider/p0.yaml": b"phase: Ready\n"}, message="status")
    assert daemon.url in str(caught.value)
    assert "status pushes are frozen" in str(caught.value)
    assert git("branch", "--list", STATUS, cwd=daemon.bare) == ""


def test_paths_outside_the_controller_folders_are_refused() -> None:
    for bad in ("providers/p0.yaml", "status", "/status/x", "status/../x", "audit//x", ""):
        with pytest.raises(ValueError):
            check_path(bad)
    assert check_path("status/Machine/m1.yaml") == "status/Machine/m1.yaml"
    message = format_message("reconcile abc", {"Reconciled-Revision": "abc", "Resources": "3"})
    assert parse_trailers(message) == {"Reconciled-Revision": "abc", "Resources": "3"}


def test_a_first_cycle_of_many_resources_pushes_every_file(
    daemon: Server, human_factory, tmp_path: Path
) -> None:
    source = ready_source(daemon, human_factory, tmp_path)
    writer = StatusWriter(source.mirror)
    files = {f"status/Machine/m{i:04d}.yaml": f"name: m{i:04d}\n".encode() for i in range(300)}
    files["reports/drift.md"] = b"none\n"

    assert writer.write(files, message="cycle 1").changed
    assert remote_files(daemon, STATUS) == files

    # The next cycle changes one file: the other 299 are the tip's blobs, not written again.
    files["status/Machine/m0007.yaml"] = b"name: m0007\nphase: Failed\n"
    assert writer.write(files, message="cycle 2").changed
    assert remote_files(daemon, STATUS) == files
    assert not writer.write(files, message="cycle 3").changed
    for repo in (source.mirror.path, daemon.bare):
        git("fsck", "--full", "--no-dangling", cwd=repo)


def test_a_refused_push_whose_recheck_hits_a_network_error_is_temporary(
    restartable_daemon: DaemonControl, human_factory, tmp_path: Path
) -> None:
    # The hook refuses the push and takes the daemon down with it: the fetch that would
    # tell whether the branch moved meets a closed port. Not knowing is not a refusal.
    daemon = restartable_daemon.server
    source = ready_source(daemon, human_factory, tmp_path)
    hook = daemon.bare / "hooks" / "pre-receive"
    pid = restartable_daemon.procs[0].pid
    hook.write_text(f"#!/bin/sh\nkill {pid}\necho 'try later' >&2\nexit 1\n", encoding="utf-8")
    hook.chmod(0o755)
    writer = StatusWriter(source.mirror)

    with pytest.raises(TemporaryError) as caught:
        writer.write({"status/Provider/p0.yaml": b"phase: Ready\n"}, message="status")
    message = str(caught.value)
    assert "whether the branch moved could not be checked" in message
    assert "refused by" not in message
    assert git("branch", "--list", STATUS, cwd=daemon.bare) == ""
