"""The inspector's screen at a workstation: a small local web server run by the gateway.

Every station of the gateway gets a page (``/station/<id>``) that shows, large enough to
read from a metre away, who is signed in, which part is in front of the station, what to
measure next and within which limits, the last value judged pass or fail, the plan's
characteristics as tiles, the part verdict, and what the gateway refused and why. The
page is plain HTML, CSS and JavaScript from ``collector/static/operator/`` (no CDN, no
build step: the shop floor has no internet); it reads the station's view as JSON and then
follows it live over Server-Sent Events.

Keyboard-wedge barcode scanners type the code and press Enter into whatever has focus, so
the page keeps its scan field focused and posts each code to ``/station/<id>/scan``; the
station's ``scan_pattern`` decides whether it is an operator badge or a part label.

Routes:

- ``GET /``: the stations (redirects to the station when there is only one);
- ``GET /station/<id>``: the page; ``GET /station/<id>/view``: the view as JSON;
- ``GET /station/<id>/chart.svg?characteristic=D1``: a small I-MR chart of the last values
  the gateway judged for it (:class:`collector.gateway.views.ViewHub` keeps them), drawn on
  the server as the dashboard's are; the page shows it on screens with room for it;
- ``GET /station/<id>/events``: the view at once, then every new version (SSE);
- ``POST /station/<id>/scan`` ``{"code": ...}`` and ``POST /station/<id>/command``
  ``{"command": ..., "args": {...}, "signer": {"user": ..., "secret": ...}}`` (the command
  vocabulary of :mod:`collector.inspection.commands`): ``{"ok": true, "message": ...}`` (200)
  or ``{"ok": false, "error": ...}``: 400 (invalid, or the station cannot do it), 401 (sign
  in, or enter the PIN), 403 (not allowed: role, another station's record), 404, 500.

People (with a user register, ``gateway.people``; docs/people.md): a badge scanned at the
station, or typed, is followed by the person's PIN or password (``sign_in`` with a
``signer``); the answer sets a session cookie for that station (``HttpOnly``,
``SameSite=Strict``, path ``/station/<id>``; also when a badge alone signs in, where the
configuration allows that), which ends at sign-out, after
``session_idle_timeout`` seconds unused, or when someone else signs in at the station. Every
command needs the session, or a signer; commands that need a signature carry the signer's
PIN or password again, and their records carry who signed, how, and what it means. A part
label scanned with nobody signed in is refused. Without a register, only scans, sign-out,
patrol and abandon are taken (as before people were authenticated); everything that needs
a signature is refused.

Access: requests must name one of the view's own host names in ``Host`` (and in
``X-Forwarded-Host``, behind a proxy): the loopback names, the address it is bound to, and
``operator_view.allowed_hosts`` (required when bound to every address), so a DNS-rebinding
page is refused on any bind address. POSTs must be ``application/json`` and,
when the browser names an ``Origin``, come from the page's own origin, so another web page
open in the same browser cannot send commands. Serving it to a panel PC across the network:
a reverse proxy with TLS (``secure_cookie: true``) in front of the loopback address (keep
nginx's default ``proxy_set_header Host $proxy_host``; pass ``X-Forwarded-Host``; do not
buffer ``/station/*/events``), or another ``bind`` address with ``allowed_hosts`` behind a
host firewall that admits only the panel PCs. Pages and logs carry no secrets; one log line
per failed request.
"""

from __future__ import annotations

import html
import logging
import re
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from collector import web
from collector.config import OperatorViewSettings
from collector.errors import CollectorError, JournalError
from collector.inspection.charts import characteristic_figures
from collector.inspection.commands import CommandRefused, Scan, SignIn, SignOut, parse_request
from collector.inspection.station import CommandError, ScanError
from collector.web import RequestError
from collector.web_charts import control_chart_svg

