"""The HTTP plumbing that the operator view and the dashboard share.

Both web UIs are small ``http.server`` applications on a shop-floor box with no internet:
a ``ThreadingHTTPServer`` in a daemon thread, assets from ``collector/static/<ui>/``, JSON
answers, Server-Sent Events for the live pages, and the same defences (a loopback-bound
server answers loopback names only, bodies are bounded, a browser's ``Origin`` must be the
server's own). Those parts live here once, so that a fix to one of them (a stream that keeps
``stop()`` waiting, a body without a length, a rebinding ``Host``) is a fix to both.

What differs stays in each UI's module: the routes, and the policies (the dashboard's
sessions, CSRF tokens and roles; the operator view's command argument checks; which
``Host`` and ``Origin`` each accepts, which refusals each logs).

Pages are Jinja2 templates in ``collector/templates/<ui>/`` rendered by one shared
environment (:func:`templates`) with autoescaping on: a value is escaped unless a template
marks it otherwise, so no page depends on an escape placed by hand.

Behind a reverse proxy, the browser's host, scheme and address are the ones a trusted
proxy forwarded (:mod:`collector.forwarded`); from anyone else those headers are ignored.

Over 500 lines because the server, the application's lifecycle and the request handler
with its defences are one piece of plumbing that both UIs subclass; split, each part would
only be read together with the others.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

import jinja2

from collector.errors import CollectorError
from collector.forwarded import Network, Via, via

AppT = TypeVar("AppT")

#: what the static folders may hold, and the types they are served with
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: a static file's name: no folders, no dot files, no pages (those are templates)
STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(css|js|svg)$")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})
STOP_JOIN = 5.0  # seconds stop waits for the request threads, and then for the server's thread


class RequestError(Exception):
    """A request answered with an error status and a short message (never a traceback)."""

    def __init__(self, status: HTTPStatus, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow  # the methods a 405 names in its Allow header


class EndStream(Exception):
    """Raised by an event stream's poll to end the stream after ``last`` (e.g. "signed out")."""

    def __init__(self, last: bytes = b"") -> None:
        super().__init__("end of stream")
        self.last = last


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine (``localhost``, ``127.x``, ``::1``)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(bind: str, port: int) -> str:
    """The URL a server bound to ``bind`` is reached at here (a wildcard bind on loopback)."""
    host = bind
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def same_origin(origin: str, hosts: Iterable[str], scheme: str | None = None) -> bool:
    """Whether a browser's ``Origin`` names one of ``hosts`` (``host[:port]``, any case).

    An opaque origin (``null``: a sandboxed frame, a ``file:`` page) is never the same, and
    an empty host matches nothing (a request without ``Host`` cannot vouch for its origin).
    ``scheme``, when known (``https`` behind a TLS proxy), must be the origin's too.
    """
    origin = origin.strip()
    if origin.lower() == "null":
        return False
    parts = urlsplit(origin)
    if scheme is not None and parts.scheme.lower() != scheme:
        return False
    names = {h.strip().lower() for h in hosts if h.strip()}
    return parts.netloc.lower() in names


def asset(folder: str, name: str) -> bytes:
    """A file of ``collector/static/<folder>/``: package data, so it works from a wheel too."""
    return resources.files("collector").joinpath("static", folder, name).read_bytes()


