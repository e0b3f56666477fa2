"""Who may replay and purge dead letters through the dashboard.

Reading needs nothing (the dashboard binds 127.0.0.1 unless told otherwise). Writing needs
all of:

- the server started with ``--allow-writes`` (else every write is refused: read-only);
- the token: ``Authorization: Bearer <token>`` (or ``X-Redbatch-Token``) on the request, for
  scripts; or a session cookie from the login form, for the page;
- with a session cookie, the session's CSRF token in the ``X-CSRF-Token`` header. A page of
  another site can make a browser send the cookie (SameSite=Strict already stops that in
  current browsers) but cannot read the CSRF token, nor set a header without a CORS
  preflight, which this server never grants. A token in a header needs no CSRF token: a
  browser never adds it by itself;
- an ``Origin`` header, when the browser sends one, naming this server.

Pure logic: the web app passes the headers in, and gets the refusal (status, reason) back.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SESSION_COOKIE = "redbatch_session"
CSRF_HEADER = "x-csrf-token"
TOKEN_HEADER = "x-redbatch-token"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000  # oldest dropped first: logging in again is cheap
MIN_TOKEN_CHARS = 16
READ_ONLY = (
    "read-only: this dashboard was started without --allow-writes; replay and purge with "
    "`redbatch dlq`, or restart it with --allow-writes"
)


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token a request carries in ``Authorization: Bearer`` or ``X-Redbatch-Token``."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get(TOKEN_HEADER) or None


def origin_ok(headers: Mapping[str, str], scheme: str) -> bool:
    """No ``Origin`` (not a browser, or a same-origin GET), or one naming this host."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin == f"{scheme}://{headers.get('host', '')}"


class Guard:
    """The write permission: ``token`` None means read-only."""

    def __init__(self, token: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._token = token
        self._clock = clock
        self._lock = threading.Lock()  # requests run on a thread pool
        self._sessions: dict[str, tuple[str, float]] = {}  # id -> (csrf token, created)

    @property
    def writable(self) -> bool:
        return self._token is not None

    def login(self, offered: str) -> str | None:
        """A new session id for the right token, else None."""
        if self._token is None or not _same(offered, self._token):
            return None
        session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[session] = (csrf, self._clock())
        return session

    def logout(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)

    def csrf(self, session: str | None) -> str | None:
        """The CSRF token of a live session, else None."""
        with self._lock:
            self._expire()
            found = self._sessions.get(session or "")
        return found[0] if found else None

    def _expire(self) -> None:
        oldest = self._clock() - SESSION_TTL_S
        for session in [s for s, (_, made) in self._sessions.items() if made < oldest]:
            del self._sessions[session]

    def check_write(
        self, headers: Mapping[str, str], session: str | None, scheme: str = "http"
    ) -> Refusal | None:
        """Why a write request may not run (None: it may). ``headers``: lower-case names."""
        if self._token is None:
            return Refusal(403, READ_ONLY)
        if not origin_ok(headers, scheme):
            return Refusal(403, "refused: the request comes from another site (Origin)")
        offered = bearer(headers)
        if offered is not None:
            return None if _same(offered, self._token) else Refusal(401, "wrong token")
        csrf = self.csrf(session)
        if csrf is None:
            return Refusal(401, "log in with the dashboard's token first (/login)")
        if not _same(headers.get(CSRF_HEADER, ""), csrf):
            return Refusal(403, "refused: missing or wrong CSRF token (reload the page)")
        return None
