"""Who the controller is: one canonical owner identity, and the state directory bound to it.

Part of the source edge. Ownership marks (EC2 tags, REST ownership fields, the
simulator's records, `status/controller.yaml`) carry the *owner*: by default the
declared repository's canonical location plus the tracked branch, or the
`RECONCILER_OWNER` setting. The same repository spelled as an absolute path, a
relative path or a `file://` URL is one owner; so is an HTTPS URL with or without
credentials, a different case of its host, or a trailing slash. Two spellings that
made two owners once made every resource unknown, and with `selfHeal` created
duplicate cloud instances.

A state directory (mirror, journal, provider records) belongs to one owner: the first
command that uses it writes `owner.json`, and a later one for another repository is
refused, naming both, before anything runs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from reconciler.errors import PermanentError

OWNER_FILE = "owner.json"
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^/:]+):(?!//)(?P<path>.*)$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418}


def is_local(location: str) -> bool:
    """A path on this machine (or a `file://` URL), as opposed to a remote URL."""
    if location.startswith("file://"):
        return True
    if _URL_SCHEME.match(location):
        return False
    return not (_SCP_LIKE.match(location) and not Path(location).expanduser().exists())


def local_path(location: str) -> Path:
    """The absolute path of a local repository location (see `is_local`)."""
    if location.startswith("file://"):
        return Path(urlsplit(location).path)
    return Path(location).expanduser().resolve()


def canonical_location(location: str) -> str:
    """One spelling per repository: `file://` + the real path for local ones; for URLs
    the scheme and host in lower case, no credentials, no default port, no trailing
    slash; scp-like `user@host:path` as `ssh://host/path`."""
    if is_local(location):
        return "file://" + os.path.realpath(local_path(location))
    scp = None if _URL_SCHEME.match(location) else _SCP_LIKE.match(location)
    if scp is not None:
        return f"ssh://{scp['host'].lower()}/{scp['path'].lstrip('/').rstrip('/')}"
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def owner_identity(location: str, branch: str, explicit: str | None = None) -> str:
    """The owner recorded on everything this controller creates (see module docstring)."""
    if explicit:
        return explicit
    return f"{canonical_location(location)}#{branch}"


@dataclass(frozen=True)
class StateOwner:
    owner: str
    repository: str


def bind_state_dir(state_dir: Path, owner: str, repository: str) -> StateOwner:
    """Record the owner of a state directory on first use; refuse another one later.

    `repository` is how the user gave it (shown in the message, without credentials).
    """
    path = Path(state_dir) / OWNER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = None
    except (OSError, ValueError) as exc:
        raise PermanentError(f"{path}: unreadable ({exc}); delete it to re-bind") from None
    if isinstance(data, dict) and data.get("owner"):
        if data["owner"] != owner:
            raise PermanentError(
                f"state directory {state_dir} belongs to {data.get('repository') or '?'} "
                f"(owner {data['owner']}); refusing to use it for {repository} "
                f"(owner {owner}): give another --state-dir"
            )
        return StateOwner(str(data["owner"]), str(data.get("repository") or repository))
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"owner": owner, "repository": repository}) + "\n", "utf-8")
    tmp.replace(path)
    return StateOwner(owner, repository)


def check_local_repository(location: str, *, writing: bool) -> None:
    """A local location must exist; one that is written to must be a bare repository
    (pushing status into a working copy fails only after the work ran)."""
    if not is_local(location):
        return
    path = local_path(location)
    if not path.exists():
        raise PermanentError(f"repository {location}: no such file or directory ({path})")
    if not writing:
        return
    if (path / ".git").exists() or not (path / "HEAD").exists():
        raise PermanentError(
            f"repository {location} is a working copy, not a bare repository: the controller "
            f"pushes status to it; use a bare one (git clone --bare {path} {path}.git) or a URL"
        )
