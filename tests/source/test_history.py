"""Who changed what, read from real Git history made by several people with git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pygit2

from reconciler.report.provenance import Origin
from reconciler.source.history import DocumentChanges

ADA = ("Ada Lovelace", "ada@example.com")
BOB = ("Bob Merger", "bob@example.com")
CAROL = ("Carol Shaw", "carol@example.com")
GRACE = "Grace Hopper <grace@example.com>"

SPEC = "spec: {provider: sim, pipeline: node, params: {os: ubuntu}}\n"
M1 = "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m1}\n" + SPEC
M2 = "apiVersion: reconciler/v1\nkind: Machine\nmetadata: {name: m2}\n" + SPEC
STAGE = "apiVersion: reconciler/v1\nkind: Stage\nmetadata: {name: install}\nspec: {work: []}\n"
WANTED = {
    "Machine/m1": frozenset({("Machine", "m1"), ("Stage", "install")}),
    "Machine/m2": frozenset({("Machine", "m2")}),
}


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.git(ADA, "init", "-q", "-b", "main")

    def git(self, person: tuple[str, str], *args: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": person[0],
            "GIT_AUTHOR_EMAIL": person[1],
            "GIT_COMMITTER_NAME": person[0],
            "GIT_COMMITTER_EMAIL": person[1],
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.path),
        }
        done = subprocess.run(
            ["git", *args], cwd=self.path, env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    def commit(self, person: tuple[str, str], files: dict[str, str | None], *message: str) -> str:
        for name, text in files.items():
            if text is None:
                (self.path / name).unlink()
            else:
                (self.path / name).write_text(text)
        self.git(person, "add", "-A")
        self.git(person, "commit", "-q", "--allow-empty", *[a for m in message for a in ("-m", m)])
        return self.git(person, "rev-parse", "HEAD")

    def head(self) -> str:
        return self.git(ADA, "rev-parse", "HEAD")


def test_data_not_text_is_compared_and_moves_are_not_changes(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "r")
    first = repo.commit(ADA, {"machines.yaml": M1 + "---\n" + M2, "stages.yaml": STAGE}, "fleet")
    reordered = "# the first machine\nkind: Machine\napiVersion: reconciler/v1\n"
    repo.commit(CAROL, {"machines.yaml": reordered + M1.split("\n", 2)[2] + "---\n" + M2}, "tidy")
    repo.commit(CAROL, {"machines.yaml": M2, "m1.yaml": M1}, "m1 in a file of its own")
    repo.commit(CAROL, {"notes.md": "hello\n", "broken.yaml": "key: [unclosed\n"}, "notes")
    changes = DocumentChanges(pygit2.Repository(str(repo.path)))
    origins = changes.origins(repo.head(), WANTED)
    assert origins["Machine/m1"].commit == first
    assert origins["Machine/m1"].author == f"{ADA[0]} <{ADA[1]}>"
    assert origins["Machine/m2"].commit == first
    read = changes.commits_read
    assert changes.origins(repo.head(), WANTED) == origins
    assert changes.commits_read == read  # each commit is read once


def test_a_merged_change_is_the_authors_and_the_merge_the_mergers(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "r")
    repo.commit(ADA, {"machines.yaml": M1 + "---\n" + M2, "stages.yaml": STAGE}, "fleet")
    repo.git(ADA, "checkout", "-q", "-b", "fix-stage")
    ada = repo.commit(
        ADA,
        {"stages.yaml": STAGE.replace("[]", "[{name: x, type: provider, action: power-on}]")},
        "Fix the stage",
    )
    repo.git(BOB, "checkout", "-q", "main")
    carol = repo.commit(CAROL, {"machines.yaml": M1 + "---\n" + M2.replace("ubuntu", "rhel")}, "m2")
    repo.git(
        BOB, "merge", "-q", "--no-ff", "fix-stage", "-m", "Merge", "-m", f"Approved-by: {GRACE}"
    )
    merge = repo.head()
    approval = repo.commit(CAROL, {}, "Approve", "Approved-by: Someone <someone@example.com>")

    changes = DocumentChanges(pygit2.Repository(str(repo.path)))
    origins = changes.origins(repo.head(), WANTED)
    m1 = origins["Machine/m1"]  # its stage changed on the branch
    assert (m1.commit, m1.author) == (ada, f"{ADA[0]} <{ADA[1]}>")
    assert (m1.merge, m1.committer) == (merge, f"{BOB[0]} <{BOB[1]}>")
    speaking = {e.sha: e.approved_by for e in m1.evidence}
    assert speaking == {
        approval: ("Someone <someone@example.com>",),
        merge: (GRACE,),
        ada: (),
    }
    m2 = origins["Machine/m2"]  # changed on main directly, before the merge
    assert (m2.commit, m2.merge, m2.committer) == (carol, None, f"{CAROL[0]} <{CAROL[1]}>")
    assert merge not in {e.sha for e in m2.evidence}  # it merged something else


def test_nothing_found_within_the_limit_is_an_empty_origin(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "r")
    repo.commit(ADA, {"machines.yaml": M1}, "m1")
    for i in range(3):
        repo.commit(CAROL, {"notes.md": f"{i}\n"}, f"note {i}")
    changes = DocumentChanges(pygit2.Repository(str(repo.path)))
    assert changes.origins(repo.head(), WANTED, limit=2)["Machine/m1"].commit is None
    never = changes.origins(repo.head(), {"Machine/m9": frozenset({("Machine", "m9")})})
    assert never == {"Machine/m9": Origin()}


def test_a_change_to_a_document_with_errors_is_a_change(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "r")
    repo.commit(ADA, {"machines.yaml": M1 + "---\n" + M2}, "fleet")
    broken = M2.replace("params:", "colour: red, params:")  # an unknown field
    carol = repo.commit(CAROL, {"machines.yaml": M1 + "---\n" + broken}, "m2 in red")
    again = repo.commit(BOB, {"machines.yaml": M1 + "---\n" + broken.replace("red", "blue")}, "b")
    origins = DocumentChanges(pygit2.Repository(str(repo.path))).origins(carol, WANTED)
    assert origins["Machine/m2"].commit == carol
    assert origins["Machine/m1"].commit != carol  # the model would hide nothing of m1
    origins = DocumentChanges(pygit2.Repository(str(repo.path))).origins(again, WANTED)
    assert origins["Machine/m2"].commit == again