if TYPE_CHECKING:
    from collector.gateway.daemon import Gateway

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # bytes of a request body at most
KEEPALIVE = 1.0  # seconds between SSE keepalive comments when nothing changes
_SLICE = 0.25  # seconds an SSE stream waits for a new view before it looks at the stop flag

COOKIE = "station_session"
#: HTTP status of each kind of refusal (collector.inspection.commands.CommandRefused)
_STATUS = {
    "invalid": HTTPStatus.BAD_REQUEST,
    "unauthenticated": HTTPStatus.UNAUTHORIZED,
    "forbidden": HTTPStatus.FORBIDDEN,
    "not_found": HTTPStatus.NOT_FOUND,
    "busy": HTTPStatus.SERVICE_UNAVAILABLE,
}

_STATIC = "operator"  # collector/static/operator/
_STATION_PATH = re.compile(r"^/station/([^/]+)(?:/(view|events|scan|command|chart\.svg))?/?$")
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}


class OperatorView(web.WebApp):
    """The operator screens of one gateway, served over HTTP from a daemon thread."""

    label = "operator view"
    logger = log
    thread_name = "operator-view"

    def __init__(self, gateway: Gateway, bind: str, port: int, settings: OperatorViewSettings | None = None) -> None:
        super().__init__(bind, port)
        self.gateway = gateway
        self.settings = settings or OperatorViewSettings(bind=bind, port=port)
        # the loopback names always: a rebinding page comes under its own name, never these
        names = {h.lower() for h in self.settings.allowed_hosts} | web.LOOPBACK_NAMES
        if bind not in ("", "0.0.0.0", "::"):
            names.add(bind.lower())
        #: the host names requests may name (Host, X-Forwarded-Host)
        self.allowed_hosts = frozenset(names)

    def start(self) -> None:
        if self.start_server(_Handler):
            log.info("operator view on %s/ (stations: %s)", self.url, ", ".join(self.gateway.views.stations()))

    def stop(self) -> None:
        """Stop serving; open pages' event streams end at once (the pages reconnect later)."""
        self.stop_server()

    # -- what the handlers ask ----------------------------------------------------------------
    def station_ids(self) -> list[str]:
        return self.gateway.views.stations()

    def has_station(self, station: str) -> bool:
        return station in self.gateway.stations

    def run(self, station: str, body: dict[str, Any], token: str | None) -> tuple[dict[str, Any], str | None]:
        """Carry out a command from a page: the JSON answer, and the cookie to set (or None).

        Raises RequestError when it is refused (400, 401, 403, 404, 500, 503).
        """
        intake = self.gateway.intake
        try:
            request = parse_request(body)
        except CommandRefused as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        session = intake.sessions.get(token, station)
        try:
            outcome, actor = intake.run(station, request, session=session)
        except CommandRefused as exc:
            raise RequestError(_STATUS.get(exc.kind, HTTPStatus.BAD_REQUEST), str(exc)) from None
        except (CommandError, ScanError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except JournalError as exc:
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"not recorded: {exc}") from None
        except CollectorError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        answer = {"ok": True, "message": outcome.message, "records": [str(d["id"]) for d in outcome.drafts]}
        cookie = None
        person = intake.register.get(actor.user) if actor is not None and intake.register is not None else None
        if isinstance(request.command, Scan) and intake.register is not None:
            # a badge alone signs in where the configuration allows it: then this page is theirs
            signed = [d for d in outcome.drafts if d.get("event") == "sign_in" and d.get("signed_by")]
            person = intake.register.get(str(signed[-1]["signed_by"])) if signed else None
            if person is not None:
                cookie = self._cookie(station, intake.sessions.open(station, person))
                answer["operator"] = person.id
        elif isinstance(request.command, SignIn) and person is not None:
            cookie = self._cookie(station, intake.sessions.open(station, person))
            answer["operator"] = person.id
        elif isinstance(request.command, SignOut):
            intake.sessions.end_station(station)
            cookie = self._cookie(station, "", expire=True)
        return answer, cookie

    def _cookie(self, station: str, token: str, *, expire: bool = False) -> str:
        parts = [f"{COOKIE}={token}", f"Path=/station/{quote(station, safe='')}", "HttpOnly", "SameSite=Strict"]
        if self.settings.secure_cookie:
            parts.append("Secure")
        if expire:
            parts.append("Max-Age=0")
        return "; ".join(parts)

    def host_allowed(self, host: str) -> bool:
        name = urlsplit(f"//{host.strip()}").hostname if host.strip() else None
        return name is not None and name.lower() in self.allowed_hosts


