"""The supervisors' dashboard: live alerts, station status, shift counts, traceability.

``collector dashboard --config FILE`` serves a small web application to the quality
supervisors and the control room:

- ``/``: the live page. Out-of-tolerance, trend, calibration and refusal alerts appear the
  moment the gateway publishes them (Server-Sent Events, no reload), newest first and
  coloured by severity; a tile per station says whether it is online (a gateway's last
  will takes all of its stations offline), and counts the records, failed values and
  alerts of the current shift; the last records of each station scroll by. A supervisor
  acknowledges an alert with a comment: the dashboard sends ``ack_alert`` to the station's
  command topic, waits for the gateway's reply, and every open page shows "acknowledged by
  X: comment". The gateway journals the acknowledgement in its hash chain.
- ``/trace``: the same search as ``collector trace`` (serial, lot, work order, part number,
  station, characteristic, gauge, time range), the records as a table, and downloads as
  JSON and CSV (and every other format registered in :data:`EXPORTERS`).

The dashboard only listens to the broker with a plain, non-shared subscription (it takes
no records away from the recorders) and only reads the store; it never writes to InfluxDB.

Why the standard library's HTTP server: the dashboard runs on a Raspberry-Pi-class box
next to the line or on a small central server, usually for a handful of screens. Shop
floors have no internet, so every asset (HTML, CSS, plain JavaScript, icon) is served from
``collector/static/dashboard/``: no CDN, no web fonts, no framework and no build step, and
no dependency beyond what the collector already has. ``ThreadingHTTPServer`` gives each
connection its own thread, which suits a few long-lived event streams; events are
serialised once and shared by every stream.

Access. Users are configured with a role (``viewer``: sees everything; ``supervisor``: may
also acknowledge alerts) and a password hash from ``collector hash-password`` (scrypt with
its salt and cost parameters in the string, see :func:`hash_password`). Signing in creates
a server-side session named by a random token in an ``HttpOnly``, ``SameSite=Strict``
cookie; it ends after ``session_ttl`` seconds or at sign-out. Every page and API except the
sign-in form and the static assets needs a session. A POST is refused unless it is
same-origin: ``Sec-Fetch-Site`` and ``Origin``, when the browser sends them, must name this
server, and a signed-in POST must carry the session's CSRF token (``X-CSRF-Token`` header,
or the ``csrf`` field of a form). Passwords are never logged; a failed sign-in is logged as
one line without it, and repeated failures for a name from one address are throttled. Bound to a
loopback address the server also refuses foreign ``Host`` names (DNS rebinding). For
access from other machines, put a TLS reverse proxy in front and set ``secure_cookie``.

Other modules can add trace export formats to :data:`EXPORTERS` (name -> function that
writes records to a text stream) and a per-part report to :data:`PART_REPORT`; when
``collector.evidence.dfq`` or ``collector.evidence.report`` exist at import time they are used.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hmac
import html
import importlib
import inspect
import io
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector import web
from collector.errors import CollectorError, StoreError
from collector.evidence.trace import TraceFilter, trace, write_csv, write_json
from collector.inspection.records import parse_utc_us
from collector.people.accounts import DashboardSettings, DashboardUser, hash_password, verify_password
from collector.store.base import Store
from collector.web import RequestError

if TYPE_CHECKING:
    # collector.config imports DashboardSettings from here: nothing here may import it back
    from collector.config import Config

log = logging.getLogger(__name__)

Record = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------

ROLES = ("viewer", "supervisor")


def may_acknowledge(role: str) -> bool:
    return role == "supervisor"


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


class Auth:
    """Users, sign-in (with a throttle on failures) and the server-side session store.

    ``clock`` is monotonic seconds; sessions expire ``ttl`` seconds after sign-in.
    """

    MAX_SESSIONS = 1000
    FAILURES_ALLOWED = 10  # failed sign-ins from one address within FAILURE_WINDOW
    FAILURE_WINDOW = 300.0

    def __init__(
        self, users: Sequence[DashboardUser], ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.users = {u.name: u for u in users}
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, collections.deque[float]] = {}
        self._dummy: str | None = None

    def throttled(self, client: str, name: str) -> bool:
        """Too many recent failures for this name from this address (behind a reverse proxy
        every client has the proxy's address: keyed by name too, one user's mistyping
        does not lock the others out)."""
        now = self.clock()
        key = f"{client}|{name}"
        with self._lock:
            recent = self._failures.get(key)
            if recent is None:
                return False
            while recent and recent[0] <= now - self.FAILURE_WINDOW:
                recent.popleft()
            if not recent:
                del self._failures[key]
                return False
            return len(recent) >= self.FAILURES_ALLOWED

    def login(self, name: str, password: str, client: str = "?") -> Session | None:
        """A new session when the name and password match; None (and one log line) if not."""
        user = self.users.get(name)
        if user is None:
            # the same work as for a real user, so the answer's timing does not say who exists
            verify_password(password, self._dummy_hash())
            ok = False
        else:
            ok = verify_password(password, user.password_hash)
        if not ok or user is None:
            with self._lock:
                if len(self._failures) > 10_000:
                    self._failures.clear()
                self._failures.setdefault(f"{client}|{name}", collections.deque()).append(self.clock())
            log.warning(
                "dashboard: failed sign-in for %s%r from %s", "" if user else "unknown user ", name[:64], client
            )
            return None
        with self._lock:
            self._failures.pop(f"{client}|{name}", None)
        session = self.create(user.name, user.role)
        log.info("dashboard: %s signed in (%s) from %s", user.name, user.role, client)
        return session

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
            if len(self._sessions) >= self.MAX_SESSIONS:
                self._prune(now)
                while len(self._sessions) >= self.MAX_SESSIONS:
                    oldest = min(self._sessions.values(), key=lambda s: s.created)
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

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = hash_password(secrets.token_urlsafe(16))
        return self._dummy


def csrf_problem(
    headers: Mapping[str, str] | Message[str, str], session: Session | None, form_token: str | None = None
) -> str | None:
    """Why a POST must be refused as possibly cross-site (None: it may go on).

    ``headers`` are the request's (case-insensitive lookups, e.g. ``http.client`` headers).
    The browser's ``Sec-Fetch-Site`` must be ``same-origin`` when sent; the ``Origin`` must be
    this server's when sent; with a session, its CSRF token must come in ``X-CSRF-Token`` or
    as the form's ``csrf`` field (so a client that sends neither header is still checked).
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
    if origin is not None and not web.same_origin(origin, [headers.get("Host") or ""]):
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


# ---------------------------------------------------------------------------------------------
# shifts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    start: dt.datetime  # aware, UTC
    end: dt.datetime
    label: str  # "14:00–22:00"

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp() * 1_000_000)

    @property
    def end_us(self) -> int:
        return int(self.end.timestamp() * 1_000_000)

    def contains_us(self, t_us: int) -> bool:
        return self.start_us <= t_us < self.end_us

    def as_dict(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "end": _iso(self.end), "label": self.label}


