"""The journal's per-resource history of resolutions (`resolutions`), and its migration.

On a real SQLite file: what `record_applied` adds to the history, what a journal
written before the table had becomes, and that a decommission forgets it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from reconciler.execute.journal import SCHEMA, Journal


def record(resolution: str | None, revision: str, stages: dict[str, str]) -> dict[str, object]:
    return {"resolution": resolution, "revision": revision, "stages": stages, "fingerprint": "f"}


def history(journal: Journal, key: str) -> list[tuple[str, str]]:
    return [(e["resolution"], e["revision"]) for e in journal.resolution_history()[key]]


def test_each_resolution_applied_is_kept_in_the_order_last_applied(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record_applied("Machine/m1", record(None, "r0", {"os": "a"}))  # first run
        assert journal.resolution_history() == {}
        journal.record_applied("Machine/m1", record("A", "r1", {"os": "a", "app": "b"}))
        journal.record_applied("Machine/m1", record("B", "r2", {"os": "c", "app": "b"}))
        # An update under way records its stages under the resolution still in force.
        journal.record_applied("Machine/m1", record("B", "r2", {"os": "d", "app": "b"}))
        assert history(journal, "Machine/m1") == [("A", "r1"), ("B", "r2")]
        journal.record_applied("Machine/m1", record("A", "r3", {"os": "a", "app": "b"}))
        assert history(journal, "Machine/m1") == [("B", "r2"), ("A", "r3")]
        journal.forget_applied("Machine/m1")
        assert journal.resolution_history() == {}


def test_a_journal_from_before_the_history_starts_it_from_its_records(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    old_schema = SCHEMA[: SCHEMA.index("CREATE TABLE IF NOT EXISTS resolutions")]
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute(
        "INSERT INTO applied VALUES (?, ?, ?)",
        ("Machine/m1", json.dumps(record("A", "r1", {})), "2026-01-01T00:00:00.000+00:00"),
    )
    db.execute(
        "INSERT INTO applied VALUES (?, ?, ?)",
        ("Machine/m2", json.dumps(record(None, "r1", {})), "2026-01-01T00:00:00.000+00:00"),
    )
    db.commit()
    db.close()
    with Journal(path) as journal:
        assert journal.resolution_history() == {
            "Machine/m1": [
                {"resolution": "A", "revision": "r1", "appliedAt": "2026-01-01T00:00:00.000+00:00"}
            ]
        }
        assert journal.applied()["Machine/m1"]["resolution"] == "A"  # records untouched
    with Journal(path) as journal:  # opened again: nothing doubled
        assert len(journal.resolution_history()["Machine/m1"]) == 1
