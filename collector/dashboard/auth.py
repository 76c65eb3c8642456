"""Who may use the dashboard: sign-in, server-side sessions, roles, CSRF checks.

Users are configured with a role (``viewer``: sees everything; ``supervisor``: may also
acknowledge alerts; ``quality``: may acknowledge and decide nonconformances on the material
review page, the gateway checking that person's quality role in its own register) and a
password hash from ``collector hash-password`` (scrypt, see
:mod:`collector.people.accounts`). Signing in creates a server-side session named by a
random token in an ``HttpOnly``, ``SameSite=Strict`` cookie; it ends after ``session_ttl``
seconds or at sign-out. Each user holds at most :attr:`Auth.MAX_SESSIONS_PER_USER`
sessions (the oldest of *that user's* gives way), so one account signing in over and over
cannot end anyone else's session, and the store is bounded by the number of users.

Failed sign-ins are slowed down, never turned into a lockout (:mod:`.throttle`). A browser
that signed in successfully gets a *device* cookie (``Path=/login``, signed with a key of
this process, so a restart forgets them): its later attempts for that user are throttled on
their own, apart from everyone else at the same address. Passwords are never logged; a
failed sign-in is one log line without it, and under a flood the lines thin out (the
first few per name and address, then one at each doubling of the count).

A POST is refused unless it is same-origin: ``Sec-Fetch-Site`` and ``Origin``, when the
browser sends them, must name this server (as the browser sees it: behind a trusted proxy,
the forwarded host and scheme), and a signed-in POST must carry the session's CSRF token
(``X-CSRF-Token`` header, or the ``csrf`` field of a form).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message

from collector import web
from collector.dashboard.throttle import Throttle, source_of
from collector.people.accounts import DashboardUser, hash_password, verify_password

log = logging.getLogger(__name__)

ROLES = ("viewer", "supervisor", "quality")


def may_acknowledge(role: str) -> bool:
    return role in ("supervisor", "quality")


def may_dispose(role: str) -> bool:
    return role == "quality"


@dataclass
class Session:
    token: str
    user: str
    role: str
    csrf: str
    created: float
    expires: float

    def remaining(self, now: float) -> float:
        return max(0.0, self.expires - now)


class SignInBusy(Exception):
    """Too many sign-ins under way: for this name from this place, from this place, or at all
    (answer 429; nothing was checked)."""


class Auth:
    """Users, sign-in (throttled) and the server-side session store.

    ``clock`` is monotonic seconds; sessions expire ``ttl`` seconds after sign-in. ``sleep``
    waits out a throttled attempt's delay (the dashboard's stop event's ``wait``, so that
    stopping does not wait for it).
    """

    MAX_SESSIONS_PER_USER = 20
    #: concurrent password checks (scrypt takes 16 MiB and a quarter of a second each)
    MAX_CHECKS = 4

    def __init__(
        self,
        users: Sequence[DashboardUser],
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        throttle: Throttle | None = None,
    ) -> None:
        self.users = {u.name: u for u in users}
        self.ttl = ttl
        self.clock = clock
        self.sleep = sleep
        self.throttle = throttle or Throttle(clock=clock)
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(self.MAX_CHECKS)
        self._sessions: dict[str, Session] = {}
        self._device_key = secrets.token_bytes(32)
        self.busy_refusals = 0  # attempts answered "busy" unchecked
        self._dummy: str | None = None

    # -- signing in --------------------------------------------------------------------------------
    def login(self, name: str, password: str, client: str = "?", device: str | None = None) -> Session | None:
        """A new session when the name and password match; None (and a log line) if not.

        A throttled attempt waits first, then is checked like any other. Raises
        :class:`SignInBusy` when an attempt for the same key is still under way.
        """
        user = self.users.get(name)
        device_id = self.device_id(device, user.name) if user is not None else None
        attempt = self.throttle.begin(source_of(client), name, known=user is not None, device=device_id)
        if attempt is None:
            with self._lock:
                self.busy_refusals += 1
                refusals = self.busy_refusals
            if refusals & (refusals - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...: a flood logs sparingly
                log.warning(
                    "dashboard: sign-in for %r from %s refused: too many under way (%d refused so far)",
                    name[:64],
                    client,
                    refusals,
                )
            raise SignInBusy(name)
        ok = False
        try:
            if attempt.delay > 0:
                self.sleep(attempt.delay)
            with self._checks:
                if user is None:
                    # the same work as for a real user, so the answer's timing does not say who exists
                    verify_password(password, self._dummy_hash())
                else:
                    ok = verify_password(password, user.password_hash)
        finally:
            failures = self.throttle.end(attempt, ok=ok)
        if not ok or user is None:
            if failures <= self.throttle.free_per_user or failures & (failures - 1) == 0:
                after = f" ({failures} recent failures, delayed {attempt.delay:g} s)" if attempt.delay else ""
                log.warning(
                    "dashboard: failed sign-in for %s%r from %s%s",
                    "" if user else "unknown user ",
                    name[:64],
                    client,
                    after,
                )
            return None
        session = self.create(user.name, user.role)
        log.info("dashboard: %s signed in (%s) from %s", user.name, user.role, client)
        return session

    def device_token(self, user: str) -> str:
        """A device cookie's value for a browser that just signed in as ``user``."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._device_mac(user, nonce)}"

    def device_id(self, token: str | None, user: str) -> str | None:
        """The device's id when ``token`` is a device cookie this process issued for ``user``."""
        if not token or token.count(".") != 1:
            return None
        nonce, mac = token.split(".")
        if not nonce or not hmac.compare_digest(mac.encode(), self._device_mac(user, nonce).encode()):
            return None
        return f"{user}|{nonce}"

    def _device_mac(self, user: str, nonce: str) -> str:
        return hmac.new(self._device_key, f"{user}\0{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = hash_password(secrets.token_urlsafe(16))
        return self._dummy

    # -- sessions -------------------------------------------------------------------------------
    def create(self, user: str, role: str) -> Session:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = self.clock()
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user,
            role=role,
            csrf=secrets.token_urlsafe(24),
            created=now,
            expires=now + self.ttl,
        )
        with self._lock:
            self._prune(now)
            mine = sorted((s for s in self._sessions.values() if s.user == user), key=lambda s: s.created)
            for oldest in mine[: max(0, len(mine) - self.MAX_SESSIONS_PER_USER + 1)]:
                del self._sessions[oldest.token]
            self._sessions[session.token] = session
        return session

    def session(self, token: str | None) -> Session | None:
        """The live session for a cookie's token; None when unknown or expired (then forgotten)."""
        if not token:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now >= session.expires:
                del self._sessions[token]
                return None
            return session

    def logout(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            return self._sessions.pop(token, None)

    def prune(self) -> None:
        with self._lock:
            self._prune(self.clock())

    def _prune(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if now >= s.expires]:
            del self._sessions[token]

    def count(self, user: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if user is None or s.user == user)


def csrf_problem(
    headers: Mapping[str, str] | Message[str, str],
    session: Session | None,
    form_token: str | None = None,
    *,
    host: str | None = None,
    scheme: str | None = None,
) -> str | None:
    """Why a POST must be refused as possibly cross-site (None: it may go on).

    ``headers`` are the request's (case-insensitive lookups, e.g. ``http.client`` headers).
    The browser's ``Sec-Fetch-Site`` must be ``same-origin`` when sent; the ``Origin`` must be
    this server's when sent (``host`` and ``scheme`` as a trusted proxy forwarded them, else
    the ``Host`` header); with a session, its CSRF token must come in ``X-CSRF-Token`` or as
    the form's ``csrf`` field (so a client that sends neither header is still checked).
    """
    if not isinstance(headers, Message):
        lower = {k.lower(): v for k, v in headers.items()}
        headers = Message()
        for k, v in lower.items():
            headers[k] = v
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
    origin = headers.get("Origin")
    if origin is not None and not web.same_origin(origin, [host or headers.get("Host") or ""], scheme):
        return "request from another origin refused"
    if session is not None:
        token = headers.get("X-CSRF-Token") or form_token or ""
        if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            return "missing or wrong CSRF token"
    return None


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 for c in target):
        return "/"
    return target
