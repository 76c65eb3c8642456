"""InfluxDB through its v1 HTTP API (``/write`` and ``/query``), with nothing but http.client.

The v1 API is what Debian's and Raspberry Pi OS's InfluxDB 1.x speak, and ``/query``
(InfluxQL) is also what InfluxDB 2.x (through a database/retention-policy mapping) and
3.x answer, so :class:`InfluxHttp` is shared with :mod:`collector.store.influx_v2`.

Connections are kept alive and pooled: the recorder writes thousands of batches per
minute, and a new TCP (or TLS) connection per batch would cost more than the write. A
pooled connection the server has meanwhile closed is replaced and the request sent once
more, which is safe because writes are idempotent (same series and timestamp) and queries
read only. Credentials travel in the ``Authorization`` header, never in the URL, so they
cannot end up in a server's access log, an exception message or :attr:`description`.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from collector.errors import StoreError
from collector.store.base import Row, Store, quote_ident

#: bodies at least this large are sent gzip-compressed: line protocol compresses about
#: tenfold, which matters on a site link, while small batches are not worth the CPU
DEFAULT_GZIP_MIN_BYTES = 64 * 1024
#: rows per chunk of a chunked query: bounds the memory one chunk takes
DEFAULT_CHUNK_SIZE = 10_000
#: how much of a server's error text goes into an exception message
_ERROR_TEXT_LIMIT = 500

# A keep-alive connection the server closed while it sat in the pool shows up as one of
# these on the next request; the request is sent again on a fresh connection.
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


def retryable_status(status: int) -> bool:
    """Whether a request refused with ``status`` may succeed when sent again unchanged.

    A 5xx is the server's trouble; 408 and 429 ask the client to come back later. Any
    other 4xx is a problem with the request itself (bad line protocol, unknown database,
    wrong credentials) that repetition cannot fix.
    """
    return status >= 500 or status in (408, 429)


def server_message(body: bytes) -> str:
    """The error text of an InfluxDB response (1.x ``error``, 2.x/3.x ``message``)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                text = doc[key]
                break
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[:_ERROR_TEXT_LIMIT] + "..."
    return text


