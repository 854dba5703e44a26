"""Smart HTTP with basic auth (lighttpd + git http-backend) and SSH (sshd + git-shell)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.errors import PermanentError
from reconciler.source import DeclaredSource, GitAccess, Mirror, StatusWriter
from reconciler.source.declared import REMOTE_REFUSED
from tests.servers.git import Server, ServerUnavailable, SshServer, git, git_http, git_sshd
from tests.source.conftest import Human, seeded

USER = "deploy"
PASSWORD = "canary-Pw-7f3a91"
WRONG = "canary-Wrong-5e22c0"


@pytest.fixture
def http(tmp_path: Path) -> Iterator[Server]:
    try:
        with git_http(tmp_path / "srv", username=USER, password=PASSWORD) as server:
            yield server
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    try:
        with git_sshd(tmp_path / "srv") as server:
            yield server
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


def seed(server: Server, tmp_path: Path) -> str:
    return seeded(Human(server.bare, tmp_path / "human"))


def test_http_basic_auth_fetch_and_status_push(
    http: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = seed(http, tmp_path)
    monkeypatch.setenv("TEST_GIT_PASSWORD", PASSWORD)
    access = GitAccess(http.url, username=USER, password_ref="env:TEST_GIT_PASSWORD")
    source = DeclaredSource(Mirror.in_state_dir(tmp_path / "state", access))

    result = source.poll()
    assert result.ready and result.revision is not None and result.revision.sha == sha

    written = StatusWriter(source.mirror).write(
        {"status/Provider/p0.yaml": b"phase: Ready\n"},
        message="status",
        trailers={"Reconciled-Revision": sha},
    )
    assert written.changed
    assert git("rev-parse", "reconciler/status", cwd=http.bare) == written.commit


def test_http_wrong_password_fails_fast_and_clearly(
    http: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(http, tmp_path)
    monkeypatch.setenv("TEST_GIT_PASSWORD", WRONG)
    access = GitAccess(http.url, username=USER, password_ref="env:TEST_GIT_PASSWORD")
    mirror = Mirror.in_state_dir(tmp_path / "state", access)

    started = time.monotonic()
    with pytest.raises(PermanentError) as caught:
        mirror.fetch()
    assert time.monotonic() - started < 3  # one refusal, not libgit2's ~15 retries
    message = str(caught.value)
    assert message.startswith(f"authentication refused by {http.url}")
    assert WRONG not in message and PASSWORD not in message

    # Through the source: no exception, the condition says why, and it backs off long.
    source = DeclaredSource(mirror)
    result = source.poll()
    assert result.stale is not None and result.stale.reason == REMOTE_REFUSED
    assert "authentication refused" in result.stale.message
    assert WRONG not in result.stale.message
    assert result.retry_after == source.backoff.cap


def test_http_password_in_url_is_never_shown(http: Server, tmp_path: Path) -> None:
    seed(http, tmp_path)
    url = http.url.replace("http://", f"http://{USER}:{WRONG}@")
    with pytest.raises(PermanentError) as caught:
        Mirror.in_state_dir(tmp_path / "state", GitAccess(url)).fetch()
    assert WRONG not in str(caught.value)
    assert str(caught.value).startswith(f"authentication refused by http://{USER}@127.0.0.1")


def ssh_access(server: SshServer, known_hosts: Path, **kwargs: object) -> GitAccess:
    return GitAccess(
        server.url,
        ssh_key_ref=f"file:{server.client_key}",
        known_hosts=known_hosts,
        **kwargs,  # type: ignore[arg-type]
    )


def test_ssh_key_and_known_host(sshd: SshServer, tmp_path: Path) -> None:
    sha = seed(sshd, tmp_path)
    source = DeclaredSource(
        Mirror.in_state_dir(tmp_path / "state", ssh_access(sshd, sshd.known_hosts))
    )

    result = source.poll()
    assert result.ready and result.revision is not None and result.revision.sha == sha

    written = StatusWriter(source.mirror).write(
        {"status/Provider/p0.yaml": b"phase: Ready\n"}, message="status"
    )
    assert git("rev-parse", "reconciler/status", cwd=sshd.bare) == written.commit


def test_ssh_unknown_or_wrong_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    seed(sshd, tmp_path)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(PermanentError, match=r"SSH host key of 127\.0\.0\.1") as caught:
        Mirror.in_state_dir(tmp_path / "a", ssh_access(sshd, empty)).fetch()
    assert str(empty) in str(caught.value)

    # A known_hosts entry for this host:port with another key: refused too.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = (other.with_suffix(".pub")).read_text(encoding="utf-8").split()[:2]
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n", encoding="utf-8")
    with pytest.raises(PermanentError, match="unknown or does not match"):
        Mirror.in_state_dir(tmp_path / "b", ssh_access(sshd, wrong)).fetch()

    # Explicitly disabled check: connects.
    insecure = ssh_access(sshd, empty, insecure_skip_host_key_check=True)
    Mirror.in_state_dir(tmp_path / "c", insecure).fetch()