class _Handler(web.Handler[OperatorView]):
    server_version = "collector-operator-view"
    log_refused_from = 0  # one log line per failed request (see above)
    internal_error = "internal error, see the gateway's log"
    security_headers = _SECURITY_HEADERS

    @property
    def view(self) -> OperatorView:
        return self.app

    # -- routing ---------------------------------------------------------------------------------
    def route(self, method: str, path: str) -> None:
        self._check_hosts()
        if path in ("", "/"):
            self.need(method, "GET", "HEAD")
            self._index()
            return
        if path.startswith("/static/operator/"):
            self.need(method, "GET", "HEAD")
            self.send_static(_STATIC, path.removeprefix("/static/operator/"))
            return
        m = _STATION_PATH.match(path)
        if m is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        station, action = unquote(m.group(1)), m.group(2)
        if not self.view.has_station(station):
            raise RequestError(HTTPStatus.NOT_FOUND, f"no station {station!r} on this gateway")
        if action is None:
            self.need(method, "GET", "HEAD")
            self._page(station)
        elif action == "view":
            self.need(method, "GET", "HEAD")
            self.send_json(HTTPStatus.OK, self.view.gateway.views.get(station) or {})
        elif action == "events":
            self.need(method, "GET")
            self._events(station)
        elif action == "chart.svg":
            self.need(method, "GET", "HEAD")
            self._chart(station)
        else:
            self.need(method, "POST")
            self._post(station, action)

    # -- pages -----------------------------------------------------------------------------------
    def _index(self) -> None:
        stations = self.view.station_ids()
        if len(stations) == 1:
            self.redirect(f"/station/{stations[0]}", cache="no-cache")
            return
        items = (
            "\n".join(f'<li><a href="/station/{html.escape(s)}">{html.escape(s)}</a></li>' for s in stations)
            or "<li>no stations configured</li>"
        )
        gateway = html.escape(self.view.gateway.settings.id)
        body = web.render(_STATIC, "index.html", {"gateway": gateway, "stations": items})
        self.send(HTTPStatus.OK, "text/html; charset=utf-8", body)

    def _page(self, station: str) -> None:
        people = self.view.gateway.settings.people
        signed = sorted(people.secret_required) if people is not None else []
        body = web.render(
            _STATIC,
            "station.html",
            {
                "station": html.escape(station),
                "gateway": html.escape(self.view.gateway.settings.id),
                "register": "yes" if self.view.gateway.intake.register is not None else "no",
                "signed": html.escape(" ".join(signed)),
            },
        )
        self.send(HTTPStatus.OK, "text/html; charset=utf-8", body)

    def _chart(self, station: str) -> None:
        """A small individuals chart of one characteristic's recent values (``?characteristic=``)."""
        query = parse_qs(urlsplit(self.path).query)
        cid = (query.get("characteristic") or [""])[0]
        view = self.view.gateway.views.get(station) or {}
        plan = {str(c.get("characteristic")) for c in view.get("plan") or []}
        if cid not in plan:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no characteristic {cid!r} in the station's plan")
        self.send(HTTPStatus.OK, "image/svg+xml; charset=utf-8", chart_svg(self.view.gateway, station, cid).encode())

    # -- live view ---------------------------------------------------------------------------------
    def _events(self, station: str) -> None:
        """The station's view now, then each new version as it comes."""
        hub = self.view.gateway.views
        version = 0

        def first() -> bytes:
            nonlocal version
            view = hub.get(station) or {}
            version = int(view.get("version", 0))
            return b"retry: 2000\n\n" + _event(view)

        def poll() -> bytes:
            nonlocal version
            fresh = hub.wait(station, version, _SLICE)
            if fresh is None:
                return b""
            version = int(fresh.get("version", version))
            return _event(fresh)

        self.stream(first, poll, stopping=self.view.stopping, keepalive=KEEPALIVE, cache="no-cache")

    # -- commands ------------------------------------------------------------------------------------
    def _post(self, station: str, action: str) -> None:
        self._check_origin()
        body = self.read_json(MAX_BODY)
        if action == "scan":
            code = body.get("code")
            if not isinstance(code, str) or not code.strip():
                raise RequestError(HTTPStatus.BAD_REQUEST, "scan needs a code")
            body = {"command": "scan", "args": {"code": code}}
        result, cookie = self.view.run(station, body, self._session_token())
        self.send_json(HTTPStatus.OK, result, headers={"Set-Cookie": cookie} if cookie else None)

    def _session_token(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(COOKIE)
        return morsel.value if morsel is not None else None

    def _check_hosts(self) -> None:
        """421 unless the request names one of the view's own host names (on any bind address).

        A DNS-rebinding page reaches the view under the attacker's name, and the browser sends
        that name in ``Host``; behind a reverse proxy the name the browser used is in
        ``X-Forwarded-Host``. Browsers always send ``Host``: a request without is refused too.
        """
        names = [self.headers.get("Host", "")]
        forwarded = self.headers.get("X-Forwarded-Host")
        if forwarded is not None:
            names.append(forwarded.split(",")[0])
        for name in names:
            if not self.view.host_allowed(name):
                raise RequestError(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    "this view answers to its own host names only (loopback, or operator_view.allowed_hosts)",
                )

    def _check_origin(self) -> None:
        """Commands come from this view's own pages (JSON, same origin), not from another site.

        A cross-site page can send a form or a ``text/plain`` body without asking, but not
        ``application/json``, and the browser names its ``Origin``. Behind a reverse proxy the
        origin is the proxy's, which it names in ``X-Forwarded-Host``.
        """
        self.require_type("application/json", "send JSON (Content-Type: application/json)")
        origin = self.headers.get("Origin")
        if origin is None:
            return  # not sent by a browser's cross-site request
        hosts = (self.headers.get("Host", ""), self.headers.get("X-Forwarded-Host", "").split(",")[0])
        if not web.same_origin(origin, hosts):
            raise RequestError(HTTPStatus.FORBIDDEN, "commands are accepted from this view's own pages only")


def chart_svg(gateway: Gateway, station: str, characteristic: str) -> str:
    """The I-MR chart of the last values the gateway judged for ``characteristic``, as SVG
    (the same drawing as the dashboard's, smaller); a short note while there are too few."""
    values = gateway.views.history(station, characteristic)
    spec = next((c for c in gateway.stations[station].plan.characteristics if c.id == characteristic), None)

    def number(v: Any) -> float | None:
        return None if v is None else float(v)

    figures = characteristic_figures(
        values,
        lsl=number(spec.lower_limit) if spec else None,
        usl=number(spec.upper_limit) if spec else None,
        target=number(spec.nominal) if spec else None,
    )
    if figures.chart is None:
        note = html.escape(f"{characteristic}: {figures.note}")
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" class="control-chart empty" viewBox="0 0 520 60" '
            f'width="100%"><text x="8" y="34" font-family="sans-serif" font-size="14">{note}</text></svg>'
        )
    return str(control_chart_svg(figures.chart, title=f"{characteristic}, last {len(values)}", width=520, height=260))


def _event(view: dict[str, Any]) -> bytes:
    return web.sse_event(view, id=view.get("version", 0))
