"""Web UI sign-in sessions: a random id held server-side, signed in an HttpOnly cookie.

Beside the UI's routes. Signing in posts the API token once (a form, never a
URL); the controller answers with a cookie holding a fresh random session id,
signed (itsdangerous) and timestamped, so a forged or expired cookie is refused
before any lookup. The session itself — its CSRF token, when it was made — lives
in this process (the key made at start-up: signing out, or restarting the
controller, ends it), or, with `RECONCILER_DATABASE_URL`, in the database with the
signing key (`reconciler.controller.ui.sessions_pg`): every replica then knows every session,
and a standby serves the UI signed in. The token is never stored in the cookie or
in a page. Every state-changing form (Sync now, sign out) carries the session's
CSRF token, compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from itsdangerous import BadSignature, TimestampSigner

COOKIE = "reconciler_session"
LIFETIME = 12 * 3600
"""Seconds a session lasts after sign-in (the cookie's Max-Age and the signature's age)."""
KEPT = 1000
"""Sessions held at most; the oldest are forgotten first."""


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    created: float

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class SessionStore(Protocol):
    """Where sessions live: this process (`MemorySessions`), or the shared database
    (`reconciler.controller.ui.sessions_pg`), so that every replica knows every session."""

    def signing_key(self) -> bytes: ...

    def put(self, session: Session) -> None: ...

    def get(self, session_id: str) -> Session | None: ...

    def drop(self, session_id: str) -> None: ...


class MemorySessions:
    """The sessions of this process alone, the newest `KEPT`."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def signing_key(self) -> bytes:
        return self._key

    def put(self, session: Session) -> None:
        with self._lock:
            self._live[session.id] = session
            while len(self._live) > KEPT:
                self._live.popitem(last=False)

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._live.get(session_id)

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._live.pop(session_id, None)


class Sessions:
    """The signed-in sessions, in their store."""

    def __init__(
        self,
        *,
        lifetime: int = LIFETIME,
        clock: Callable[[], float] = time.time,
        store: SessionStore | None = None,
    ) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._store = store or MemorySessions()
        self._signer = TimestampSigner(self._store.signing_key(), salt="reconciler-ui-session")

    def open(self) -> tuple[Session, str]:
        """A new session and the cookie value naming it."""
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock())
        self._store.put(session)
        return session, self._signer.sign(session.id).decode()

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names; None if absent, forged, expired or closed."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie, max_age=self.lifetime).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        session = self._store.get(session_id)
        if session is not None and self._clock() - session.created > self.lifetime:
            self._store.drop(session_id)
            return None
        return session

    def close(self, session: Session) -> None:
        self._store.drop(session.id)


__all__ = ["COOKIE", "LIFETIME", "MemorySessions", "Session", "SessionStore", "Sessions"]