@functools.cache
def templates() -> jinja2.Environment:
    """The pages' Jinja2 environment: ``collector/templates/``, autoescaped, strict.

    Package data, so it works from a wheel. An undefined name is an error, not an empty
    string (a page that silently drops a value would show a wrong picture). Templates are
    compiled once and kept; the environment is safe to share between request threads.
    """
    return jinja2.Environment(
        loader=jinja2.PackageLoader("collector", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def page(name: str, values: Mapping[str, Any]) -> bytes:
    """The template ``name`` (``dashboard/live.html``) rendered with ``values``, as UTF-8."""
    return templates().get_template(name).render(values).encode("utf-8")


def render(folder: str, name: str, values: Mapping[str, str]) -> bytes:
    """A page of ``collector/static/<folder>/`` with each ``{{key}}`` replaced by its value.

    The values go in as they are: the caller escapes them. Kept for the pages that are not
    templates yet (:func:`page` escapes by itself).
    """
    text = asset(folder, name).decode("utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text.encode("utf-8")


def sse_event(data: Any, *, id: int | str, event: str | None = None, retry: int | None = None) -> bytes:
    """One Server-Sent Event with ``data`` as compact JSON (what the pages' EventSource reads)."""
    body = json.dumps(data, separators=(",", ":"), default=str)
    head = f"retry: {retry}\n" if retry is not None else ""
    head += f"id: {id}\n"
    if event is not None:
        head += f"event: {event}\n"
    return f"{head}data: {body}\n\n".encode()


class Server(ThreadingHTTPServer, Generic[AppT]):
    """A threading HTTP server that can end its open connections and join its request threads.

    ``ThreadingHTTPServer`` alone cannot stop promptly: an open event stream keeps its
    thread writing until the browser goes. :meth:`stop` shuts every connection's socket, so
    its reads and writes fail at once, then waits for the threads with a deadline.
    """

    daemon_threads = True
    block_on_close = False  # stop() joins the request threads itself, with a deadline
    allow_reuse_address = True

    def __init__(
        self,
        app: AppT,
        handler: type[BaseHTTPRequestHandler],
        bind: str,
        port: int,
        *,
        label: str,
        logger: logging.Logger,
        thread_name: str,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.app = app
        self.bind = bind
        self.trusted_proxies = tuple(trusted_proxies)
        self.label = label  # "operator view": the start of its log lines
        self.log = logger
        self.thread_name = thread_name
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        if ":" in bind:
            self.address_family = socket.AF_INET6
        super().__init__((bind, port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{self.thread_name}-request",
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
            self.log.debug("%s: connection from %s ended: %s", self.label, client_address, exc)
        else:
            self.log.exception("%s: request from %s failed", self.label, client_address)

    def close_connections(self) -> None:
        """Shut every open connection down, so that reads and writes on it end now."""
        with self._lock:
            sockets = list(self._connections.values())
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(socket.SHUT_RDWR)

    def join_workers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds in all for the request threads; say which did not end."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._connections)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = sum(t.is_alive() for t in self._connections)
        if stuck:
            self.log.warning("%s: %d request(s) still running after stop", self.label, stuck)

    def stop(self, timeout: float) -> None:
        """Stop serving, end the open connections, wait for them, close the socket."""
        self.shutdown()
        self.close_connections()
        self.join_workers(timeout)
        self.server_close()


class WebApp:
    """A web UI's server in a daemon thread, with the event its streams end on.

    Subclasses name their ``label`` (log lines, errors), ``logger`` and ``thread_name``;
    they call :meth:`start_server` with their request handler and :meth:`stop_server` from
    their own ``start`` and ``stop``, which add what else the UI runs.
    """

    label: ClassVar[str]
    logger: ClassVar[logging.Logger]
    thread_name: ClassVar[str]

    def __init__(self, bind: str, port: int, trusted_proxies: Sequence[Network] = ()) -> None:
        self.bind = bind
        self.port = port  # 0 until started: any free port; then the one it listens on
        #: peers whose forwarded headers are believed (see :func:`via`)
        self.trusted_proxies = tuple(trusted_proxies)
        #: set by stop: the open event streams end on it
        self.stopping = threading.Event()
        self._server: Server[Any] | None = None
        self._server_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash (a wildcard bind is reached on loopback)."""
        return base_url(self.bind, self.port)

    @property
    def loopback_only(self) -> bool:
        """Bound to a loopback address: then only this machine's browser may use it."""
        return is_loopback(self.bind)

    def start_server(self, handler: type[BaseHTTPRequestHandler]) -> bool:
        """Listen and serve from a daemon thread; False when already serving.

        Raises CollectorError (one readable line) when the address cannot be bound.
        """
        if self._server is not None:
            return False
        try:
            server = Server(
                self,
                handler,
                self.bind,
                self.port,
                label=self.label,
                logger=self.logger,
                thread_name=self.thread_name,
                trusted_proxies=self.trusted_proxies,
            )
        except OSError as exc:
            raise CollectorError(
                f"{self.label}: cannot listen on {self.bind}:{self.port}: {exc.strerror or exc}"
            ) from None
        self._server = server
        self.port = int(server.server_address[1])
        self.stopping.clear()
        self._server_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{self.thread_name}-http", daemon=True
        )
        self._server_thread.start()
        return True

    def stop_server(self, timeout: float = STOP_JOIN) -> None:
        """Stop serving; open event streams end at once (their pages reconnect later)."""
        server, thread = self._server, self._server_thread
        if server is None:
            return
        self.stopping.set()
        server.stop(timeout)
        if thread is not None:
            thread.join(timeout)
        self._server = self._server_thread = None


class Handler(BaseHTTPRequestHandler, Generic[AppT]):
    """The request handling both UIs share; a subclass routes in :meth:`route`.

    One request per connection (HTTP/1.0): an event stream ends with its connection, and no
    idle keep-alive connection holds a thread. Nothing is logged per request (``log_message``
    goes to debug); a refused request is one line when its status is at least
    ``log_refused_from``, a fault is one line with its traceback, and the client gets a
    JSON ``{"ok": false, "error": ...}`` without internals. Lines go to the UI's own logger,
    under its label (both from the server), so log settings per UI keep working.
    """

    server: Server[AppT]
    protocol_version = "HTTP/1.0"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    #: refusals with this status or above are logged
    log_refused_from: ClassVar[int] = 0
    #: the answer to a fault: where to look, never what happened
    internal_error: ClassVar[str] = "internal error, see the log"
    #: sent with every page, asset and JSON answer (``send``'s headers may replace one)
    security_headers: ClassVar[Mapping[str, str]] = {}

    _via: Via | None = None

    @property
    def app(self) -> AppT:
        """The UI this request is for (the view, the dashboard)."""
        return self.server.app

    @property
    def via(self) -> Via:
        """Who asked and under which name (a trusted proxy's forwarded headers honoured)."""
        if self._via is None:
            self._via = via(str(self.client_address[0]), self.headers, self.server.trusted_proxies)
        return self._via

    # -- logging: one line per failed request, none per request -------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.debug("%s %s: " + format, self.server.label, self.address_string(), *args)

    def log_error(self, format: str, *args: Any) -> None:
        self.server.log.info("%s %s: " + format, self.server.label, self.address_string(), *args)

    # -- routing --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self.serve("GET")

    def do_HEAD(self) -> None:
        self.serve("HEAD")

    def do_POST(self) -> None:
        self.serve("POST")

    def route(self, method: str, path: str) -> None:
        """Answer the request (raise RequestError to refuse it)."""
        raise NotImplementedError

    def serve(self, method: str) -> None:
        """Route the request and turn what goes wrong into an answer and at most one log line."""
        path = urlsplit(self.path).path
        try:
            self.route(method, path)
        except RequestError as exc:
            if exc.status >= self.log_refused_from:
                self.server.log.warning("%s: %s %s -> %d %s", self.server.label, method, path, exc.status, exc.message)
            with contextlib.suppress(OSError):
                allow = {"Allow": exc.allow} if exc.allow else None
                self.send_json(exc.status, {"ok": False, "error": exc.message}, headers=allow)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the browser went away
        except Exception:
            self.server.log.exception("%s: %s %s failed", self.server.label, method, path)
            with contextlib.suppress(OSError):
                self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False, "error": self.internal_error})

    def need(self, method: str, *allowed: str) -> None:
        """405 (naming the allowed methods) unless ``method`` is one of ``allowed``."""
        if method not in allowed:
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here", ", ".join(allowed))

    # -- checks ---------------------------------------------------------------------------------
    def check_host(self, message: str, *, host_required: bool) -> None:
        """421 when a loopback-bound server is asked under another name.

        A DNS-rebinding page reaches a loopback server under its own name; the browser names
        that in ``Host``. ``host_required``: a request without ``Host`` is refused too (else it
        is let through as not coming from a browser: browsers always send it). A trusted
        proxy that forwarded the browser's host has named the site: the check is its job
        (a page cannot add forwarded headers to a request without the server's consent).
        """
        if not is_loopback(self.server.bind) or self.via.forwarded_host:
            return
        host = self.headers.get("Host", "")
        if not host and not host_required:
            return
        name = urlsplit(f"//{host}").hostname or ""
        if not is_loopback(name):
            raise RequestError(HTTPStatus.MISDIRECTED_REQUEST, message)

    def content_type(self) -> str:
        """The request body's media type, lower case, without parameters ("" when not sent)."""
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def require_type(self, media_type: str, message: str) -> None:
        """415 unless the body is ``media_type``: a cross-site page cannot send JSON unasked."""
        if self.content_type() != media_type:
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, message)

    # -- request bodies ---------------------------------------------------------------------------
    def read_body(self, limit: int, *, optional: bool = False) -> bytes:
        """The request body, at most ``limit`` bytes (413), sent with a Content-Length (411).

        ``optional``: no Content-Length (or an empty one) is no body, and a length outside
        0 to ``limit`` is a 413; otherwise the length must be given and a negative one is a 400.
        """
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        text = self.headers.get("Content-Length", "")
        if optional and not text:
            return b""
        try:
            length = int(text)
        except ValueError:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required") from None
        if length < 0 and not optional:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length < 0 or length > limit:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {limit} bytes")
        return self.rfile.read(length) if length else b""

    def read_json(self, limit: int, *, optional: bool = False) -> dict[str, Any]:
        """The body as a JSON object (400 otherwise); ``optional``: no body reads as ``{}``."""
        raw = self.read_body(limit, optional=optional)
        if optional and not raw:
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    # -- responses --------------------------------------------------------------------------------
    def send(
        self,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        *,
        cache: str = "no-cache",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A whole answer with its length, cache policy and the security headers (no body to HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for key, value in {**self.security_headers, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: HTTPStatus, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        """A JSON answer; never cached (it is live state, or about this one request)."""
        data = json.dumps(body, default=str).encode("utf-8")
        self.send(status, "application/json", data, cache="no-store", headers=headers)

    def redirect(self, location: str, *, cache: str, headers: Mapping[str, str] | None = None) -> None:
        """303 See Other: after a POST, or to the one page there is."""
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", cache)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def send_static(self, folder: str, name: str) -> None:
        """An asset of ``collector/static/<folder>/``; 404 for any other name (no paths)."""
        if not STATIC_NAME.match(name):
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        try:
            body = asset(folder, name)
        except (FileNotFoundError, IsADirectoryError):
            raise RequestError(HTTPStatus.NOT_FOUND, "not found") from None
        self.send(HTTPStatus.OK, STATIC_TYPES[name[name.rindex(".") :]], body)

    # -- Server-Sent Events -----------------------------------------------------------------------
    def stream(
        self,
        first: Callable[[], bytes],
        poll: Callable[[], bytes],
        *,
        stopping: threading.Event,
        keepalive: float,
        cache: str,
    ) -> None:
        """An event stream: ``first()``, then what each ``poll()`` returns, until it ends.

        ``poll`` waits a short while for news and returns the events to send (``b""``: none;
        raise EndStream to end). A comment goes out after ``keepalive`` quiet seconds, so a
        page that went away is noticed by the next write. The stream ends when ``stopping``
        is set (stop() also shuts the socket) or the client is gone; then so does the
        connection.
        """
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", cache)
        self.send_header("X-Accel-Buffering", "no")  # a reverse proxy must not hold events back
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self._write(first())
            last_write = time.monotonic()
            while not stopping.is_set():
                try:
                    data = poll()
                except EndStream as end:
                    if end.last:
                        self._write(end.last)
                    break
                if stopping.is_set():
                    break
                if data:
                    self._write(data)
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= keepalive:
                    self._write(b": keepalive\n\n")
                    last_write = time.monotonic()
        except (OSError, ValueError):
            pass  # the page went away, or stop() shut the connection: the stream just ends
        self.close_connection = True

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
