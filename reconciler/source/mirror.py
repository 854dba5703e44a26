"""The Git edge: a bare mirror of the declared repository, fetched every cycle.

First step of the flow (pull). `Mirror` keeps `<state_dir>/mirror.git`, a bare
repository whose `refs/heads/*` and `refs/tags/*` mirror the remote's; it clones
once, fetches on every call to `fetch`, resolves the tracked branch or pin into
a `Revision`, and pushes (the status writer's commits). Every other module of
`reconciler.source` reads objects from this repository, never from a checkout.

Transports: a local path, `file://`, `git://`, smart HTTP(S), SSH (URL or
scp-like `user@host:path`). Credentials are references (`reconciler.secrets`):

- HTTP(S): user name and password/token. The credentials callback answers once;
  a second request means the server refused the first answer, and the callback
  raises "authentication refused by <url>" (libgit2 would otherwise retry about
  15 times). A password written into the URL is answered the same way and never
  stored: the mirror's remote URL (its config, a file at rest) is kept without it.
- SSH: a private key (`KeypairFromMemory`). libgit2 checks the server's host key
  only against `<its home dir>/.ssh/known_hosts` and hands the callback a bare
  `valid` verdict (pygit2 passes no key), so each SSH operation runs with
  libgit2's home dir pointed at a private copy of the configured known_hosts file,
  and `certificate_check` refuses anything libgit2 did not find there, unless
  `insecure_skip_host_key_check` is set.

Connect and I/O timeouts (`GitAccess.connect_timeout`, `io_timeout`) keep a
remote that accepts and then hangs from stalling the cycle; libgit2 holds them
process-wide, so each operation sets them before it starts.

`pygit2.GitError` is translated here, and only here, into `TemporaryError`
(remote down, timeouts, anything worth retrying) or `PermanentError`
(authentication refused, unknown host key, missing branch); every message is
passed through the secret redactor and names the URL without its password.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pygit2
from pygit2.enums import CredentialType, FetchPrune

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.secrets import REDACTOR, resolve

if TYPE_CHECKING:
    from reconciler.settings import Settings

REMOTE = "origin"
MIRROR_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?[^/:]+:(?!//)")
_SSH_SCHEMES = {"ssh", "ssh+git", "git+ssh"}
_HOMEDIR_LOCK = threading.Lock()


@dataclass(frozen=True)
class Revision:
    """One commit of the declared repository, as the controller reports it."""

    sha: str
    author_name: str
    author_email: str
    message: str
    time: datetime

    @property
    def short(self) -> str:
        return self.sha[:12]

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    def to_dict(self) -> dict[str, str]:
        return {
            "sha": self.sha,
            "author": f"{self.author_name} <{self.author_email}>",
            "message": self.message,
            "time": self.time.isoformat(),
        }

    @classmethod
    def of(cls, commit: pygit2.Commit) -> Revision:
        author = commit.author
        tz = timezone(timedelta(minutes=commit.commit_time_offset))
        return cls(
            sha=str(commit.id),
            author_name=author.name,
            author_email=author.email,
            message=commit.message,
            time=datetime.fromtimestamp(commit.commit_time, UTC).astimezone(tz),
        )


def normalize_url(url: str) -> str:
    """A URL for libgit2: URLs and scp-like SSH as given, a local path made absolute."""
    if _URL_SCHEME.match(url) or (_SCP_LIKE.match(url) and not Path(url).exists()):
        return url
    return str(Path(url).expanduser().resolve())


def is_ssh_url(url: str) -> bool:
    if _URL_SCHEME.match(url):
        return urlsplit(url).scheme.lower() in _SSH_SCHEMES
    return bool(_SCP_LIKE.match(url)) and not Path(url).exists()


def without_password(url: str) -> str:
    """The URL with any password removed (the user name kept)."""
    if _URL_SCHEME.match(url):
        parts = urlsplit(url)
        if parts.password is not None:
            user = parts.username or ""
            host = parts.hostname or ""
            netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
            url = urlunsplit(parts._replace(netloc=netloc))
    return url


def url_password(url: str) -> str | None:
    """The password written into a URL (`https://user:pass@host/…`), decoded, if any."""
    if not _URL_SCHEME.match(url):
        return None
    password = urlsplit(url).password
    return unquote(password) if password is not None else None


def display_url(url: str) -> str:
    """The URL without any password in it, safe for messages and logs."""
    return REDACTOR.text(without_password(url))


@dataclass(frozen=True)
class GitAccess:
    """Where the declared repository is and how to authenticate (secrets by reference)."""

    url: str
    username: str | None = None
    password_ref: str | None = None
    ssh_key_ref: str | None = None
    ssh_public_key: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    insecure_skip_host_key_check: bool = False
    connect_timeout: float = 10.0
    """Seconds to wait for a connection (libgit2's option; process-wide)."""
    io_timeout: float = 60.0
    """Seconds a read or write on the connection may stall (process-wide)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> GitAccess:
        if not settings.repo:
            raise PermanentError("no repository configured (--repo / RECONCILER_REPO)")
        return cls(
            url=normalize_url(settings.repo),
            username=settings.git_username,
            password_ref=settings.git_password,
            ssh_key_ref=settings.git_ssh_key,
            ssh_public_key=(
                Path(settings.git_ssh_public_key).expanduser()
                if settings.git_ssh_public_key
                else None
            ),
            known_hosts=settings.git_known_hosts,
            insecure_skip_host_key_check=settings.git_insecure_skip_host_key_check,
        )

    @property
    def is_ssh(self) -> bool:
        return is_ssh_url(self.url)

    @property
    def display_url(self) -> str:
        return display_url(self.url)


class _Callbacks(pygit2.RemoteCallbacks):
    """One network operation's callbacks: answer credentials once, verify host keys."""

    def __init__(self, access: GitAccess) -> None:
        super().__init__()
        self.access = access
        self.answered: set[CredentialType] = set()
        self.rejected: dict[str, str] = {}
        self.remote_text: list[str] = []

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> Any:
        access = self.access
        user = access.username or username_from_url or ("git" if access.is_ssh else None)
        if allowed_types & CredentialType.SSH_KEY and access.ssh_key_ref:
            kind = CredentialType.SSH_KEY
        elif allowed_types & CredentialType.USERPASS_PLAINTEXT and (
            access.password_ref or url_password(access.url) is not None
        ):
            kind = CredentialType.USERPASS_PLAINTEXT
        elif allowed_types & CredentialType.USERNAME and user:
            return pygit2.Username(user)
        else:
            needed = "an SSH key" if access.is_ssh else "a user name and password"
            raise PermanentError(
                f"{access.display_url} requires authentication: configure {needed} "
                "(RECONCILER_GIT_SSH_KEY or RECONCILER_GIT_USERNAME/RECONCILER_GIT_PASSWORD)"
            )
        if kind in self.answered:
            raise PermanentError(f"authentication refused by {access.display_url}")
        self.answered.add(kind)
        if kind == CredentialType.SSH_KEY:
            assert access.ssh_key_ref is not None
            private = resolve(access.ssh_key_ref)
            if not private.endswith("\n"):
                private += "\n"
            public = (
                access.ssh_public_key.read_text(encoding="utf-8") if access.ssh_public_key else None
            )
            # libgit2 takes no public key (NULL) and derives it; the stubs say str.
            return pygit2.KeypairFromMemory(user, public, private, "")  # type: ignore[arg-type]
        if not user:
            raise PermanentError(
                f"{access.display_url}: a password is configured but no user name "
                "(RECONCILER_GIT_USERNAME or user@ in the URL)"
            )
        if access.password_ref:
            return pygit2.UserPass(user, resolve(access.password_ref))
        return pygit2.UserPass(user, url_password(access.url) or "")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        if valid:
            return True
        hostname = host.decode(errors="replace")
        if self.access.is_ssh:
            if self.access.insecure_skip_host_key_check:
                return True
            raise PermanentError(
                f"SSH host key of {hostname} is unknown or does not match "
                f"{self.access.known_hosts}: refusing to connect to {self.access.display_url} "
                "(add the host key to that file, or set "
                "RECONCILER_GIT_INSECURE_SKIP_HOST_KEY_CHECK=true to skip the check)"
            )
        raise PermanentError(f"TLS certificate of {hostname} is not trusted")

    def sideband_progress(self, string: str) -> None:
        self.remote_text.append(string)

    def remote_said(self) -> str:
        """What the server printed (hook output), one line, for a refusal's message."""
        lines = "".join(self.remote_text).replace("\r", "\n").splitlines()
        return " ".join(line.strip() for line in lines if line.strip())

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message is not None:
            self.rejected[refname] = message


def translate(exc: pygit2.GitError, access: GitAccess, doing: str) -> ReconcilerError:
    """The one place a pygit2 error becomes a TemporaryError or a PermanentError."""
    message = REDACTOR.text(str(exc)).strip()
    lowered = message.lower()
    where = access.display_url
    if "non-bare" in lowered:
        return PermanentError(
            f"cannot push to {where}: it has a working tree; point --repo at a bare "
            "repository (git clone --bare) or at a Git server"
        )
    if any(w in lowered for w in ("401", "403", "authentication", "unauthorized", "credential")):
        return PermanentError(f"authentication refused by {where} ({doing}): {message}")
    if "hostkey" in lowered or "host key" in lowered or "certificate" in lowered:
        return PermanentError(f"host verification failed for {where} ({doing}): {message}")
    return TemporaryError(f"{doing} {where} failed: {message}")


@dataclass(frozen=True)
class PushOutcome:
    """What the server said about one pushed reference: accepted, or refused with a reason."""

    accepted: bool
    message: str | None = None


@dataclass
class Mirror:
    """A bare mirror of the remote in the state directory (`<state_dir>/mirror.git`)."""

    path: Path
    access: GitAccess
    _repo: pygit2.Repository | None = field(default=None, init=False, repr=False)

    @classmethod
    def in_state_dir(cls, state_dir: Path, access: GitAccess) -> Mirror:
        return cls(Path(state_dir) / "mirror.git", access)

    @property
    def repo(self) -> pygit2.Repository:
        if self._repo is None:
            if (self.path / "HEAD").exists():
                self._repo = pygit2.Repository(str(self.path))
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._repo = pygit2.init_repository(str(self.path), bare=True)
            self._configure_remote(self._repo)
        return self._repo

    @property
    def exists(self) -> bool:
        return (self.path / "HEAD").exists()

    def _configure_remote(self, repo: pygit2.Repository) -> None:
        # The mirror's config is a file at rest: a password written into the URL stays
        # out of it and is given by the credentials callback instead.
        url = without_password(self.access.url)
        if REMOTE not in repo.remotes.names():
            repo.remotes.create(REMOTE, url, MIRROR_REFSPECS[0])
            repo.remotes.add_fetch(REMOTE, MIRROR_REFSPECS[1])
        elif repo.remotes[REMOTE].url != url:
            repo.remotes.set_url(REMOTE, url)

    @contextlib.contextmanager
    def _network(self, doing: str) -> Iterator[_Callbacks]:
        """Callbacks for one operation; GitError translated; SSH known_hosts in place."""
        callbacks = _Callbacks(self.access)
        pygit2.settings.server_connect_timeout = int(self.access.connect_timeout * 1000)
        pygit2.settings.server_timeout = int(self.access.io_timeout * 1000)
        with self._known_hosts():
            try:
                yield callbacks
            except pygit2.GitError as exc:
                raise translate(exc, self.access, doing) from None
            except ReconcilerError as exc:
                # Raised by our own callbacks; scrub it in case a secret slipped in.
                exc.args = tuple(REDACTOR.text(str(a)) for a in exc.args)
                raise

    @contextlib.contextmanager
    def _known_hosts(self) -> Iterator[None]:
        if not self.access.is_ssh:
            yield
            return
        home = self.path.parent / "ssh-home"
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        target = home / ".ssh" / "known_hosts"
        source = self.access.known_hosts.expanduser()
        if source.is_file():
            shutil.copyfile(source, target)
        else:
            target.write_text("", encoding="utf-8")
        with _HOMEDIR_LOCK:
            previous = pygit2.settings.homedir
            pygit2.settings.homedir = str(home)
            try:
                yield
            finally:
                if previous:
                    pygit2.settings.homedir = previous

    def fetch(self) -> None:
        """Clone on first use, fetch (with prune) afterwards: refs mirror the remote's."""
        repo = self.repo
        with self._network("fetch from") as callbacks:
            repo.remotes[REMOTE].fetch(callbacks=callbacks, prune=FetchPrune.PRUNE)

    def resolve(self, branch: str, ref: str | None = None) -> Revision:
        """The commit a pin (`ref`: tag, branch or SHA) or else the tracked branch names."""
        return Revision.of(self.commit_for(branch, ref))

    def commit_for(self, branch: str, ref: str | None = None) -> pygit2.Commit:
        repo = self.repo
        wanted = ref or f"refs/heads/{branch}"
        try:
            obj = repo.revparse_single(wanted)
            commit = obj.peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            what = f"ref {ref!r}" if ref else f"branch {branch!r}"
            raise PermanentError(f"{what} not found in {self.access.display_url}") from None
        return commit

    def revision(self, sha: str) -> Revision:
        return Revision.of(self.repo[sha].peel(pygit2.Commit))

    def push(self, local_ref: str, remote_ref: str) -> PushOutcome:
        """Push one reference, never forced; a server-side refusal is returned, not lost."""
        with self._network("push to") as callbacks:
            self.repo.remotes[REMOTE].push([f"{local_ref}:{remote_ref}"], callbacks=callbacks)
        if remote_ref in callbacks.rejected:
            said = callbacks.remote_said()
            message = callbacks.rejected[remote_ref] + (f" (remote: {said})" if said else "")
            return PushOutcome(False, REDACTOR.text(message))
        return PushOutcome(True)
