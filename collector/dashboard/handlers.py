"""The dashboard's HTTP routes: sign-in, the live page and its event stream, acknowledging,
the traceability search, its downloads and the part report.

Every page and API except the sign-in form and the static assets needs a session
(:mod:`.auth`); pages are Jinja2 templates (``collector/templates/dashboard/``) filled with
plain values, escaped by the template engine. Errors the store reports are logged with their
detail (which names the store's address); viewers are told only that the store did not answer.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from collector import web
from collector.dashboard import quality_pages, records
from collector.dashboard.auth import Session, SignInBusy, csrf_problem, may_acknowledge, safe_next
from collector.errors import CollectorError, StoreError
from collector.evidence.trace import TraceFilter
from collector.web import RequestError

if TYPE_CHECKING:
    from collector.dashboard.app import Dashboard
    from collector.inspection.record_types import Record

log = logging.getLogger(__name__)


MAX_BODY = 16 * 1024
MAX_COMMENT = 500
SSE_KEEPALIVE = 10.0  # seconds between comments on a quiet stream
_SSE_SLICE = 0.5  # seconds a stream waits for events before it looks at its session
_SSE_EXPIRED = b'event: expired\ndata: {"login":"/login?expired=1"}\n\n'
DEVICE_DAYS = 180  # how long a browser that signed in keeps its device cookie

_STATIC = "dashboard"  # collector/static/dashboard/
_ACK_PATH = re.compile(r"^/alerts/([^/]+)/ack$")
_DISPOSE_PATH = re.compile(r"^/mrb/([^/]+)/dispose$")
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
_PLACEHOLDERS = {"serial": "HX000123", "from": "2026-11-21T06:00Z", "to": "2026-11-21T14:00Z (exclusive)"}
STORE_DOWN = "the evidence store did not answer; try again later (the dashboard's log has the details)"


class DashboardHandler(web.Handler["Dashboard"]):
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
        session = self.dash.auth.session(self._cookie(self.dash.cookie_name))
        if session is None:
            return self._unauthenticated(method, path)
        if method == "POST":
            return self._route_post(session, path)
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
        if path == "/chart":
            return quality_pages.chart_page(self, session)
        if path == "/chart/figures":
            return quality_pages.chart_figures(self)
        if path == "/mrb":
            return quality_pages.mrb_page(self, session)
        if path == "/trace/export":
            return self._export()
        if path == "/trace/report":
            return self._report()
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    def _route_post(self, session: Session, path: str) -> None:
        """A POST of a signed-in user: checked for its CSRF token first."""
        form = self._read_form() if path == "/logout" else None
        problem = self._csrf_problem(session, (form or {}).get("csrf"))
        if problem is not None:
            log.warning("dashboard: POST %s by %s refused: %s", path, session.user, problem)
            raise RequestError(HTTPStatus.FORBIDDEN, problem)
        if path == "/logout":
            return self._logout(session)
        m = _ACK_PATH.match(path)
        if m is not None:
            return self._ack(session, unquote(m.group(1)))
        m = _DISPOSE_PATH.match(path)
        if m is not None:
            return quality_pages.dispose(self, session, unquote(m.group(1)))
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    def _cookie(self, name: str) -> str | None:
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                key, _, value = part.strip().partition("=")
                if key == name and value:
                    return value
        return None

    def _csrf_problem(self, session: Session | None, form_token: str | None = None) -> str | None:
        via = self.via
        if via.forwarded_host:
            return csrf_problem(self.headers, session, form_token, host=via.host, scheme=via.scheme)
        return csrf_problem(self.headers, session, form_token)

    def _unauthenticated(self, method: str, path: str) -> None:
        expired = self._cookie(self.dash.cookie_name) is not None
        if method in ("GET", "HEAD") and path in ("/", "/trace", "/chart", "/mrb"):
            query = urlsplit(self.path).query
            target = path + ("?" + query if query else "")
            q = {"next": target} if target != "/" else {}
            if expired:
                q["expired"] = "1"
            location = "/login" + ("?" + urlencode(q) if q else "")
            return self._redirect(location, cookies=[self._clear_cookie()] if expired else ())
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

    def _page(self, status: HTTPStatus, name: str, values: Mapping[str, Any]) -> None:
        body = web.page(f"dashboard/{name}", {"title": self.dash.settings.title, **values})
        self.send(status, "text/html; charset=utf-8", body, cache="no-store")

    def _signed_in(self, session: Session) -> dict[str, Any]:
        return {"user": session.user, "role": session.role, "csrf": session.csrf}

    # -- sign-in -------------------------------------------------------------------------------------
    def _login_page(self, error: str = "", status: HTTPStatus = HTTPStatus.OK, name: str = "") -> None:
        if not error and self.dash.auth.session(self._cookie(self.dash.cookie_name)) is not None:
            return self._redirect(safe_next(self._q("next")))
        values = {
            "error": error,
            "expired": bool(self._q("expired")),
            "bye": bool(self._q("bye")),
            "next": safe_next(self._q("next")),
            "name": name,
        }
        self._page(status, "login.html", values)

    def _login(self) -> None:
        problem = self._csrf_problem(None)
        if problem is not None:
            raise RequestError(HTTPStatus.FORBIDDEN, problem)
        form = self._read_form()
        name = form.get("name", "").strip()
        password = form.get("password", "")
        self.query = {"next": [form.get("next", "/")]}
        client = self.via.client
        if not (name and password):
            log.warning("dashboard: failed sign-in from %s: name or password missing", client)
            return self._login_page("Wrong name or password.", HTTPStatus.UNAUTHORIZED, name=name)
        device = self._cookie(self.dash.device_cookie_name)
        try:
            session = self.dash.auth.login(name, password, client, device)
        except SignInBusy:
            return self._login_page(
                "Too many sign-ins under way. Try again in a moment.",
                HTTPStatus.TOO_MANY_REQUESTS,
                name=name,
            )
        if session is None:
            return self._login_page("Wrong name or password.", HTTPStatus.UNAUTHORIZED, name=name)
        cookies = [self._session_cookie(session)]
        if self.dash.auth.device_id(device, session.user) is None:
            cookies.append(self._device_cookie(self.dash.auth.device_token(session.user)))
        self._redirect(safe_next(form.get("next")), cookies=cookies)

    def _logout(self, session: Session) -> None:
        self.dash.auth.logout(session.token)
        log.info("dashboard: %s signed out", session.user)
        self._redirect("/login?bye=1", cookies=[self._clear_cookie()])

    def _secure(self) -> str:
        secure = self.dash.settings.secure_cookie or (self.via.forwarded_host and self.via.scheme == "https")
        return "; Secure" if secure else ""

    def _session_cookie(self, session: Session) -> str:
        # no Max-Age: the server decides when a session ends, and an expired cookie that comes
        # back lets the sign-in form say so instead of just asking again
        return f"{self.dash.cookie_name}={session.token}; Path=/; HttpOnly; SameSite=Strict{self._secure()}"

    def _device_cookie(self, token: str) -> str:
        age = DEVICE_DAYS * 86400
        name = self.dash.device_cookie_name
        return f"{name}={token}; Path=/login; Max-Age={age}; HttpOnly; SameSite=Strict{self._secure()}"

    def _clear_cookie(self) -> str:
        return f"{self.dash.cookie_name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"

    # -- live ----------------------------------------------------------------------------------------
    def _live_page(self, session: Session) -> None:
        values = {
            **self._signed_in(session),
            "timezone": self.dash.settings.shift_timezone or "",
            "may_ack": may_acknowledge(session.role),
        }
        self._page(HTTPStatus.OK, "live.html", values)

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
        cause, action = quality_pages.text_field(body, "cause"), quality_pages.text_field(body, "action")
        result = self.dash.acknowledge(record_id, session.user, comment, cause, action)
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
            return records.search(self.dash.store, flt, self.dash.keys)
        except StoreError as exc:
            raise self._store_down("search", exc) from None

    def _store_down(self, what: str, exc: StoreError) -> RequestError:
        """The store failed: its detail (with its address) to the log, a plain message to the viewer."""
        log.warning("dashboard: %s: the store did not answer: %s", what, exc)
        return RequestError(HTTPStatus.BAD_GATEWAY, STORE_DOWN)

    def _trace_page(self, session: Session) -> None:
        error = ""
        found: list[Record] | None = None
        try:
            flt = self._filter()
            if not flt.empty():
                found = self._search(flt)
        except RequestError as exc:
            error = exc.message
        fields = [
            {"key": key, "label": label, "value": self._q(key), "placeholder": _PLACEHOLDERS.get(key)}
            for key, label in TRACE_FIELDS
        ]
        values: dict[str, Any] = {**self._signed_in(session), "fields": fields, "error": error, "records": found}
        if found is not None:
            values.update(self._results(found))
        self._page(HTTPStatus.OK, "trace.html", values)

    def _results(self, found: list[Record]) -> dict[str, Any]:
        params = {k: self._q(k) for k, _ in TRACE_FIELDS if self._q(k)}
        serials = {str(r["serial"]) for r in found if r.get("serial")}
        serial = next(iter(serials)) if len(serials) == 1 else None
        return {
            "rows": [trace_row(r) for r in found[: self.dash.settings.trace_rows]],
            "downloads": [
                (fmt, "/trace/export?" + urlencode({"format": fmt, **params})) for fmt in self.dash.exporters
            ],
            "report_serial": serial,
            "report_href": report_href(serial) if serial else None,
        }

    def _export(self) -> None:
        fmt = self._q("format") or "json"
        export = self.dash.exporters.get(fmt)
        if export is None:
            known = ", ".join(self.dash.exporters)
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown format {fmt!r} (known: {known})")
        flt = self._filter()
        if flt.empty():
            raise RequestError(HTTPStatus.BAD_REQUEST, "give at least one criterion")
        found = self._search(flt)
        out = io.StringIO()
        try:
            export.write(found, out)
        except CollectorError as exc:  # e.g. a format that cannot hold these records
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
        m = re.search(r"charset=([A-Za-z0-9_-]+)", export.content_type)
        try:
            data = out.getvalue().encode(m.group(1) if m else "utf-8")
        except (UnicodeEncodeError, LookupError) as exc:
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"{fmt}: cannot encode the records: {exc}") from None
        stem = next((self._q(k) for k in ("serial", "lot", "work_order", "part_number", "station") if self._q(k)), "")
        name = "trace-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "records") + f".{export.extension}"
        self.send(
            HTTPStatus.OK,
            export.content_type,
            data,
            cache="no-store",
            headers={"Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"},
        )

    def _report(self) -> None:
        serial = self._q("serial")
        if not serial:
            raise RequestError(HTTPStatus.BAD_REQUEST, "a report needs a serial")
        found = self._search(TraceFilter(serial=serial))
        if not found:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no records for serial {serial!r}")
        try:
            page = records.part_report(self.dash.store, found, self.dash.keys)
        except StoreError as exc:
            raise self._store_down("part report", exc) from None
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

    def _redirect(self, location: str, *, cookies: list[str] | tuple[str, ...] = ()) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()


def report_href(serial: str) -> str:
    return "/trace/report?" + urlencode({"serial": serial})


def _text(value: Any) -> str:
    if value is None:
        return ""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def trace_row(r: Record) -> dict[str, str | None]:
    """What the traceability table shows of a record, as plain text (the template escapes it)."""
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
    recorded = str(r.get("recorded_at") or "")
    return {
        "id": _text(r.get("id")),
        "kind": kind,
        "time": recorded[:10] + " " + recorded[11:23] if len(recorded) >= 23 else recorded,
        "serial": _text(r.get("serial")),
        "report_href": report_href(str(r["serial"])) if r.get("serial") else None,
        "part_number": _text(r.get("part_number")),
        "station": _text(r.get("station")),
        "characteristic": _text(r.get("characteristic")),
        "value": _text(value),
        "lsl": _text(r.get("lsl")),
        "usl": _text(r.get("usl")),
        "verdict": _text(verdict) if verdict else None,
        "verdict_class": re.sub(r"[^a-z_]", "", str(verdict or "none").lower()),
        "operator": _text(r.get("operator")),
        "gauge": _text(r.get("gauge")),
        "lot_wo": " / ".join(str(x) for x in (r.get("lot"), r.get("work_order")) if x),
        "detail": _text(detail),
        "seq": _text(r.get("seq")),
    }
