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

import contextlib
import html
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from collector.errors import CollectorError, JournalError
from collector.session import CommandError, ScanError

if TYPE_CHECKING:
    from collector.gateway import Gateway

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # bytes of a request body at most
KEEPALIVE = 1.0  # seconds between SSE keepalive comments when nothing changes
_SLICE = 0.25  # seconds an SSE stream waits for a new view before it looks at the stop flag
_STOP_JOIN = 5.0  # seconds stop() waits for the request threads

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

_STATIC_PACKAGE = "collector"
_STATIC_DIR = ("static", "operator")
_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(css|js|svg)$")
_STATION_PATH = re.compile(r"^/station/([^/]+)(?:/(view|events|scan|command))?/?$")
_LOOPBACK_NAMES = {"localhost", "localhost.", "127.0.0.1", "::1"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}


class RequestError(Exception):
    """A request this view answers with an error status and a short message."""

    def __init__(self, status: HTTPStatus, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow  # the methods a 405 names


def _asset(name: str) -> bytes:
    """A file of ``collector/static/operator/`` (package data)."""
    return resources.files(_STATIC_PACKAGE).joinpath(*_STATIC_DIR, name).read_bytes()


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OperatorView:
    """The operator screens of one gateway, served over HTTP from a daemon thread."""

    def __init__(self, gateway: Gateway, bind: str, port: int) -> None:
        self.gateway = gateway
        self.bind = bind
        self.port = port
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash (a wildcard bind is reached on loopback)."""
        host = self.bind
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        return _is_loopback(self.bind)

    def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = _Server(self)
        except OSError as exc:
            raise CollectorError(
                f"operator view: cannot listen on {self.bind}:{self.port}: {exc.strerror or exc}"
            ) from None
        self.port = int(self._server.server_address[1])
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="operator-view", daemon=True
        )
        self._thread.start()
        log.info("operator view on %s/ (stations: %s)", self.url, ", ".join(self.gateway.views.stations()))

    def stop(self) -> None:
        """Stop serving; open pages' event streams end at once (the pages reconnect later)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.join_workers(_STOP_JOIN)
        server.server_close()
        if thread is not None:
            thread.join(_STOP_JOIN)
        self._server = self._thread = None

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


class _Server(ThreadingHTTPServer):
    """A threading server that can end its open connections and join its request threads."""

    daemon_threads = True
    block_on_close = False  # stop() joins the request threads itself, with a deadline
    allow_reuse_address = True

    def __init__(self, view: OperatorView) -> None:
        self.view = view
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        if ":" in view.bind:
            self.address_family = socket.AF_INET6
        super().__init__((view.bind, view.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="operator-view-request",
            daemon=True,
        )
        with self._lock:
            self._connections[thread] = request
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An error outside the handlers' own care: one log line, no traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the connection broke or timed out
            log.debug("operator view: connection from %s ended: %s", client_address, exc)
        else:
            log.exception("operator view: request from %s failed", client_address)

    def close_connections(self) -> None:
        """Shut every open connection down, so that reads and writes on it end now."""
        with self._lock:
            sockets = list(self._connections.values())
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(socket.SHUT_RDWR)

    def join_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._connections)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = [t for t in self._connections if t.is_alive()]
        if stuck:
            log.warning("operator view: %d request(s) still running after stop", len(stuck))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: SSE streams end with it
    server_version = "collector-operator-view"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    # -- logging: one line per failed request, none per request -------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("operator view %s: " + format, self.address_string(), *args)

    def log_error(self, format: str, *args: Any) -> None:
        log.info("operator view %s: " + format, self.address_string(), *args)

    # -- routing ---------------------------------------------------------------------------------
    @property
    def view(self) -> OperatorView:
        return self.server.view

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            self._check_host()
            if path in ("", "/"):
                self._need(method, "GET", "HEAD")
                self._index()
                return
            if path.startswith("/static/operator/"):
                self._need(method, "GET", "HEAD")
                self._static(path.removeprefix("/static/operator/"))
                return
            m = _STATION_PATH.match(path)
            if m is None:
                raise RequestError(HTTPStatus.NOT_FOUND, "not found")
            station, action = unquote(m.group(1)), m.group(2)
            if not self.view.has_station(station):
                raise RequestError(HTTPStatus.NOT_FOUND, f"no station {station!r} on this gateway")
            if action is None:
                self._need(method, "GET", "HEAD")
                self._page(station)
            elif action == "view":
                self._need(method, "GET", "HEAD")
                self._send_json(HTTPStatus.OK, self.view.gateway.views.get(station) or {})
            elif action == "events":
                self._need(method, "GET")
                self._events(station)
            else:
                self._need(method, "POST")
                self._post(station, action)
        except RequestError as exc:
            log.warning("operator view: %s %s -> %d %s", method, path, exc.status, exc.message)
            with contextlib.suppress(OSError):
                allow = {"Allow": exc.allow} if exc.allow else None
                self._send_json(exc.status, {"ok": False, "error": exc.message}, headers=allow)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the browser went away
        except Exception:
            log.exception("operator view: %s %s failed", method, path)
            with contextlib.suppress(OSError):
                self._send_json(
                    HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False, "error": "internal error, see the gateway's log"}
                )

    def _need(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here", ", ".join(allowed))

    def _check_host(self) -> None:
        """A loopback-bound view answers only loopback names (a DNS-rebinding page cannot use it)."""
        if not self.view.loopback_only:
            return
        host = self.headers.get("Host", "")
        if not host:
            return  # not a browser: browsers always name the host
        name = urlsplit(f"//{host}").hostname or ""
        if not _is_loopback(name):
            raise RequestError(HTTPStatus.MISDIRECTED_REQUEST, "this view answers on the loopback address only")

    # -- pages -----------------------------------------------------------------------------------
    def _template(self, name: str, values: dict[str, str]) -> bytes:
        text = _asset(name).decode("utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        return text.encode("utf-8")

    def _index(self) -> None:
        stations = self.view.station_ids()
        if len(stations) == 1:
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", f"/station/{stations[0]}")
            self.send_header("Content-Length", "0")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            return
        items = (
            "\n".join(f'<li><a href="/station/{html.escape(s)}">{html.escape(s)}</a></li>' for s in stations)
            or "<li>no stations configured</li>"
        )
        gateway = html.escape(self.view.gateway.settings.id)
        self._send(
            HTTPStatus.OK,
            "text/html; charset=utf-8",
            self._template("index.html", {"gateway": gateway, "stations": items}),
        )

    def _page(self, station: str) -> None:
        body = self._template(
            "station.html",
            {"station": html.escape(station), "gateway": html.escape(self.view.gateway.settings.id)},
        )
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", body)

    def _static(self, name: str) -> None:
        if not _STATIC_NAME.match(name):
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        try:
            body = _asset(name)
        except (FileNotFoundError, IsADirectoryError):
            raise RequestError(HTTPStatus.NOT_FOUND, "not found") from None
        self._send(HTTPStatus.OK, _STATIC_TYPES[name[name.rindex(".") :]], body)

    # -- live view ---------------------------------------------------------------------------------
    def _events(self, station: str) -> None:
        hub = self.view.gateway.views
        stopping = self.view.stopping
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")  # a reverse proxy must not hold events back
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            view = hub.get(station) or {}
            version = int(view.get("version", 0))
            self._event(view)
            last_write = time.monotonic()
            while not stopping.is_set():
                fresh = hub.wait(station, version, _SLICE)
                if fresh is not None:
                    version = int(fresh.get("version", version))
                    self._event(fresh)
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= KEEPALIVE:
                    self.wfile.write(b": keepalive\n\n")
                    last_write = time.monotonic()
        except (OSError, ValueError):
            pass  # the page went away, or stop() shut the connection: the stream just ends
        self.close_connection = True

    def _event(self, view: dict[str, Any]) -> None:
        data = json.dumps(view, separators=(",", ":"), default=str)
        self.wfile.write(f"id: {view.get('version', 0)}\ndata: {data}\n\n".encode())

    # -- commands ------------------------------------------------------------------------------------
    def _post(self, station: str, action: str) -> None:
        self._check_origin()
        body = self._read_json()
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
        self._send_json(HTTPStatus.OK, result)

    def _check_origin(self) -> None:
        """Commands come from this view's own pages (JSON, same origin), not from another site.

        A cross-site page can send a form or a ``text/plain`` body without asking, but not
        ``application/json``, and the browser names its ``Origin``. Behind a reverse proxy the
        origin is the proxy's, which it names in ``X-Forwarded-Host``.
        """
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)")
        origin = self.headers.get("Origin")
        if origin is None:
            return  # not sent by a browser's cross-site request
        hosts = {self.headers.get("Host", ""), self.headers.get("X-Forwarded-Host", "").split(",")[0].strip()}
        if origin == "null" or urlsplit(origin).netloc.lower() not in {h.lower() for h in hosts if h}:
            raise RequestError(HTTPStatus.FORBIDDEN, "commands are accepted from this view's own pages only")

    def _read_json(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required") from None
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    # -- responses -------------------------------------------------------------------------------------
    def _send_json(self, status: HTTPStatus, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, default=str).encode("utf-8")
        self._send(status, "application/json", data, cache="no-store", headers=headers)

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        *,
        cache: str = "no-cache",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for key, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
