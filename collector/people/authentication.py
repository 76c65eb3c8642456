"""Checking a person's badge or user id and PIN or password, and the stations' sign-in sessions.

Both are bounded: failed attempts are counted per user (a PIN has few digits: after
``max_failures`` wrong ones the user is locked for ``lockout`` seconds), the gateway checks
at most ``checks_per_second`` secrets (each check costs a scrypt hash, a quarter of a second
or more on a Raspberry Pi, and must not be a way to keep the box busy), the failure table
and the session table have a size limit. Secrets are never logged or kept.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from collector.errors import CollectorError
from collector.people.accounts import verify_password
from collector.people.register import Person, UserRegister

#: what a person is told when the user or the secret is wrong (the audit record says which)
WRONG = "unknown user or wrong PIN/password"
_MAX_TRACKED = 1024  # users whose failed attempts are remembered at most


class AuthenticationFailed(CollectorError):
    """The badge/user id and secret did not authenticate a person.

    ``str(exc)`` is for the person at the station; ``detail`` for the audit record.
    """

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class Authenticator:
    def __init__(
        self,
        register: UserRegister,
        *,
        max_failures: int = 5,
        lockout: float = 300.0,
        checks_per_second: float = 2.0,
        burst: int = 6,
        clock: Callable[[], float] = time.monotonic,
        verify: Callable[[str, str], bool] = verify_password,
    ) -> None:
        self.register = register
        self.max_failures = max_failures
        self.lockout = lockout
        self.rate = checks_per_second
        self.burst = float(burst)
        self._clock = clock
        self._verify = verify
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._refilled = clock()
        #: user -> (failed attempts, time of the first of them, locked until)
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        self.rate_limited = 0  # attempts refused because the gateway checked too many already

    def authenticate(self, user: str, secret: str) -> Person:
        """The person ``user`` (a badge or a user id) names, when ``secret`` is theirs."""
        person = self.register.find(user)
        key = person.id if person is not None else user
        now = self._clock()
        with self._lock:
            locked_until = self._failures.get(key, (0, now, 0.0))[2]
            if locked_until > now:
                raise AuthenticationFailed(
                    f"too many wrong PINs/passwords for {key}: try again in {locked_until - now:.0f} s",
                    "locked out after repeated wrong secrets",
                )
            if not self._take(now):
                self.rate_limited += 1
                raise AuthenticationFailed(
                    "too many sign-in attempts at this gateway: try again in a few seconds",
                    "refused unchecked: too many attempts at the gateway",
                )
        if person is None:
            self._failed(key, now)
            raise AuthenticationFailed(WRONG, "unknown user or badge")
        if person.disabled:
            raise AuthenticationFailed(f"{person.id} may not sign: disabled in the user register", "disabled user")
        if not self._verify(secret, person.secret_hash):  # outside the lock: it takes a while
            locked = self._failed(key, now)
            raise AuthenticationFailed(
                WRONG + (f"; {key} is locked for {self.lockout:.0f} s" if locked else ""),
                "wrong secret" + (", now locked out" if locked else ""),
            )
        with self._lock:
            self._failures.pop(key, None)
        return person

    def _take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _failed(self, key: str, now: float) -> bool:
        """Count a failed attempt; True when it locks the user out."""
        with self._lock:
            count, first, _ = self._failures.pop(key, (0, now, 0.0))
            if now - first > self.lockout:
                count, first = 0, now  # the earlier failures are old: start counting again
            count += 1
            locked = count >= self.max_failures
            self._failures[key] = (0, now, now + self.lockout) if locked else (count, first, 0.0)
            while len(self._failures) > _MAX_TRACKED:
                self._failures.popitem(last=False)
            return locked


@dataclass
class Session:
    """A person signed in at one station's screen (the operator view's cookie names it)."""

    token: str
    station: str
    person: Person
    opened: float
    last_used: float


class Sessions:
    """Sign-in sessions bound to a station, ended by sign-out, idleness or a newer sign-in."""

    def __init__(
        self, idle_timeout: float, *, max_sessions: int = 64, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, station: str, person: Person) -> str:
        """A new session for ``person`` at ``station``; the station's other sessions end."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            for old in [t for t, s in self._sessions.items() if s.station == station]:
                del self._sessions[old]
            self._sessions[token] = Session(token, station, person, now, now)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return token

    def get(self, token: str | None, station: str) -> Session | None:
        """The live session ``token`` names at ``station`` (and it counts as used now)."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None or session.station != station:
                return None
            if now - session.last_used > self.idle_timeout:
                del self._sessions[token]
                return None
            session.last_used = now
            self._sessions.move_to_end(token)
            return session

    def end(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)

    def end_station(self, station: str) -> None:
        with self._lock:
            for old in [t for t, s in self._sessions.items() if s.station == station]:
                del self._sessions[old]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