class InfluxHttp:
    """A pool of keep-alive HTTP(S) connections to one InfluxDB server.

    Thread-safe: each request takes a connection from the pool (or opens one) and gives
    it back once its response has been read to the end.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        authorization: str | None = None,
        max_idle: int = 4,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"InfluxDB URL must start with http:// or https://, got {parts.scheme!r}")
        if parts.username is not None or parts.password is not None:
            # Not echoed: the URL holds the secret.
            raise ValueError("the InfluxDB URL must not contain credentials; configure them separately")
        if not parts.hostname:
            raise ValueError("the InfluxDB URL has no host")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self._authorization = authorization
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        """The server's URL, safe to log."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"

    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def release(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        """Give ``conn`` back after ``resp`` was read to the end (or close it)."""
        if resp.will_close or not resp.isclosed():
            conn.close()
            return
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def open(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        what: str = "request",
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request and return once the response headers are in.

        The caller reads the body and then calls :meth:`release` (or closes the
        connection when it stops early). Connection problems raise a retryable
        :class:`StoreError`.
        """
        target = self.base_path + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        all_headers = dict(headers or {})
        if self._authorization is not None:
            all_headers["Authorization"] = self._authorization
        while True:
            conn, reused = self._acquire()
            try:
                conn.request(method, target, body=body, headers=all_headers)
                return conn, conn.getresponse()
            except _STALE_CONNECTION as exc:
                conn.close()
                if reused:
                    continue
                raise StoreError(f"{what} to {self.url} failed: {exc!r}", retryable=True) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise StoreError(f"{what} to {self.url} failed: {exc!r}", retryable=True) from exc

    def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        what: str = "request",
    ) -> tuple[int, bytes]:
        """A whole request: status and body."""
        conn, resp = self.open(method, path, params, body, headers, what=what)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise StoreError(f"{what} to {self.url}: reading the response failed: {exc!r}") from exc
        self.release(conn, resp)
        return resp.status, data

    def iter_query(self, params: Mapping[str, str], influxql: str, *, what: str = "query") -> Iterator[Row]:
        """Run InfluxQL on ``/query`` and stream the rows of its (chunked) JSON answer.

        ``params`` are the URL parameters (db, rp, epoch, chunked, ...); the statement
        goes in a form body, which InfluxDB 1.x requires for statements that change
        anything and which keeps long statements out of URLs and access logs.
        """
        body = urllib.parse.urlencode({"q": influxql}).encode("utf-8")
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        conn, resp = self.open("POST", "/query", params, body, headers, what=what)
        finished = False
        try:
            if resp.status != 200:
                data = resp.read()
                finished = True
                raise StoreError(
                    f"{what} refused by {self.url} (HTTP {resp.status}): {server_message(data)}",
                    retryable=retryable_status(resp.status),
                    status=resp.status,
                )
            # A chunked answer is one JSON document per line, each at most chunk_size
            # rows; an unchunked one (a server that ignores the flag) is a single line.
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise StoreError(f"{what} to {self.url}: the answer broke off: {exc!r}") from exc
                if not line:
                    finished = True
                    break
                if line.strip():
                    yield from _rows(line, what, self.url)
        finally:
            if finished:
                self.release(conn, resp)
            else:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _rows(line: bytes, what: str, url: str) -> Iterator[Row]:
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise StoreError(f"{what} to {url}: the answer is not JSON: {line[:200]!r}", retryable=False) from exc
    if not isinstance(doc, dict):
        raise StoreError(f"{what} to {url}: unexpected answer {line[:200]!r}", retryable=False)
    if "error" in doc:
        raise StoreError(f"{what} failed: {doc['error']}", retryable=False)
    for result in doc.get("results") or ():
        if "error" in result:
            raise StoreError(f"{what} failed: {result['error']}", retryable=False)
        for series in result.get("series") or ():
            name = series.get("name")
            tags: dict[str, Any] = series.get("tags") or {}
            columns: list[str] = series.get("columns") or []
            for values in series.get("values") or ():
                row: Row = {"measurement": name}
                row.update(tags)
                row.update(zip(columns, values, strict=False))
                yield row


class InfluxV1Store(Store):
    """A database (and optionally a retention policy) on InfluxDB 1.x, via its HTTP API."""

    def __init__(
        self,
        url: str,
        database: str,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        *,
        gzip_min_bytes: int | None = DEFAULT_GZIP_MIN_BYTES,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        authorization = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            authorization = f"Basic {token}"
        self._http = InfluxHttp(url, timeout=timeout, authorization=authorization)
        self.database = database
        self.retention_policy = retention_policy or None
        self.gzip_min_bytes = gzip_min_bytes
        self.chunk_size = chunk_size
        rp = f" rp={self.retention_policy}" if self.retention_policy else ""
        self.description = f"influxdb-v1 {self._http.url} db={database}{rp}"

    def _params(self) -> dict[str, str]:
        params = {"db": self.database}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        return params

    def ensure_database(self) -> None:
        try:
            self._statement(f"CREATE DATABASE {quote_ident(self.database)}")
        except StoreError as exc:
            # A user with write access but no admin rights may not create databases;
            # the database may exist all the same, which a read on it shows.
            if exc.status not in (401, 403) and "privilege" not in str(exc):
                raise
            self._statement("SHOW MEASUREMENTS LIMIT 1")
        if self.retention_policy:
            rows = self.query(f"SHOW RETENTION POLICIES ON {quote_ident(self.database)}")
            if not any(r.get("name") == self.retention_policy for r in rows):
                raise StoreError(
                    f"{self.description}: retention policy {self.retention_policy!r} does not exist "
                    f"(CREATE RETENTION POLICY ... ON {quote_ident(self.database)})",
                    retryable=False,
                )

    def _statement(self, influxql: str) -> None:
        for _ in self._http.iter_query(self._params(), influxql, what=f"{self.description}: query"):
            pass

    def write_lines(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip_min_bytes is not None and len(body) >= self.gzip_min_bytes:
            # Level 1: most of the size gain for a fraction of the CPU of the default.
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        params = self._params()
        params["precision"] = "u"
        status, data = self._http.call("POST", "/write", params, body, headers, what=f"{self.description}: write")
        if 200 <= status < 300:
            return
        raise StoreError(
            f"{self.description}: write of {len(lines)} lines refused (HTTP {status}): {server_message(data)}",
            retryable=retryable_status(status),
            status=status,
        )

    def iter_query(self, influxql: str) -> Iterator[Row]:
        params = self._params()
        params.update(epoch="u", chunked="true", chunk_size=str(self.chunk_size))
        return self._http.iter_query(params, influxql, what=f"{self.description}: query")

    def close(self) -> None:
        self._http.close()
