"""Web UI sign-in sessions: a random id held server-side, signed in an HttpOnly cookie.

Beside the UI's routes. Signing in posts the API token once (a form, never a
URL); the controller answers with a cookie holding a fresh random session id,
signed (itsdangerous, with a key made at start-up) and timestamped, so a forged
or expired cookie is refused before any lookup. The session itself — its CSRF
token, when it was made — lives only in this process: signing out, or
restarting the controller, ends it. The token is never stored in the cookie or
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


class Sessions:
    """The signed-in sessions of this process."""

    def __init__(self, *, lifetime: int = LIFETIME, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._signer = TimestampSigner(secrets.token_bytes(32), salt="reconciler-ui-session")
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self) -> tuple[Session, str]:
        """A new session and the cookie value naming it."""
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock())
        with self._lock:
            self._live[session.id] = session
            while len(self._live) > KEPT:
                self._live.popitem(last=False)
        return session, self._signer.sign(session.id).decode()

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names; None if absent, forged, expired or closed."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie, max_age=self.lifetime).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        with self._lock:
            session = self._live.get(session_id)
            if session is not None and self._clock() - session.created > self.lifetime:
                del self._live[session_id]
                return None
        return session

    def close(self, session: Session) -> None:
        with self._lock:
            self._live.pop(session.id, None)


__all__ = ["COOKIE", "LIFETIME", "Session", "Sessions"]
