"""Server-side sessions: the browser holds only a random id; tokens never leave the server.

The store is this process's memory, which is why the deploy configs run one gunicorn worker
with threads and pin a browser to one instance (EB stickiness; App Engine max_instances 1).
A shared store (ElastiCache, Memorystore) would lift that limit behind the same interface.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from gemcast_web.auth import Tokens


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


class MemorySessionStore:
    """Sessions by id, dropped after ``idle_s`` without use; at most ``max_sessions`` kept."""

    def __init__(self, idle_s: float, max_sessions: int = 10_000) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, WebSession] = OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> WebSession:
        session = WebSession(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), last_seen=time.time()
        )
        with self._lock:
            self._sessions[session.id] = session
            # Anonymous visitors get sessions too (the sign-in form needs a CSRF token):
            # bound the memory they can take by forgetting the least recently used.
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

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

    def rotate(self, session: WebSession) -> WebSession:
        """A new id and CSRF token for the same visitor (on sign-in: no session fixation)."""
        self.drop(session.id)
        fresh = self.new()
        fresh.flash = session.flash
        return fresh

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)
