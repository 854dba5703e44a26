"""A `Fleet` whose controller keeps its journal in PostgreSQL: the records read from there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.support import Fleet
from tests.servers.postgres import Cluster


@dataclass
class PgFleet(Fleet):
    """`tests.e2e.support.Fleet` with `RECONCILER_DATABASE_URL` set: same CLI, same
    assertions, the journal's rows from the database."""

    cluster: Cluster | None = None
    database: str = ""

    @classmethod
    def create_pg(
        cls, tmp: Path, files: dict[str, str], cluster: Cluster, env: dict[str, str] | None = None
    ) -> PgFleet:
        database = cluster.new_database()
        base = Fleet.create(tmp, files, env={**cluster.env(database), **(env or {})})
        return cls(base.bare, base.state, base.env, cluster, database)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        assert self.cluster is not None
        try:
            with self.cluster.connect(self.database) as conn:
                cursor = conn.execute(query, args)
                return [dict(r) for r in cursor.fetchall()] if cursor.description else []
        except Exception as exc:  # the tables are not created before the first start
            if "does not exist" in str(exc):
                return []
            raise

    def journal_plans(self) -> list[dict[str, Any]]:
        return self.sql("SELECT * FROM plans ORDER BY created_at, seq")

    def journal_tasks(self) -> list[dict[str, Any]]:
        return self.sql("SELECT * FROM tasks ORDER BY seq")
