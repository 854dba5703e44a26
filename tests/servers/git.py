"""Real Git servers on 127.0.0.1 for tests: git daemon, smart HTTP behind lighttpd, sshd.

Each server gets a fresh directory and a free port, and is stopped by its PID
when its context manager exits. A server whose binary is missing raises
`ServerUnavailable` (tests turn that into a skip with the reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GIT_HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")
SSHD = Path("/usr/sbin/sshd")


class ServerUnavailable(RuntimeError):
    """The server's binary is not installed here."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one server by its PID (its own process group, so CGI children go too)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start(argv: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for_port(port, proc)
    except Exception:
        stop(proc)
        raise
    return proc


def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "A Human",
        "GIT_AUTHOR_EMAIL": "human@example.com",
        "GIT_COMMITTER_NAME": "A Human",
        "GIT_COMMITTER_EMAIL": "human@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd or Path.cwd()),
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def init_bare(path: Path, *, branch: str = "main") -> Path:
    """A bare repository that accepts pushes over every transport."""
    git("init", "--bare", "-q", f"--initial-branch={branch}", str(path))
    git("config", "http.receivepack", "true", cwd=path)
    git("config", "receive.denyNonFastForwards", "false", cwd=path)
    return path


@dataclass(frozen=True)
class Server:
    url: str
    """URL of the served repository (`…/repo.git`)."""
    bare: Path
    """The served bare repository on disk (tests push to it as "a human")."""
    root: Path


@contextlib.contextmanager
def git_daemon(root: Path, name: str = "repo.git") -> Iterator[Server]:
    repos = root / "daemon"
    repos.mkdir(parents=True)
    bare = init_bare(repos / name)
    port = free_port()
    argv = [
        "git",
        "daemon",
        "--listen=127.0.0.1",
        f"--port={port}",
        "--reuseaddr",
        f"--base-path={repos}",
        "--export-all",
        "--enable=receive-pack",
        str(repos),
    ]
    proc = start(argv, port, root / "daemon.log")
    try:
        yield Server(f"git://127.0.0.1:{port}/{name}", bare, root)
    finally:
        stop(proc)


@dataclass(frozen=True)
class DaemonControl:
    """A git daemon that a test can stop and start again on the same port."""

    server: Server
    port: int
    argv: tuple[str, ...]
    log: Path
    procs: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)
        self.procs.clear()

    def start(self) -> None:
        self.procs.append(start(list(self.argv), self.port, self.log))


@contextlib.contextmanager
def restartable_git_daemon(root: Path, name: str = "repo.git") -> Iterator[DaemonControl]:
    repos = root / "daemon"
    repos.mkdir(parents=True)
    bare = init_bare(repos / name)
    port = free_port()
    argv = (
        "git",
        "daemon",
        "--listen=127.0.0.1",
        f"--port={port}",
        "--reuseaddr",
        f"--base-path={repos}",
        "--export-all",
        "--enable=receive-pack",
        str(repos),
    )
    control = DaemonControl(
        Server(f"git://127.0.0.1:{port}/{name}", bare, root), port, argv, root / "daemon.log", []
    )
    control.start()
    try:
        yield control
    finally:
        control.stop()


LIGHTTPD_CONF = """\
server.modules = ("mod_alias", "mod_cgi", "mod_setenv", "mod_auth", "mod_authn_file")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{root}/lighttpd-error.log"
server.pid-file = "{root}/lighttpd.pid"
alias.url = ("/git" => "{backend}")
$HTTP["url"] =~ "^/git" {{
    cgi.assign = ("" => "")
    setenv.set-environment = ("GIT_PROJECT_ROOT" => "{repos}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
auth.backend = "plain"
auth.backend.plain.userfile = "{root}/users"
auth.require = ("/git" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
"""


@contextlib.contextmanager
def git_http(
    root: Path, *, username: str, password: str, name: str = "repo.git"
) -> Iterator[Server]:
    """git http-backend (smart HTTP) behind lighttpd with basic auth."""
    lighttpd = shutil.which("lighttpd")
    if lighttpd is None or not GIT_HTTP_BACKEND.exists():
        raise ServerUnavailable("lighttpd or git-http-backend is not installed")
    repos = root / "http"
    repos.mkdir(parents=True)
    bare = init_bare(repos / name)
    (root / "users").write_text(f"{username}:{password}\n", encoding="utf-8")
    port = free_port()
    conf = root / "lighttpd.conf"
    conf.write_text(
        LIGHTTPD_CONF.format(root=root, port=port, backend=GIT_HTTP_BACKEND, repos=repos),
        encoding="utf-8",
    )
    proc = start([lighttpd, "-D", "-f", str(conf)], port, root / "lighttpd.log")
    try:
        yield Server(f"http://127.0.0.1:{port}/git/{name}", bare, root)
    finally:
        stop(proc)


SSHD_CONF = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
LogLevel ERROR
"""


@dataclass(frozen=True)
class SshServer(Server):
    client_key: Path
    """Private key allowed in authorized_keys (restricted to git-shell)."""
    known_hosts: Path
    """A known_hosts file holding this server's host key (`[127.0.0.1]:port`)."""
    port: int


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )


@contextlib.contextmanager
def git_sshd(root: Path, name: str = "repo.git") -> Iterator[SshServer]:
    """sshd on a loopback port, its own host key, one client key forced into git-shell."""
    git_shell = shutil.which("git-shell")
    if not SSHD.exists() or git_shell is None or shutil.which("ssh-keygen") is None:
        raise ServerUnavailable("openssh-server (sshd) or git-shell is not installed")
    repos = root / "ssh"
    repos.mkdir(parents=True)
    bare = init_bare(repos / name)
    keygen(root / "host_key")
    keygen(root / "client_key")
    public = (root / "client_key.pub").read_text(encoding="utf-8").strip()
    restrict = f'command="{git_shell} -c \\"$SSH_ORIGINAL_COMMAND\\"",restrict'
    (root / "authorized_keys").write_text(f"{restrict} {public}\n", encoding="utf-8")
    port = free_port()
    host_public = (root / "host_key.pub").read_text(encoding="utf-8").split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n", encoding="utf-8"
    )
    conf = root / "sshd_config"
    conf.write_text(SSHD_CONF.format(port=port, root=root), encoding="utf-8")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    proc = start([str(SSHD), "-D", "-e", "-f", str(conf)], port, root / "sshd.log")
    user = os.environ.get("USER") or "root"
    try:
        yield SshServer(
            f"ssh://{user}@127.0.0.1:{port}{bare}",
            bare,
            root,
            client_key=root / "client_key",
            known_hosts=known_hosts,
            port=port,
        )
    finally:
        stop(proc)