def shift_at(now: dt.datetime, starts: Sequence[dt.time], zone: ZoneInfo | None) -> Shift:
    """The shift that ``now`` (aware) falls in; ``zone`` None is the server's local time."""
    local_now = now.astimezone(zone) if zone is not None else now.astimezone()
    day = local_now.date()
    candidates: list[dt.datetime] = []
    for d in (day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)):
        for t in starts:
            naive = dt.datetime.combine(d, t)
            aware = naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()
            candidates.append(aware.astimezone(dt.UTC))
    candidates.sort()
    start = max(c for c in candidates if c <= now)
    end = min(c for c in candidates if c > now)

    def local(t: dt.datetime) -> dt.datetime:
        return t.astimezone(zone) if zone is not None else t.astimezone()

    return Shift(start, end, f"{local(start):%H:%M}–{local(end):%H:%M}")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso_us(t_us: int) -> str:
    return _iso(dt.datetime.fromtimestamp(t_us / 1_000_000, dt.UTC))


# ---------------------------------------------------------------------------------------------
# trace exports and the per-part report: hooks other modules extend
# ---------------------------------------------------------------------------------------------

Exporter = Callable[[list[Record], IO[str]], None]
#: format name -> function writing the records to a text stream (``/trace/export?format=``)
EXPORTERS: dict[str, Exporter] = {"json": write_json, "csv": write_csv}
#: format name -> (content type, file extension) of its download
EXPORT_MEDIA: dict[str, tuple[str, str]] = {
    "json": ("application/json; charset=utf-8", "json"),
    "csv": ("text/csv; charset=utf-8", "csv"),
}

ReportFn = Callable[[Store, list[Record]], str]
#: the records of one serial -> a self-contained HTML report (``/trace/report?serial=``)
PART_REPORT: ReportFn | None = None


def _dfq_exporter() -> Exporter | None:
    """``collector.evidence.dfq`` when it exists, as an exporter of one DFQ file.

    A download is one file, so the records must cover one part number and plan revision
    (``dfq_files`` makes one file per pair; more than one is refused with a hint).
    """
    try:
        mod = importlib.import_module("collector.evidence.dfq")
    except ImportError:
        return None
    files_fn = getattr(mod, "dfq_files", None)
    text_fn = getattr(mod, "to_dfq", None)
    encode_fn = getattr(mod, "encode_dfq", None)
    if not callable(files_fn) and not callable(text_fn):
        return None

    def export(records: list[Record], out: IO[str]) -> None:
        if callable(files_fn):
            files = dict(files_fn(records))
            if not files:
                raise CollectorError("no measurement records to export as DFQ")
            if len(files) > 1:
                raise CollectorError(
                    f"the records make {len(files)} DFQ files ({', '.join(files)}): "
                    "narrow the search to one part number"
                )
            (text,) = files.values()
        else:
            assert callable(text_fn)
            text = text_fn(records)
        text = str(text)
        if callable(encode_fn):
            encode_fn(text)  # refuses, naming the line, what the file's encoding cannot carry
        out.write(text.replace("\r\n", "\n").replace("\n", "\r\n"))  # the tools expect CR LF

    return export


def _report_hook() -> ReportFn | None:
    """``collector.evidence.report.part_report_html(records, verification=...)`` when it exists."""
    try:
        mod = importlib.import_module("collector.evidence.report")
    except ImportError:
        return None
    fn = getattr(mod, "part_report_html", None)
    if not callable(fn):
        return None
    render: Callable[..., Any] = fn
    related = getattr(mod, "with_related", None)  # invalidations / dispositions without the serial
    try:
        wants_verification = "verification" in inspect.signature(render).parameters
    except (TypeError, ValueError):
        wants_verification = False

    def report(store: Store, records: list[Record]) -> str:
        if callable(related):
            records = list(related(store, records))
        if not wants_verification:
            return str(render(records))
        return str(render(records, verification=_verify_span(store, records)))

    return report


def _verify_span(store: Store, records: list[Record]) -> Any:
    """The chain verification of the gateways and time span the part's records lie in."""
    if not records:
        return None
    from collector.evidence.verify import verify

    times = [parse_utc_us(str(r["recorded_at"])) for r in records if r.get("recorded_at")]
    if not times:
        return None
    gateways = sorted({str(r["gateway"]) for r in records if r.get("gateway")})
    span = TraceFilter(start=_iso_us(min(times)), end=_iso_us(max(times) + 1))
    return verify(store, span, only=gateways or None)


_dfq = _dfq_exporter()
if _dfq is not None:
    EXPORTERS["dfq"] = _dfq
    EXPORT_MEDIA["dfq"] = ("text/plain; charset=iso-8859-1", "dfq")  # AQDEF's customary 8-bit text
PART_REPORT = _report_hook()


# ---------------------------------------------------------------------------------------------
# the live state and its event stream
# ---------------------------------------------------------------------------------------------


class EventHub:
    """Events for the open pages, serialised once, kept in a ring for slow readers."""

    def __init__(self, keep: int = 2000) -> None:
        self.cond = threading.Condition()
        self._events: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=keep)
        self.seq = 0
        self.closed = False

    def emit(self, name: str, data: Any) -> None:
        """Call holding ``cond`` (the state's lock), so snapshots and events stay in order."""
        self.seq += 1
        self._events.append((self.seq, web.sse_event(data, id=self.seq, event=name)))
        self.cond.notify_all()

    def wait(self, after: int, timeout: float) -> tuple[int, list[bytes]] | None:
        """Events after ``after`` (possibly none on timeout); None when the reader fell behind."""
        with self.cond:
            if self.seq <= after and not self.closed:
                self.cond.wait(timeout)
            if self.seq <= after:
                return after, []
            oldest = self._events[0][0] if self._events else self.seq + 1
            if after + 1 < oldest:
                return None
            return self.seq, [body for seq, body in self._events if seq > after]

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class SeqSet:
    """The sequence numbers seen, as merged ranges (records arrive almost always in order)."""

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []

    def add(self, seq: int) -> bool:
        """False when ``seq`` was seen already (a redelivered record)."""
        rs = self._ranges
        if rs and rs[-1][1] + 1 == seq:
            rs[-1][1] = seq
            return True
        lo, hi = 0, len(rs)
        while lo < hi:
            mid = (lo + hi) // 2
            if rs[mid][0] <= seq:
                lo = mid + 1
            else:
                hi = mid
        i = lo - 1  # the last range starting at or before seq
        if i >= 0 and rs[i][0] <= seq <= rs[i][1]:
            return False
        joins_left = i >= 0 and rs[i][1] + 1 == seq
        joins_right = i + 1 < len(rs) and rs[i + 1][0] - 1 == seq
        if joins_left and joins_right:
            rs[i][1] = rs[i + 1][1]
            del rs[i + 1]
        elif joins_left:
            rs[i][1] = seq
        elif joins_right:
            rs[i + 1][0] = seq
        else:
            rs.insert(i + 1, [seq, seq])
        return True

    def __len__(self) -> int:
        return len(self._ranges)


