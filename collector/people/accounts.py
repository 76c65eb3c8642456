"""Dashboard users and their passwords: settings that are loaded with every configuration.

Kept apart from :mod:`collector.dashboard.app` because :mod:`collector.config` needs these
models on every start of every daemon, and the dashboard's web server, MQTT client and
exports would otherwise be imported (and held in memory) by gateways that never serve it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

UserName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]


class DashboardUser(BaseModel):
    """Someone who may sign in: ``viewer`` sees, ``supervisor`` also acknowledges alerts,
    ``quality`` also decides nonconformances (its name must be its id in the gateways' register)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: UserName
    role: Literal["viewer", "supervisor", "quality"] = "viewer"
    #: from ``collector hash-password`` (never the password itself; kept out of reprs)
    password_hash: str = Field(repr=False)

    @field_validator("password_hash")
    @classmethod
    def _hash_format(cls, v: str) -> str:
        return checked_hash(v)


class DashboardSettings(BaseModel):
    """The ``dashboard:`` section of the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bind: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    #: seconds a sign-in lasts (one shift by default)
    session_ttl: float = Field(default=8 * 3600.0, gt=0)
    users: list[DashboardUser] = Field(default_factory=list)
    #: local start times of the shifts, in ``shift_timezone`` (counts restart at each)
    shift_starts: list[dt.time] = Field(
        default_factory=lambda: [dt.time(6, 0), dt.time(14, 0), dt.time(22, 0)], min_length=1
    )
    #: IANA time zone of the shift times ("UTC", "Europe/Berlin"); None: the server's own
    shift_timezone: str | None = None
    #: seconds to wait for the gateway's answer to an acknowledgement
    reply_timeout: float = Field(default=5.0, gt=0, le=60)
    #: records kept and shown per station
    records_per_station: int = Field(default=10, ge=1, le=200)
    #: alerts kept and shown (the oldest leave first)
    max_alerts: int = Field(default=200, ge=1, le=10_000)
    #: rows the traceability page shows at most (the downloads hold every record)
    trace_rows: int = Field(default=1000, ge=1, le=100_000)
    #: look this far back in the store for acknowledgements of alerts retained by the broker
    ack_lookback_days: float = Field(default=7.0, ge=0)
    #: MQTT client id (default: ``dashboard-<host>-<random>``)
    client_id: str | None = None
    #: set the cookie's Secure flag (behind a TLS reverse proxy)
    secure_cookie: bool = False
    #: addresses or networks (``127.0.0.1``, ``10.0.0.0/24``) of the reverse proxies whose
    #: ``Forwarded`` / ``X-Forwarded-*`` headers are believed; none by default (then ignored)
    trusted_proxies: list[str] = Field(default_factory=list)
    title: str = "Inspection dashboard"

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {entry!r}") from None
        return v

    @field_validator("shift_timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (an IANA name such as 'Europe/Berlin' or 'UTC')") from None
        return v

    @field_validator("shift_starts")
    @classmethod
    def _shifts(cls, v: list[dt.time]) -> list[dt.time]:
        if any(t.tzinfo is not None for t in v):
            raise ValueError("give shift start times without a zone (see shift_timezone)")
        if len(set(v)) != len(v):
            raise ValueError("two shifts start at the same time")
        return sorted(v)

    @model_validator(mode="after")
    def _unique_users(self) -> DashboardSettings:
        names = [u.name for u in self.users]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"user name(s) {', '.join(twice)} appear more than once")
        return self


# ---------------------------------------------------------------------------------------------
# passwords
# ---------------------------------------------------------------------------------------------

#: scrypt cost: 16 MiB and about a quarter of a second per check here (OWASP's
#: N=2^14, r=8, p=5 equivalent of N=2^17, p=1, with an eighth of the memory for a Pi)
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5
_SCRYPT_MAXMEM = 256 * 1024 * 1024
_HASH_RE = re.compile(r"^scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse_hash(stored: str) -> _ScryptHash:
    m = _HASH_RE.match(stored)
    if m is None:
        raise ValueError("expected scrypt$n=N,r=R,p=P$SALT$HASH")
    n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if n < 2 or n > 2**20 or n & (n - 1):
        raise ValueError("n must be a power of two up to 2^20")
    if not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("r must be 1..32 and p 1..16")
    try:
        salt, digest = _b64d(m.group(4)), _b64d(m.group(5))
    except (binascii.Error, ValueError):
        raise ValueError("salt or hash is not base64") from None
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        raise ValueError("salt or hash too short")
    return _ScryptHash(n, r, p, salt, digest)


def checked_hash(stored: str) -> str:
    """``stored`` when it is a hash :func:`verify_password` can check; else ValueError saying why."""
    try:
        _parse_hash(stored)
    except ValueError as exc:
        raise ValueError(f"not a password hash made by `collector hash-password`: {exc}") from None
    return stored


#: what installers, examples and tutorials write where a secret belongs: a daemon refuses to
#: start with one of these (compared without case, spaces, dashes and underscores)
PLACEHOLDERS = frozenset(
    {"changeme", "changeit", "change", "password", "passw0rd", "secret", "example", "default", "admin", "test", "xxx"}
)
#: PINs and passwords nobody should be allowed to choose
_TRIVIAL = frozenset({"0000", "1111", "1234", "12345", "123456", "4321", "9999", "0123", "2580", "qwerty"})


def placeholder_problem(secret: str) -> str | None:
    """Why ``secret`` is not a real secret (empty, or a placeholder such as "changeme"), or None."""
    if not secret.strip():
        return "is empty"
    folded = "".join(c for c in secret.lower() if c not in " -_.")
    if folded in PLACEHOLDERS or folded.startswith("changeme") or (secret.startswith("<") and secret.endswith(">")):
        return "is a placeholder: put the real secret there"
    return None


def weak_secret_problem(plain: str) -> str | None:
    """Why ``plain`` must not become a PIN or password, or None (used by ``collector hash-password``)."""
    problem = placeholder_problem(plain)
    if problem is not None:
        return f"the secret {problem}"
    if len(plain) < 4:
        return "a PIN or password needs at least 4 characters"
    if plain in _TRIVIAL or len(set(plain)) == 1:
        return "that PIN is too easy to guess"
    return None


def hash_password(plain: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n=16384,r=8,p=5$<salt>$<hash>`` (URL-safe base64): salt and cost travel along."""
    if not plain:
        raise ValueError("an empty password cannot be hashed")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(plain.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)
    stored = f"scrypt$n={n},r={r},p={p}${_b64e(salt)}${_b64e(digest)}"
    _parse_hash(stored)  # refuses costs verify_password would refuse
    return stored


def verify_password(plain: str, stored: str) -> bool:
    """True when ``plain`` is the password ``stored`` was made from (constant-time compare)."""
    try:
        h = _parse_hash(stored)
    except ValueError:
        return False
    digest = hashlib.scrypt(
        plain.encode("utf-8"), salt=h.salt, n=h.n, r=h.r, p=h.p, maxmem=_SCRYPT_MAXMEM, dklen=len(h.digest)
    )
    return hmac.compare_digest(digest, h.digest)


# ---------------------------------------------------------------------------------------------
# sessions, roles, CSRF
# ---------------------------------------------------------------------------------------------
