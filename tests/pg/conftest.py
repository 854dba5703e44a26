"""PostgreSQL for the tests of the shared journal, leader election and workers.

One cluster per test session (`tests.servers.postgres`: initdb in a temporary folder,
pg_ctl on a free loopback port, stopped at the end), a fresh database per test.
Tests skip, saying why, only when PostgreSQL cannot be installed here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.git import ServerUnavailable
from tests.servers.postgres import Cluster, cluster


@pytest.fixture(scope="session")
def pg() -> Iterator[Cluster]:
    try:
        with cluster() as running:
            yield running
    except ServerUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture
def pg_env(pg: Cluster) -> dict[str, str]:
    """The environment pointing reconciler at a fresh database of the session's cluster."""
    return pg.env(pg.new_database())