@dataclass
class _Station:
    site: str
    line: str
    station: str
    records: collections.deque[Record]
    state: str = "unknown"
    gateway: str | None = None
    since_us: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"records": 0, "fails": 0, "alerts": 0})

    @property
    def key(self) -> str:
        return f"{self.site}/{self.line}/{self.station}"


_ALERT_FIELDS = (
    "kind",
    "severity",
    "record_id",
    "gateway",
    "seq",
    "site",
    "line",
    "station",
    "part_number",
    "serial",
    "characteristic",
    "judged_value",
    "lsl",
    "usl",
    "unit",
    "limit",
    "rules",
    "message",
    "at",
)


def _us(text: Any) -> int | None:
    try:
        return parse_utc_us(str(text))
    except (ValueError, TypeError, IndexError):
        return None


def summarize(r: Record) -> Record:
    """What a station's record list shows of a record."""
    kind = str(r.get("kind"))
    verdict = r.get("verdict")
    if kind == "measurement":
        text = f"{r.get('characteristic')} = {r.get('judged_value')} {r.get('unit') or ''}".strip()
        if r.get("supersedes"):
            text += " (re-measure)"
    elif kind == "part":
        failed = r.get("failed") or []
        missing = r.get("missing") or []
        text = f"part {r.get('verdict')}"
        if failed:
            text += f", failed {' '.join(map(str, failed))}"
        if missing:
            text += f", missing {' '.join(map(str, missing))}"
    elif kind == "refusal":
        verdict = "refused"
        text = str(r.get("reason") or r.get("reason_code") or "refused")
    elif kind == "nonconformance":
        verdict = "nc"
        text = f"nonconformance {r.get('characteristic')} ({r.get('limit')} limit)"
    elif kind == "invalidation":
        text = f"invalidated by {r.get('by')}: {r.get('reason')}"
    elif kind == "disposition":
        text = f"{r.get('decision')} by {r.get('by')}"
    elif kind == "audit":
        text = f"{r.get('event')} by {r.get('by') or 'system'}"
    else:
        text = kind
    return {
        "id": r.get("id"),
        "kind": kind,
        "at": r.get("recorded_at"),
        "seq": r.get("seq"),
        "serial": r.get("serial"),
        "characteristic": r.get("characteristic"),
        "value": r.get("judged_value"),
        "unit": r.get("unit"),
        "verdict": verdict,
        "text": text,
    }


def ack_from_record(r: Record) -> tuple[str, Record] | None:
    """(alert record id, acknowledgement) from an ``alert_ack`` audit record."""
    if r.get("kind") != "audit" or r.get("event") != "alert_ack" or not r.get("subject"):
        return None
    detail = str(r.get("detail") or "")
    comment = detail.removeprefix("alert acknowledged").removeprefix(":").strip() or None
    return str(r["subject"]), {"by": r.get("by"), "comment": comment, "at": r.get("recorded_at"), "record": r.get("id")}


