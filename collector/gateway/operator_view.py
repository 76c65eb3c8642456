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
- ``GET /station/<id>/events``: the view at once, then every new version (SSE);
- ``POST /station/<id>/scan`` ``{"code": ...}`` and ``POST /station/<id>/command``
  ``{"command": ..., "args": {...}}``: ``{"ok": true, "message": ...}`` (200) or
  ``{"ok": false, "error": ...}`` (400 when the gateway refuses, 500 on a fault).

Access: the view has no login of its own; whoever reaches it can sign operators in and
send commands. It binds to 127.0.0.1 by default, for the workstation's own browser, and
then also refuses requests whose ``Host`` is not a loopback name (a DNS-rebinding page).
POSTs must be ``application/json`` and, when the browser names an ``Origin``, come from
the page's own origin (``Host`` or ``X-Forwarded-Host``), so another web page open in the
same browser cannot send commands. Serving it to a panel PC or across the network needs a
reverse proxy with TLS and access control in front of the loopback address (keep nginx's
default ``proxy_set_header Host $proxy_host``; pass ``X-Forwarded-Host``; do not buffer
``/station/*/events``), or another ``bind`` address behind a host firewall ACL that admits
only the panel PCs. Pages and logs carry no secrets; one log line per failed request.
"""

from __future__ import annotations

import html
import logging
import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from collector import web
from collector.errors import CollectorError, JournalError
from collector.inspection.station import CommandError, ScanError
from collector.web import RequestError

if TYPE_CHECKING:
    from collector.gateway.daemon import Gateway

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # bytes of a request body at most
KEEPALIVE = 1.0  # seconds between SSE keepalive comments when nothing changes
_SLICE = 0.25  # seconds an SSE stream waits for a new view before it looks at the stop flag

#: arguments each command takes from a client: (required, optional); values are strings
COMMAND_ARGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "scan": (frozenset({"code"}), frozenset()),
    "sign_in": (frozenset({"operator"}), frozenset()),
    "sign_out": (frozenset(), frozenset({"by"})),
    "remeasure": (frozenset({"reason"}), frozenset({"characteristic", "by"})),
    "invalidate": (frozenset({"record_id", "reason", "by"}), frozenset()),
    "dispose": (frozenset({"nonconformance_id", "decision", "by"}), frozenset({"concession", "comment"})),
    "abandon": (frozenset(), frozenset({"by", "reason"})),
    "patrol": (frozenset(), frozenset({"by"})),
    "andon_off": (frozenset(), frozenset({"by"})),
    "ack_alert": (frozenset({"record_id"}), frozenset({"by", "comment"})),
}
_MAX_ARG = 512  # characters of one argument at most
_RESERVED = frozenset({"station_id", "name", "timeout", "on_done"})  # Gateway.command's own parameters

_STATIC = "operator"  # collector/static/operator/
_STATION_PATH = re.compile(r"^/station/([^/]+)(?:/(view|events|scan|command))?/?$")
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

    def __init__(self, gateway: Gateway, bind: str, port: int) -> None:
        super().__init__(bind, port)
        self.gateway = gateway

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

    def run(self, station: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run an operator command; the JSON answer (raises RequestError when refused).

        The arguments of the commands in :data:`COMMAND_ARGS` are checked here, so that a
        malformed request is a 400 and never an error in the gateway's processing thread;
        another command of ``Gateway.COMMANDS`` gets its (string) arguments as they are.
        """
        required, optional = COMMAND_ARGS.get(name, (frozenset(), frozenset()))
        missing = sorted(required - set(args))
        if missing:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} needs {', '.join(missing)}")
        allowed = required | optional if name in COMMAND_ARGS else set(args) - _RESERVED
        unknown = sorted(set(args) - allowed)
        if unknown:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} takes no {', '.join(unknown)}")
        for key, value in args.items():
            if value is not None and not isinstance(value, str):
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} must be a string")
            if isinstance(value, str) and len(value) > _MAX_ARG:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} is longer than {_MAX_ARG} characters")
        clean = {k: v for k, v in args.items() if v is not None and (v != "" or k in required)}
        try:
            outcome = self.gateway.command(station, name, **clean)
        except (CommandError, ScanError) as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except JournalError as exc:
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"not recorded: {exc}") from None
        except CollectorError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        return {"ok": True, "message": outcome.message, "records": [str(d["id"]) for d in outcome.drafts]}


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
        self.check_host("this view answers on the loopback address only", host_required=False)
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
        body = web.render(
            _STATIC,
            "station.html",
            {"station": html.escape(station), "gateway": html.escape(self.view.gateway.settings.id)},
        )
        self.send(HTTPStatus.OK, "text/html; charset=utf-8", body)

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
            result = self.view.run(station, "scan", {"code": code})
        else:
            name = body.get("command")
            commands = self.view.gateway.COMMANDS
            if not isinstance(name, str) or name not in commands:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown command {name!r} (known: {', '.join(commands)})")
            args = body.get("args") or {}
            if not isinstance(args, dict):
                raise RequestError(HTTPStatus.BAD_REQUEST, "args must be an object")
            result = self.view.run(station, name, args)
        self.send_json(HTTPStatus.OK, result)

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


def _event(view: dict[str, Any]) -> bytes:
    return web.sse_event(view, id=view.get("version", 0))
