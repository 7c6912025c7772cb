"""Sessions: a visitor who has not signed in is a signed cookie; a signed-in user is a random id
whose tokens stay on the server.

Why this split (issue 13): every visitor needs a session before signing in (the sign-in form's
CSRF token), and a store that keeps those visitors can be filled by anyone. The old memory store
kept at most 10,000 sessions and forgot the least recently used, so opening 10,000 anonymous
sessions signed every user out. Now an anonymous session costs the server nothing: its CSRF
token and flash messages travel in a cookie signed with ``SECRET_KEY`` (itsdangerous, timed, so
it expires after the idle time) and nothing is stored. Only a successful sign-in creates server
state, at most ``max_per_user`` sessions per account (the oldest of *that* account goes first),
so no number of new sessions, anonymous or not, signs anyone else out.

Tokens are not put in the cookie: they are bearer credentials (a Cognito ID token and refresh
token together are about 3 KB, near a cookie's 4 KB), and a server-side session can be ended for
good on sign-out, which a cookie cannot (an old cookie replayed after sign-out finds nothing).
The signed-in store is this process's memory, which is why the deploy configs run one gunicorn
worker with threads and pin a browser to one instance (EB stickiness; App Engine max_instances
1); a shared store (ElastiCache, Memorystore) would lift that limit behind the same interface.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from itsdangerous import BadSignature, URLSafeTimedSerializer

from gemcast_web.auth import Tokens

MAX_PER_USER = 10


@dataclass
class WebSession:
    id: str
    csrf: str
    last_seen: float
    tokens: Tokens | None = None
    flash: list[str] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        return self.tokens is not None


class SessionStore:
    """Anonymous sessions in signed cookies; signed-in sessions by id in memory, dropped after
    ``idle_s`` without use, at most ``max_per_user`` per account."""

    def __init__(self, secret_key: str, idle_s: float, max_per_user: int = MAX_PER_USER) -> None:
        self.idle_s = idle_s
        self.max_per_user = max_per_user
        self._cookies = URLSafeTimedSerializer(secret_key, salt="gemcast-session")
        self._sessions: OrderedDict[str, WebSession] = OrderedDict()
        self._lock = threading.Lock()
        self._swept = time.time()

    # -- cookies -----------------------------------------------------------------------------
    def cookie_for(self, session: WebSession) -> str:
        """The cookie value: the id of a signed-in session, or an anonymous session itself."""
        if session.signed_in:
            return str(self._cookies.dumps({"s": session.id}))
        return str(self._cookies.dumps({"a": session.csrf, "f": session.flash[-5:]}))

    def from_cookie(self, value: str | None) -> WebSession | None:
        """The session a cookie names; None when it is forged, expired or signed out."""
        if not value:
            return None
        try:
            data, signed_at = self._cookies.loads(value, return_timestamp=True)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        if isinstance(data.get("s"), str):  # a signed-in session expires by its own last use
            return self.get(data["s"])
        if time.time() - signed_at.timestamp() > self.idle_s:  # rewritten on every answer
            return None
        csrf, flash = data.get("a"), data.get("f")
        if not isinstance(csrf, str) or not isinstance(flash, list):
            return None
        return WebSession(id="", csrf=csrf, last_seen=time.time(), flash=[str(m) for m in flash])

    # -- sessions ----------------------------------------------------------------------------
    def new(self) -> WebSession:
        """An anonymous session: nothing is stored until it signs in."""
        return WebSession(id="", csrf=secrets.token_urlsafe(32), last_seen=time.time())

    def sign_in(self, session: WebSession, tokens: Tokens) -> WebSession:
        """A new id and CSRF token for the visitor who just signed in (no session fixation)."""
        if session.id:
            self.drop(session.id)
        now = time.time()
        fresh = WebSession(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), last_seen=now,
                           tokens=tokens, flash=session.flash)
        with self._lock:
            self._sweep(now)
            own = [s.id for s in self._sessions.values() if s.tokens and s.tokens.subject == tokens.subject]
            for old in own[: max(0, len(own) - self.max_per_user + 1)]:
                del self._sessions[old]
            self._sessions[fresh.id] = fresh
        return fresh

    def get(self, session_id: str | None) -> WebSession | None:
        if not session_id:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self.idle_s:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _sweep(self, now: float) -> None:
        # Sessions idle too long are dropped on their next use; a sweep a minute bounds the rest.
        if now - self._swept < 60:
            return
        self._swept = now
        for sid in [sid for sid, s in self._sessions.items() if now - s.last_seen > self.idle_s]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