class LiveState:
    """Alerts, stations and shift counts as the broker tells them; events for the pages."""

    def __init__(self, settings: DashboardSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.zone = ZoneInfo(settings.shift_timezone) if settings.shift_timezone else None
        self.hub = EventHub()
        self._lock = self.hub.cond
        self.alerts: collections.OrderedDict[str, Record] = collections.OrderedDict()
        self.acks: collections.OrderedDict[str, Record] = collections.OrderedDict()
        self.stations: dict[str, _Station] = {}
        self.gateways: dict[str, Record] = {}
        self.broker = False
        self.started_us = int(clock() * 1_000_000)
        self.shift = self._shift_now()
        self._seen: dict[str, SeqSet] = {}
        self._alerts_counted: set[str] = set()
        self._dirty: set[str] = set()
        self.malformed = 0

    def _shift_now(self) -> Shift:
        return shift_at(dt.datetime.fromtimestamp(self.clock(), dt.UTC), self.settings.shift_starts, self.zone)

    # -- what the broker says ------------------------------------------------------------------
    def set_broker(self, connected: bool) -> None:
        with self._lock:
            if self.broker != connected:
                self.broker = connected
                self.hub.emit("broker", {"connected": connected})

    def on_alert(self, body: Record, retained: bool = False) -> None:
        try:
            record_id = str(body["record_id"])
            kind = str(body["kind"])
            site, line, station = str(body["site"]), str(body["line"]), str(body["station"])
        except (KeyError, TypeError):
            self.malformed += 1
            return
        key = f"{record_id}:{kind}"
        now_us = int(self.clock() * 1_000_000)
        with self._lock:
            self._roll_shift()
            st = self._station(site, line, station)
            at_us = _us(body.get("at"))
            if key not in self._alerts_counted and at_us is not None and self.shift.contains_us(at_us):
                self._alerts_counted.add(key)
                st.counts["alerts"] += 1
                self._dirty.add(st.key)
            if key in self.alerts:
                return  # redelivered, or the retained copy after a reconnect
            alert = {k: body.get(k) for k in _ALERT_FIELDS}
            alert.update(
                key=key,
                station_key=st.key,
                received_at=_iso_us(now_us),
                retained=retained,
                ack=self.acks.get(record_id),
            )
            self.alerts[key] = alert
            while len(self.alerts) > self.settings.max_alerts:
                self.alerts.popitem(last=False)
            self.hub.emit("alert", alert)

    def on_station_status(self, site: str, line: str, station: str, body: Record) -> None:
        with self._lock:
            st = self._station(site, line, station)
            state = str(body.get("state") or "unknown")
            if state != st.state:
                st.since_us = int(self.clock() * 1_000_000)
            st.state = state
            if body.get("gateway"):
                st.gateway = str(body["gateway"])
            self._dirty.add(st.key)

    def on_gateway_status(self, gateway: str, body: Record) -> None:
        with self._lock:
            previous = self.gateways.get(gateway, {}).get("state")
            self.gateways[gateway] = {
                "state": str(body.get("state") or "unknown"),
                "reason": body.get("reason"),
                "backlog": body.get("backlog"),
                "at_us": body.get("at_us"),
            }
            site, line = body.get("site"), body.get("line")
            names = body.get("stations") or []
            if isinstance(site, str) and isinstance(line, str) and isinstance(names, list):
                for name in names:
                    st = self._station(site, line, str(name))
                    st.gateway = gateway
            now_us = int(self.clock() * 1_000_000)
            for st in self.stations.values():
                if st.gateway == gateway:
                    if previous != self.gateways[gateway]["state"]:
                        st.since_us = now_us
                    self._dirty.add(st.key)

    def on_records(self, site: str, line: str, station: str, records: list[Record]) -> None:
        acks: list[tuple[str, Record]] = []
        with self._lock:
            self._roll_shift()
            st = self._station(site, line, station)
            fresh: list[Record] = []
            for r in records:
                gateway, seq = r.get("gateway"), r.get("seq")
                seen = self._seen.setdefault(gateway, SeqSet()) if isinstance(gateway, str) else None
                if seen is not None and isinstance(seq, int) and not seen.add(seq):
                    continue  # at-least-once delivery: this one was counted already
                fresh.append(r)
                t_us = _us(r.get("recorded_at"))
                if t_us is not None and self.shift.contains_us(t_us):
                    st.counts["records"] += 1
                    if r.get("kind") == "measurement" and r.get("verdict") == "fail":
                        st.counts["fails"] += 1
                if r.get("kind") == "audit":
                    found = ack_from_record(r)
                    if found is not None:
                        acks.append(found)
            # a backlog comes hundreds to a message: only the ones the list keeps are summarised
            for r in fresh[-self.settings.records_per_station :]:
                st.records.appendleft(summarize(r))
            self._dirty.add(st.key)
            for record_id, ack in acks:
                self._apply_ack(record_id, ack)

    def on_ack(self, record_id: str, ack: Record) -> None:
        with self._lock:
            self._apply_ack(record_id, ack)

    def _apply_ack(self, record_id: str, ack: Record) -> None:
        known = self.acks.get(record_id)
        same = known is not None and (known.get("by"), known.get("comment")) == (ack.get("by"), ack.get("comment"))
        if same and known is not None and (known.get("record") or not ack.get("record")):
            return  # nothing new (the audit record may add the id of the acknowledgement record)
        self.acks[record_id] = ack
        self.acks.move_to_end(record_id)
        while len(self.acks) > 10_000:
            self.acks.popitem(last=False)
        touched = False
        for alert in self.alerts.values():
            if alert["record_id"] == record_id:
                alert["ack"] = ack
                touched = True
        if touched:
            self.hub.emit("ack", {"record_id": record_id, "ack": ack})

    # -- time ------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Called a few times a second: shift change, and coalesced station updates."""
        with self._lock:
            self._roll_shift()
            if self._dirty:
                changed = [self._station_dict(self.stations[k]) for k in sorted(self._dirty) if k in self.stations]
                self._dirty.clear()
                if changed:
                    self.hub.emit("stations", changed)

    def _roll_shift(self) -> None:
        if self.clock() < self.shift.end.timestamp():
            return
        self.shift = self._shift_now()
        for st in self.stations.values():
            st.counts = {"records": 0, "fails": 0, "alerts": 0}
            self._dirty.add(st.key)
        self._seen.clear()
        self._alerts_counted.clear()
        self.hub.emit("shift", self._shift_dict())

    def _shift_dict(self) -> Record:
        d = self.shift.as_dict()
        # counts cover the whole shift only if the dashboard was running since it began
        d["counting_since"] = _iso_us(max(self.started_us, self.shift.start_us))
        d["timezone"] = self.settings.shift_timezone
        return d

    # -- reading -----------------------------------------------------------------------------------
    def _station(self, site: str, line: str, station: str) -> _Station:
        key = f"{site}/{line}/{station}"
        st = self.stations.get(key)
        if st is None:
            st = _Station(site, line, station, collections.deque(maxlen=self.settings.records_per_station))
            self.stations[key] = st
            self._dirty.add(key)
        return st

    def effective_state(self, st: _Station) -> tuple[str, str | None]:
        gw = self.gateways.get(st.gateway or "")
        if gw is not None and gw["state"] == "offline":
            return "offline", str(gw.get("reason") or f"gateway {st.gateway} is offline")
        if st.state == "unknown" and gw is not None:
            return str(gw["state"]), None
        return st.state, None

    def _station_dict(self, st: _Station) -> Record:
        state, reason = self.effective_state(st)
        return {
            "key": st.key,
            "site": st.site,
            "line": st.line,
            "station": st.station,
            "state": state,
            "reason": reason,
            "gateway": st.gateway,
            "since": _iso_us(st.since_us) if st.since_us else None,
            "counts": dict(st.counts),
            "records": list(st.records),
        }

    def snapshot(self) -> tuple[int, Record]:
        """The whole state and the event number it is current to, taken atomically."""
        with self._lock:
            self._roll_shift()
            alerts = sorted(self.alerts.values(), key=lambda a: (str(a.get("at") or ""), a.get("seq") or 0))
            return self.hub.seq, {
                "shift": self._shift_dict(),
                "broker": self.broker,
                "stations": [self._station_dict(self.stations[k]) for k in sorted(self.stations)],
                "alerts": list(reversed(alerts)),
            }

    def alert_target(self, record_id: str) -> tuple[_Station, Record | None] | None:
        """The station an alert about ``record_id`` came from, and its acknowledgement."""
        with self._lock:
            for alert in reversed(self.alerts.values()):
                if alert["record_id"] == record_id:
                    return self.stations[str(alert["station_key"])], self.acks.get(record_id)
            return None

    def retained_alerts(self) -> list[Record]:
        with self._lock:
            return [dict(a) for a in self.alerts.values() if a.get("retained") and a.get("ack") is None]


# ---------------------------------------------------------------------------------------------
# the dashboard
# ---------------------------------------------------------------------------------------------


@dataclass
class AckResult:
    status: HTTPStatus
    body: Record


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    reply: Record | None = None


class Dashboard(web.WebApp):
    """The web server, its MQTT subscription and the live state, in daemon threads.

    The dashboard owns ``store`` from here on and closes it in :meth:`stop`.
    """

    label = "dashboard"
    logger = log
    thread_name = "dashboard"

    def __init__(
        self, config: Config, settings: DashboardSettings, store: Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(settings.bind, settings.port)
        self.config = config
        self.settings = settings
        self.store = store
        self.prefix = config.mqtt.topic_prefix
        self.auth = Auth(settings.users, settings.session_ttl)
        self.state = LiveState(settings, clock)
        self.exporters: dict[str, Exporter] = dict(EXPORTERS)
        self.export_media: dict[str, tuple[str, str]] = dict(EXPORT_MEDIA)
        self.part_report: ReportFn | None = PART_REPORT
        self._threads: list[threading.Thread] = []
        self._pending: dict[str, _Pending] = {}
        self._acking: set[str] = set()
        self._pending_lock = threading.Lock()
        self._connected = threading.Event()
        from collector.mqtt import client as mqtt_client

        client_id = settings.client_id or f"dashboard-{socket.gethostname()[:20]}-{secrets.token_hex(4)}"
        self.client, self._props = mqtt_client.make_client(config.mqtt, client_id)
        # a plain subscription in a short-lived session: it rides over a reconnect, and a
        # dashboard that is gone leaves nothing queued on the broker for long
        self._props.SessionExpiryInterval = 300
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if not settings.users:
            log.warning("dashboard: no users are configured, nobody can sign in")

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def cookie_name(self) -> str:
        # cookies are not separated by port: two dashboards on one host must not share one
        return f"qc_dashboard_{self.port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if not self.start_server(_Handler):
            return
        from collector.mqtt import client as mqtt_client

        mqtt_client.connect_async(self.client, self.config.mqtt, self._props)
        targets: list[tuple[Callable[[], None], str]] = [
            (self._ticker, "dashboard-ticker"),
            (self._load_acks, "dashboard-acks"),
        ]
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("dashboard on %s/ (broker %s:%s)", self.url, self.config.mqtt.host, self.config.mqtt.port)

    def stop(self) -> None:
        """Stop serving (open event streams end at once), leave the broker, close the store."""
        self.stopping.set()
        self.state.hub.close()
        with self._pending_lock:
            for pending in self._pending.values():
                pending.done.set()
        self.stop_server()
        for thread in self._threads:
            thread.join(web.STOP_JOIN)
        self._threads = []
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        self.store.close()
        log.info("dashboard stopped")

    def _ticker(self) -> None:
        last_prune = time.monotonic()
        while not self.stopping.wait(0.2):
            try:
                self.state.tick()
                if time.monotonic() - last_prune > 60:
                    last_prune = time.monotonic()
                    self.auth.prune()
            except Exception:
                log.exception("dashboard: internal error in the ticker")

    def _load_acks(self) -> None:
        """Acknowledgements, from the store, of the alerts the broker kept from before our start.

        The broker keeps each station's latest alert; a dashboard started later would show
        it as unacknowledged although a supervisor dealt with it yesterday.
        """
        if self.settings.ack_lookback_days <= 0:
            return
        while not self._connected.is_set():
            if self.stopping.wait(0.1):
                return
        if self.stopping.wait(1.0):  # the retained alerts arrive right after subscribing
            return
        self.load_earlier_acks()

    def load_earlier_acks(self) -> None:
        """Look the retained (pre-start) alerts' acknowledgements up in the store."""
        alerts = self.state.retained_alerts()
        times = [t for a in alerts if (t := _us(a.get("at"))) is not None]
        if not times:
            return
        floor = int((self.state.clock() - self.settings.ack_lookback_days * 86400) * 1_000_000)
        since = max(min(times), floor)
        q = f'SELECT "payload" FROM "event" WHERE "kind" = \'audit\' AND time >= {since}u'
        try:
            for row in self.store.iter_query(q):
                if self.stopping.is_set():
                    return
                try:
                    record = json.loads(row.get("payload") or "")
                except ValueError:
                    continue
                found = ack_from_record(record) if isinstance(record, dict) else None
                if found is not None:
                    self.state.on_ack(*found)
        except StoreError as exc:
            log.warning("dashboard: could not look up earlier acknowledgements: %s", exc)

    # -- MQTT (paho's network thread) -------------------------------------------------------------
    def _filters(self) -> list[tuple[str, int]]:
        p = self.prefix
        return [
            (f"{p}/+/+/+/alert", 1),
            (f"{p}/+/+/+/status", 1),
            (f"{p}/+/+/+/record", 1),
            (f"{p}/+/+/+/command/reply", 1),
            (f"{p}/gateways/+/status", 1),
        ]

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        from collector.mqtt import client as mqtt_client

        if mqtt_client.reason_failed(reason):
            log.error("dashboard: broker %s refused the connection: %s", self.config.mqtt.host, reason)
            return
        client.subscribe(self._filters())
        self._connected.set()
        self.state.set_broker(True)
        log.info("dashboard: connected to broker %s:%s", self.config.mqtt.host, self.config.mqtt.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.state.set_broker(False)
        if was and not self.stopping.is_set():
            log.warning("dashboard: lost the broker connection (%s)", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.handle_message(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception:  # a bad message must never stop paho's thread
            log.exception("dashboard: could not handle a message on %s", msg.topic)

    def handle_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One message from the broker (public for tests that feed the state directly)."""
        if not topic.startswith(self.prefix + "/"):
            return
        parts = topic[len(self.prefix) + 1 :].split("/")
        if not payload:
            return  # a retained message being cleared
        if parts[0] == "gateways" and len(parts) == 3 and parts[2] == "status":
            body = _json_object(payload)
            if body is not None:
                self.state.on_gateway_status(parts[1], body)
            return
        if len(parts) == 4:
            site, line, station, kind = parts
            if kind == "record":
                records = []
                for raw in payload.splitlines():
                    r = _json_object(raw) if raw.strip() else None
                    if r is not None:
                        records.append(r)
                if records:
                    self.state.on_records(site, line, station, records)
                return
            body = _json_object(payload)
            if body is None:
                self.state.malformed += 1
                return
            if kind == "alert":
                self.state.on_alert(body, retained)
            elif kind == "status":
                self.state.on_station_status(site, line, station, body)
            return
        if len(parts) == 5 and parts[3] == "command" and parts[4] == "reply":
            body = _json_object(payload)
            request_id = str(body.get("request_id")) if body else None
            if body is None or request_id is None:
                return
            with self._pending_lock:
                pending = self._pending.get(request_id)
            if pending is not None:
                pending.reply = body
                pending.done.set()

    # -- acknowledging ------------------------------------------------------------------------------
    def acknowledge(self, record_id: str, by: str, comment: str | None) -> AckResult:
        """Send ``ack_alert`` to the alert's station and wait for the gateway's answer."""
        found = self.state.alert_target(record_id)
        if found is None:
            return AckResult(HTTPStatus.NOT_FOUND, {"ok": False, "error": "no such alert on this dashboard"})
        station, ack = found
        if ack is not None:
            return AckResult(
                HTTPStatus.CONFLICT,
                {"ok": False, "error": f"already acknowledged by {ack.get('by')}", "ack": ack},
            )
        if not self.connected:
            return AckResult(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "the broker is not reachable"})
        with self._pending_lock:
            if record_id in self._acking:
                return AckResult(HTTPStatus.CONFLICT, {"ok": False, "error": "being acknowledged already"})
            self._acking.add(record_id)
            request_id = uuid.uuid4().hex
            pending = self._pending[request_id] = _Pending()
        try:
            timeout = self.settings.reply_timeout
            topic = f"{self.prefix}/{station.site}/{station.line}/{station.station}/command"  # mqtt.station_topic
            args: Record = {"record_id": record_id, "by": by}
            if comment:
                args["comment"] = comment
            body = {"command": "ack_alert", "args": args, "request_id": request_id}
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            # a gateway that is away must not act on a stale acknowledgement hours later
            props.MessageExpiryInterval = max(1, math.ceil(timeout))
            info = self.client.publish(topic, json.dumps(body).encode(), qos=1, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return AckResult(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "the broker is not reachable"})
            if not pending.done.wait(timeout) or pending.reply is None:
                if self.stopping.is_set():
                    return AckResult(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "the dashboard stops"})
                log.warning("dashboard: no answer from station %s to %s's acknowledgement", station.key, by)
                return AckResult(
                    HTTPStatus.GATEWAY_TIMEOUT,
                    {
                        "ok": False,
                        "error": f"station {station.station} did not answer within {timeout:g} s "
                        "(its gateway may be offline); not acknowledged",
                    },
                )
            reply = pending.reply
            if not reply.get("ok"):
                return AckResult(
                    HTTPStatus.BAD_GATEWAY, {"ok": False, "error": str(reply.get("error") or "refused by the gateway")}
                )
            records = reply.get("records") or []
            ack = {
                "by": by,
                "comment": comment,
                "at": _iso_us(int(self.state.clock() * 1_000_000)),
                "record": records[0] if records else None,
            }
            self.state.on_ack(record_id, ack)
            log.info("dashboard: %s acknowledged the alert about %s at %s", by, record_id, station.key)
            return AckResult(HTTPStatus.OK, {"ok": True, "message": reply.get("message"), "ack": ack})
        finally:
            with self._pending_lock:
                self._pending.pop(request_id, None)
                self._acking.discard(record_id)


def _json_object(raw: bytes) -> Record | None:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

MAX_BODY = 16 * 1024
MAX_COMMENT = 500
SSE_KEEPALIVE = 10.0  # seconds between comments on a quiet stream
_SSE_SLICE = 0.5  # seconds a stream waits for events before it looks at its session
_SSE_EXPIRED = b'event: expired\ndata: {"login":"/login?expired=1"}\n\n'

_STATIC = "dashboard"  # collector/static/dashboard/
_ACK_PATH = re.compile(r"^/alerts/([^/]+)/ack$")
_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,  # the part report replaces it with _REPORT_CSP
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
TRACE_FIELDS = (
    ("serial", "Serial"),
    ("lot", "Lot"),
    ("work_order", "Work order"),
    ("part_number", "Part number"),
    ("station", "Station"),
    ("characteristic", "Characteristic"),
    ("gauge", "Gauge"),
    ("from", "From"),
    ("to", "To"),
)


class _Handler(web.Handler[Dashboard]):
    server_version = "collector-dashboard"
    log_refused_from = 500  # 4xx are routine (expired sessions); sign-in and CSRF refusals log their own line
    internal_error = "internal error, see the log"
    security_headers = _SECURITY_HEADERS

    @property
    def dash(self) -> Dashboard:
        return self.app

    # -- routing -----------------------------------------------------------------------------------
    def route(self, method: str, path: str) -> None:
        self.query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        self.check_host("this dashboard answers on the loopback address only", host_required=True)
        if path.startswith("/static/dashboard/"):
            self.need(method, "GET", "HEAD")
            return self.send_static(_STATIC, path.removeprefix("/static/dashboard/"))
        if path == "/favicon.ico":
            return self.send_static(_STATIC, "favicon.svg")
        if path == "/login":
            if method == "POST":
                return self._login()
            self.need(method, "GET", "HEAD")
            return self._login_page()
        session = self.dash.auth.session(self._cookie())
        if session is None:
            return self._unauthenticated(method, path)
        if method == "POST":
            form = self._read_form() if path == "/logout" else None
            problem = csrf_problem(self.headers, session, (form or {}).get("csrf"))
            if problem is not None:
                log.warning("dashboard: POST %s by %s refused: %s", path, session.user, problem)
                raise RequestError(HTTPStatus.FORBIDDEN, problem)
            if path == "/logout":
                return self._logout(session)
            m = _ACK_PATH.match(path)
            if m is not None:
                return self._ack(session, unquote(m.group(1)))
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        self.need(method, "GET", "HEAD")
        if path == "/":
            return self._live_page(session)
        if path == "/events":
            self.need(method, "GET")
            return self._events(session)
        if path == "/api/state":
            return self.send_json(HTTPStatus.OK, self.dash.state.snapshot()[1])
        if path == "/api/me":
            return self.send_json(HTTPStatus.OK, self._me(session))
        if path == "/trace":
            return self._trace_page(session)
        if path == "/trace/export":
            return self._export()
        if path == "/trace/report":
            return self._report()
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    def _client(self) -> str:
        return str(self.client_address[0])

    def _cookie(self) -> str | None:
        name = self.dash.cookie_name
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                key, _, value = part.strip().partition("=")
                if key == name and value:
                    return value
        return None

    def _unauthenticated(self, method: str, path: str) -> None:
        expired = self._cookie() is not None
        if method in ("GET", "HEAD") and path in ("/", "/trace"):
            target = path + (("?" + urlsplit(self.path).query) if urlsplit(self.path).query else "")
            q = {"next": target} if target != "/" else {}
            if expired:
                q["expired"] = "1"
            location = "/login" + ("?" + urlencode(q) if q else "")
            return self._redirect(location, clear_cookie=expired)
        self.send_json(
            HTTPStatus.UNAUTHORIZED,
            {"ok": False, "error": "session expired, sign in again" if expired else "sign in first", "login": "/login"},
            headers={"Set-Cookie": self._clear_cookie()} if expired else None,
        )

    def _me(self, session: Session) -> Record:
        return {
            "name": session.user,
            "role": session.role,
            "may_acknowledge": may_acknowledge(session.role),
            "expires_in": round(session.remaining(self.dash.auth.clock()), 1),
        }

    # -- sign-in -------------------------------------------------------------------------------------
    def _login_page(self, error: str = "", status: HTTPStatus = HTTPStatus.OK, name: str = "") -> None:
        if not error and self.dash.auth.session(self._cookie()) is not None:
            return self._redirect(safe_next(self._q("next")))
        notice = ""
        if error:
            notice = f'<p class="notice error" role="alert">{html.escape(error)}</p>'
        elif self._q("expired"):
            notice = '<p class="notice" role="status">Your session has expired. Please sign in again.</p>'
        elif self._q("bye"):
            notice = '<p class="notice" role="status">You are signed out.</p>'
        body = self._template(
            "login.html",
            {
                "title": self.dash.settings.title,
                "notice": notice,
                "next": safe_next(self._q("next")),
                "name": name,
                "name_focus": "" if name else "autofocus",
                "password_focus": "autofocus" if name else "",
            },
            raw={"notice", "name_focus", "password_focus"},
        )
        self.send(status, "text/html; charset=utf-8", body, cache="no-store")

    def _login(self) -> None:
        problem = csrf_problem(self.headers, None)
        if problem is not None:
            raise RequestError(HTTPStatus.FORBIDDEN, problem)
        form = self._read_form()
        name = form.get("name", "").strip()
        password = form.get("password", "")
        self.query = {"next": [form.get("next", "/")]}
        client = self._client()
        if self.dash.auth.throttled(client, name):
            log.warning("dashboard: sign-in for %r from %s throttled after repeated failures", name[:64], client)
            return self._login_page(
                "Too many failed attempts. Wait a few minutes.", HTTPStatus.TOO_MANY_REQUESTS, name=name
            )
        session = self.dash.auth.login(name, password, client) if name and password else None
        if session is None:
            if not (name and password):
                log.warning("dashboard: failed sign-in from %s: name or password missing", client)
            return self._login_page("Wrong name or password.", HTTPStatus.UNAUTHORIZED, name=name)
        self._redirect(safe_next(form.get("next")), cookie=self._session_cookie(session))

    def _logout(self, session: Session) -> None:
        self.dash.auth.logout(session.token)
        log.info("dashboard: %s signed out", session.user)
        self._redirect("/login?bye=1", clear_cookie=True)

    def _session_cookie(self, session: Session) -> str:
        # no Max-Age: the server decides when a session ends, and an expired cookie that comes
        # back lets the sign-in form say so instead of just asking again
        cookie = f"{self.dash.cookie_name}={session.token}; Path=/; HttpOnly; SameSite=Strict"
        return cookie + ("; Secure" if self.dash.settings.secure_cookie else "")

    def _clear_cookie(self) -> str:
        return f"{self.dash.cookie_name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"

    # -- live ----------------------------------------------------------------------------------------
    def _live_page(self, session: Session) -> None:
        body = self._template(
            "live.html",
            {
                "title": self.dash.settings.title,
                "user": session.user,
                "role": session.role,
                "csrf": session.csrf,
                "timezone": self.dash.settings.shift_timezone or "",
                "may_ack": "1" if may_acknowledge(session.role) else "0",
            },
        )
        self.send(HTTPStatus.OK, "text/html; charset=utf-8", body, cache="no-store")

    def _events(self, session: Session) -> None:
        """A snapshot, then the hub's events; a new snapshot after falling behind; the end at sign-out."""
        dash = self.dash
        seq = 0

        def snapshot() -> bytes:
            nonlocal seq
            seq, snap = dash.state.snapshot()
            snap["me"] = self._me(session)
            return web.sse_event(snap, id=seq, event="snapshot", retry=2000)

        def poll() -> bytes:
            nonlocal seq
            if dash.auth.session(session.token) is None:
                raise web.EndStream(_SSE_EXPIRED)
            got = dash.state.hub.wait(seq, _SSE_SLICE)
            if got is None:  # fell behind the ring: start over from a fresh snapshot
                return snapshot()
            seq, events = got
            return b"".join(events)

        self.stream(snapshot, poll, stopping=dash.stopping, keepalive=SSE_KEEPALIVE, cache="no-store")

    def _ack(self, session: Session, record_id: str) -> None:
        if not may_acknowledge(session.role):
            log.warning("dashboard: %s (%s) tried to acknowledge an alert: refused", session.user, session.role)
            raise RequestError(HTTPStatus.FORBIDDEN, "only a supervisor may acknowledge alerts")
        body = self._read_json()
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise RequestError(HTTPStatus.BAD_REQUEST, "comment must be text")
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_COMMENT:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"comment is longer than {MAX_COMMENT} characters")
        if len(record_id) > 64:
            raise RequestError(HTTPStatus.NOT_FOUND, "no such alert")
        result = self.dash.acknowledge(record_id, session.user, comment)
        self.send_json(result.status, result.body)

    # -- traceability ----------------------------------------------------------------------------------
    def _q(self, key: str) -> str:
        values = self.query.get(key) or [""]
        return values[0].strip()

    def _filter(self) -> TraceFilter:
        values = {k: (self._q(k) or None) for k, _ in TRACE_FIELDS}
        flt = TraceFilter(
            serial=values["serial"],
            lot=values["lot"],
            work_order=values["work_order"],
            part_number=values["part_number"],
            station=values["station"],
            characteristic=values["characteristic"],
            gauge=values["gauge"],
            start=values["from"],
            end=values["to"],
        )
        try:
            flt.conditions()
        except ValueError:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, "from/to must be a date (2026-11-21) or a time (2026-11-21T06:00:00Z)"
            ) from None
        return flt

    def _search(self, flt: TraceFilter) -> list[Record]:
        try:
            return trace(self.dash.store, flt)
        except StoreError as exc:
            raise RequestError(HTTPStatus.BAD_GATEWAY, f"the store did not answer: {exc}") from None

    def _trace_page(self, session: Session) -> None:
        error = ""
        records: list[Record] | None = None
        flt = TraceFilter()
        try:
            flt = self._filter()
            if not flt.empty():
                records = self._search(flt)
        except RequestError as exc:
            error = exc.message
        params = {k: self._q(k) for k, _ in TRACE_FIELDS if self._q(k)}
        inputs = "\n".join(
            f'<label class="field"><span>{label}</span>'
            f'<input name="{key}" id="f-{key}" value="{html.escape(self._q(key))}"'
            f'{_PLACEHOLDERS.get(key, "")} autocomplete="off"></label>'
            for key, label in TRACE_FIELDS
        )
        if error:
            result = f'<p class="notice error" role="alert">{html.escape(error)}</p>'
        elif records is None:
            result = '<p class="notice">Give at least one criterion: a serial, a lot, a work order, a part number, '
            result += "a station, a characteristic, a gauge or a time range.</p>"
        else:
            result = self._result_html(records, params)
        body = self._template(
            "trace.html",
            {
                "title": self.dash.settings.title,
                "user": session.user,
                "role": session.role,
                "csrf": session.csrf,
                "inputs": inputs,
                "result": result,
            },
            raw={"inputs", "result"},
        )
        self.send(HTTPStatus.OK, "text/html; charset=utf-8", body, cache="no-store")

    def _result_html(self, records: list[Record], params: dict[str, str]) -> str:
        limit = self.dash.settings.trace_rows
        links = " ".join(
            f'<a class="button" id="export-{html.escape(fmt)}" download '
            f'href="/trace/export?{html.escape(urlencode({"format": fmt, **params}))}">'
            f"{html.escape(fmt.upper())}</a>"
            for fmt in self.dash.exporters
        )
        shown = records[:limit]
        more = f" — showing the first {limit}; the downloads hold all of them" if len(records) > limit else ""
        serials = {str(r["serial"]) for r in records if r.get("serial")}
        if self.dash.part_report is not None and len(serials) == 1:
            serial = next(iter(serials))
            href = html.escape("/trace/report?" + urlencode({"serial": serial}))
            report_link = f'<a class="button report" id="part-report" href="{href}" target="_blank" rel="noopener">'
            links = f"{report_link}Part report {html.escape(serial)}</a> <span>Download</span> {links}"
        else:
            links = "<span>Download</span> " + links
        head = (
            f'<div class="result-head"><span class="count" id="result-count">{len(records)} record(s){more}</span>'
            f'<span class="downloads">{links}</span></div>'
        )
        if not records:
            return head + '<p class="notice">No records match.</p>'
        report = self.dash.part_report is not None
        rows = "\n".join(_trace_row(r, report) for r in shown)
        return (
            head
            + '<div class="table-wrap"><table class="records" id="results"><thead><tr>'
            + "<th>Recorded (UTC)</th><th>Kind</th><th>Serial</th><th>Part</th><th>Station</th>"
            + "<th>Char.</th><th class=num>Value</th><th class=num>LSL</th><th class=num>USL</th>"
            + "<th>Verdict</th><th>Operator</th><th>Gauge</th><th>Lot / WO</th><th>Detail</th><th>Seq</th>"
            + f"</tr></thead><tbody>{rows}</tbody></table></div>"
        )

    def _export(self) -> None:
        fmt = self._q("format") or "json"
        exporter = self.dash.exporters.get(fmt)
        if exporter is None:
            known = ", ".join(self.dash.exporters)
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown format {fmt!r} (known: {known})")
        flt = self._filter()
        if flt.empty():
            raise RequestError(HTTPStatus.BAD_REQUEST, "give at least one criterion")
        records = self._search(flt)
        out = io.StringIO()
        try:
            exporter(records, out)
        except CollectorError as exc:  # e.g. a format that cannot hold these records
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        ctype, ext = self.dash.export_media.get(fmt, ("text/plain; charset=utf-8", fmt))
        m = re.search(r"charset=([A-Za-z0-9_-]+)", ctype)
        try:
            data = out.getvalue().encode(m.group(1) if m else "utf-8")
        except (UnicodeEncodeError, LookupError) as exc:
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"{fmt}: cannot encode the records: {exc}") from None
        stem = next((self._q(k) for k in ("serial", "lot", "work_order", "part_number", "station") if self._q(k)), "")
        name = "trace-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "records") + f".{ext}"
        self.send(
            HTTPStatus.OK,
            ctype,
            data,
            cache="no-store",
            headers={"Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"},
        )

    def _report(self) -> None:
        if self.dash.part_report is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "no report module is installed")
        serial = self._q("serial")
        if not serial:
            raise RequestError(HTTPStatus.BAD_REQUEST, "a report needs a serial")
        records = self._search(TraceFilter(serial=serial))
        if not records:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no records for serial {serial!r}")
        try:
            page = self.dash.part_report(self.dash.store, records)
        except StoreError as exc:
            raise RequestError(HTTPStatus.BAD_GATEWAY, f"the store did not answer: {exc}") from None
        except CollectorError as exc:
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        self.send(
            HTTPStatus.OK,
            "text/html; charset=utf-8",
            page.encode("utf-8"),
            cache="no-store",
            headers={"Content-Security-Policy": _REPORT_CSP},
        )

    # -- plumbing ------------------------------------------------------------------------------------
    def _template(self, name: str, values: Mapping[str, str], raw: Iterable[str] = ()) -> bytes:
        """A page with ``values`` filled in, escaped unless named in ``raw`` (markup made here)."""
        raws = set(raw)
        return web.render(_STATIC, name, {k: v if k in raws else html.escape(v) for k, v in values.items()})

    def _read_form(self) -> dict[str, str]:
        self.require_type("application/x-www-form-urlencoded", "send a form")
        try:
            text = self.read_body(MAX_BODY, optional=True).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the form is not UTF-8") from None
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}

    def _read_json(self) -> Record:
        self.require_type("application/json", "send JSON (Content-Type: application/json)")
        return self.read_json(MAX_BODY, optional=True)

    def _redirect(self, location: str, *, cookie: str | None = None, clear_cookie: bool = False) -> None:
        if cookie is None and clear_cookie:
            cookie = self._clear_cookie()
        self.redirect(location, cache="no-store", headers={"Set-Cookie": cookie} if cookie is not None else None)


