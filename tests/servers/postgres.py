"""A real PostgreSQL cluster on 127.0.0.1 for tests and the benchmarks.

Debian's postgresql-15 binaries (`initdb`, `pg_ctl`), run as the `postgres` user (they
refuse root), in a fresh folder on a free port, with a private socket directory. Host
connections need a password (scram-sha-256), so every test exercises
`RECONCILER_DATABASE_PASSWORD`. `ensure_installed` installs the Debian package when it
is missing (as `.ci/run` does); `ServerUnavailable` says why it cannot run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.git import ServerUnavailable, free_port

PASSWORD = "pg-test-" + uuid.uuid4().hex[:12]
"""The superuser's password (a fresh one per session: it must never show up in output)."""
PASSWORD_ENV = "RECONCILER_TEST_PG_PASSWORD"


def bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def ensure_installed() -> Path:
    """The PostgreSQL binaries' folder, installing Debian's package if needed."""
    found = bin_dir()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
            env=env,
            capture_output=True,
            timeout=900,
        )
        found = bin_dir()
    if found is None:
        raise ServerUnavailable("PostgreSQL is not installed and could not be (apt-get)")
    return found


def _as_postgres(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


@dataclass
class Cluster:
    """One running cluster: its folder, port, and how to reach a database in it."""

    bin: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def env(self, database: str) -> dict[str, str]:
        """The settings that point reconciler at `database`."""
        return {
            "RECONCILER_DATABASE_URL": self.url(database),
            "RECONCILER_DATABASE_PASSWORD": f"env:{PASSWORD_ENV}",
            PASSWORD_ENV: PASSWORD,
        }

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:10]
        with psycopg.connect(self.url(), password=PASSWORD, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def connect(self, database: str):  # type: ignore[no-untyped-def]
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(
            self.url(database), password=PASSWORD, autocommit=True, row_factory=dict_row
        )

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections=200 -c fsync=off"
        )
        return _as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", *args],
            timeout=120,
        )

    def start(self) -> None:
        done = self.pg_ctl("-l", str(self.root / "server.log"), "start")
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}{done.stdout}\n{log}")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """Stop (fast: sessions are cut) and start again on the same port."""
        self.stop()
        self.start()


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A fresh cluster for the session; stopped and removed at the end."""
    binaries = ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    root.chmod(0o700)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    done = _as_postgres(
        [str(binaries / "initdb"), "-D", str(root / "data"), "-U", "postgres",
         f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
         "-E", "UTF8", "--no-instructions"],
        timeout=300,
    )  # fmt: skip
    pwfile.unlink()
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServerUnavailable(f"initdb failed: {done.stderr.strip()[-500:]}")
    found = Cluster(binaries, root, free_port())
    try:
        found.start()
        yield found
    finally:
        found.stop()
        shutil.rmtree(root, ignore_errors=True)