_PLACEHOLDERS = {
    "serial": ' placeholder="HX000123"',
    "from": ' placeholder="2026-11-21T06:00Z"',
    "to": ' placeholder="2026-11-21T14:00Z (exclusive)"',
}


def _fmt_time(text: Any) -> str:
    s = str(text or "")
    return s[:10] + " " + s[11:23] if len(s) >= 23 else s


def _trace_row(r: Record, report: bool) -> str:
    def c(value: Any, cls: str = "") -> str:
        text = "" if value is None else (" ".join(map(str, value)) if isinstance(value, list) else str(value))
        attr = f' class="{cls}"' if cls else ""
        return f"<td{attr}>{html.escape(text)}</td>"

    kind = str(r.get("kind") or "")
    verdict = r.get("verdict") or {"refusal": "refused", "nonconformance": "nc", "invalidation": "void"}.get(kind)
    value = r.get("judged_value")
    if value is not None and r.get("unit"):
        value = f"{value} {r['unit']}"
    detail = r.get("reason") or r.get("detail") or r.get("decision") or r.get("event") or ""
    if kind == "audit" and r.get("event"):
        detail = f"{r['event']}: {r.get('detail') or ''}" + (f" (by {r['by']})" if r.get("by") else "")
    elif kind in ("invalidation", "disposition") and r.get("by"):
        detail = f"{detail} (by {r['by']})"
    serial = html.escape(str(r.get("serial") or ""))
    if report and r.get("serial"):
        href = html.escape("/trace/report?" + urlencode({"serial": str(r["serial"])}))
        serial = f'<a href="{href}" title="part report">{serial}</a>'
    verdict_cls = f"verdict v-{re.sub(r'[^a-z_]', '', str(verdict or 'none').lower())}"
    return (
        f'<tr class="k-{html.escape(kind)}" data-id="{html.escape(str(r.get("id") or ""))}">'
        + c(_fmt_time(r.get("recorded_at")), "mono")
        + c(kind)
        + f'<td class="mono">{serial}</td>'
        + c(r.get("part_number"))
        + c(r.get("station"))
        + c(r.get("characteristic"))
        + c(value, "num mono")
        + c(r.get("lsl"), "num mono")
        + c(r.get("usl"), "num mono")
        + (f'<td><span class="{verdict_cls}">{html.escape(str(verdict))}</span></td>' if verdict else "<td></td>")
        + c(r.get("operator"))
        + c(r.get("gauge"))
        + c(" / ".join(str(x) for x in (r.get("lot"), r.get("work_order")) if x))
        + c(detail, "detail")
        + c(r.get("seq"), "num mono")
        + "</tr>"
    )


__all__ = [
    "EXPORTERS",
    "EXPORT_MEDIA",
    "PART_REPORT",
    "Auth",
    "Dashboard",
    "DashboardSettings",
    "DashboardUser",
    "LiveState",
    "Session",
    "Shift",
    "csrf_problem",
    "hash_password",
    "may_acknowledge",
    "safe_next",
    "shift_at",
    "verify_password",
]
