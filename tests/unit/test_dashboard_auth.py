"""The dashboard's access control and live state, without a browser or a broker: password
hashes, sessions and their expiry, roles, the CSRF checks (also over real HTTP), shifts,
and what the state makes of status, alert and record messages."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import pytest

from collector.config import Config, MqttSettings
from collector.dashboard.app import (
    Auth,
    Dashboard,
    DashboardSettings,
    DashboardUser,
    LiveState,
    SeqSet,
    csrf_problem,
    hash_password,
    may_acknowledge,
    safe_next,
    shift_at,
    verify_password,
)
from collector.store.base import Row, Store

CHEAP = {"n": 2**8, "r": 8, "p": 1}  # the stored parameters are used to verify: fast tests


def cheap_hash(password: str) -> str:
    return hash_password(password, **CHEAP)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- passwords ---------------------------------------------------------------------------------


def test_a_hash_carries_its_salt_and_cost_and_verifies_only_its_password() -> None:
    stored = hash_password("correct horse")
    scheme, params, salt, digest = stored.split("$")
    assert (scheme, params) == ("scrypt", "n=16384,r=8,p=5")
    assert salt and digest and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert not verify_password("", stored)
    assert hash_password("correct horse") != stored  # a fresh salt every time


def test_verification_uses_the_parameters_in_the_hash() -> None:
    stored = cheap_hash("pw")
    assert stored.startswith("scrypt$n=256,r=8,p=1$")
    assert verify_password("pw", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "pw",
        "scrypt$n=16384,r=8,p=5$c2FsdA$",
        "scrypt$n=1000,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # n not a power of two
        "scrypt$n=4194304,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # a cost that would stall the server
        "bcrypt$2b$12$abcdefghijklmnopqrstuv",
    ],
)
def test_malformed_hashes_never_verify_and_are_refused_in_the_configuration(stored: str) -> None:
    assert not verify_password("pw", stored)
    with pytest.raises(pydantic.ValidationError, match="collector hash-password"):
        DashboardUser(name="sam", role="supervisor", password_hash=stored)


def test_an_empty_password_is_not_hashed() -> None:
    with pytest.raises(ValueError):
        hash_password("")


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_validation() -> None:
    s = DashboardSettings()
    assert (s.bind, s.port, s.session_ttl) == ("127.0.0.1", 8080, 8 * 3600)
    assert s.shift_starts == [dt.time(6), dt.time(14), dt.time(22)]
    user = {"name": "sam", "role": "supervisor", "password_hash": cheap_hash("pw")}
    with pytest.raises(pydantic.ValidationError, match="more than once"):
        DashboardSettings(users=[user, user])
    with pytest.raises(pydantic.ValidationError, match="unknown time zone"):
        DashboardSettings(shift_timezone="Mars/Olympus")
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        DashboardSettings.model_validate({"sesion_ttl": 5})
    with pytest.raises(pydantic.ValidationError):
        DashboardUser.model_validate({**user, "role": "admin"})
    parsed = DashboardSettings.model_validate({"shift_starts": ["22:00", "06:00"], "users": [user]})
    assert parsed.shift_starts == [dt.time(6), dt.time(22)]
    with pytest.raises(pydantic.ValidationError):
        parsed.port = 1  # type: ignore[misc]


# -- sessions and roles --------------------------------------------------------------------------


def users() -> list[DashboardUser]:
    return [
        DashboardUser(name="sam", role="supervisor", password_hash=cheap_hash("sam-pw")),
        DashboardUser(name="vera", role="viewer", password_hash=cheap_hash("vera-pw")),
    ]


def test_sign_in_makes_a_random_session_that_expires(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    auth = Auth(users(), ttl=60, clock=clock)
    caplog.set_level(logging.INFO, "collector.dashboard.app")
    s1 = auth.login("sam", "sam-pw", "10.0.0.5")
    s2 = auth.login("sam", "sam-pw", "10.0.0.5")
    assert s1 is not None and s2 is not None
    assert (s1.user, s1.role) == ("sam", "supervisor")
    assert s1.token != s2.token and s1.csrf != s2.csrf and len(s1.token) >= 40
    assert auth.session(s1.token) is s1
    clock.now += 59.9
    assert auth.session(s1.token) is s1
    clock.now += 0.1
    assert auth.session(s1.token) is None and auth.session(s2.token) is None
    assert auth.count() == 0  # expired sessions are forgotten
    assert auth.session(None) is None and auth.session("") is None and auth.session("forged") is None
    assert "sam signed in (supervisor) from 10.0.0.5" in caplog.text
    assert "sam-pw" not in caplog.text


def test_a_failed_sign_in_is_one_line_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    auth = Auth(users(), ttl=60)
    caplog.set_level(logging.INFO, "collector.dashboard.app")
    assert auth.login("sam", "guess-1", "10.0.0.9") is None
    assert auth.login("mallory", "guess-2", "10.0.0.9") is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dashboard: failed sign-in for 'sam' from 10.0.0.9",
        "dashboard: failed sign-in for unknown user 'mallory' from 10.0.0.9",
    ]
    assert "guess" not in caplog.text


def test_repeated_failures_for_a_name_from_one_address_are_throttled_for_a_while() -> None:
    clock = Clock()
    auth = Auth(users(), ttl=60, clock=clock)
    for _ in range(Auth.FAILURES_ALLOWED):
        assert not auth.throttled("10.0.0.9", "sam")
        auth.login("sam", "wrong", "10.0.0.9")
    assert auth.throttled("10.0.0.9", "sam")
    assert not auth.throttled("10.0.0.10", "sam")  # another address is not affected
    assert not auth.throttled("10.0.0.9", "vera")  # nor another user behind the same proxy
    clock.now += Auth.FAILURE_WINDOW + 1
    assert not auth.throttled("10.0.0.9", "sam")


def test_logout_ends_the_session_and_roles_decide_who_acknowledges() -> None:
    auth = Auth(users(), ttl=60)
    session = auth.login("vera", "vera-pw")
    assert session is not None and session.role == "viewer"
    assert auth.logout(session.token) is session
    assert auth.session(session.token) is None
    assert may_acknowledge("supervisor")
    assert not may_acknowledge("viewer") and not may_acknowledge("")


def test_the_session_store_is_bounded() -> None:
    clock = Clock()
    auth = Auth(users(), ttl=60, clock=clock)
    first = auth.create("sam", "supervisor")
    for _ in range(Auth.MAX_SESSIONS):
        clock.now += 0.001
        auth.create("sam", "supervisor")
    assert auth.count() == Auth.MAX_SESSIONS
    assert auth.session(first.token) is None  # the oldest gave way


# -- CSRF ----------------------------------------------------------------------------------------


def test_csrf_checks() -> None:
    auth = Auth(users(), ttl=60)
    session = auth.create("sam", "supervisor")
    host = {"Host": "127.0.0.1:8080"}
    token = {"X-CSRF-Token": session.csrf}
    # the sign-in form: no session yet, the browser's own headers decide
    assert csrf_problem({**host, "Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}, None) is None
    assert csrf_problem(host, None) is None  # a client that sends neither header
    assert csrf_problem({**host, "Origin": "http://evil.example"}, None) == "request from another origin refused"
    assert csrf_problem({**host, "Origin": "null"}, None) is not None
    assert csrf_problem({**host, "Sec-Fetch-Site": "cross-site"}, None) is not None
    assert csrf_problem({**host, "Sec-Fetch-Site": "same-site"}, None) is not None  # another port or subdomain
    # a signed-in POST also needs the session's token
    assert csrf_problem({**host, **token, "Origin": "http://127.0.0.1:8080"}, session) is None
    assert csrf_problem({**host, "origin": "http://127.0.0.1:8080", "x-csrf-token": session.csrf}, session) is None
    assert csrf_problem({**host, "Origin": "http://127.0.0.1:8080"}, session) == "missing or wrong CSRF token"
    assert csrf_problem({**host, "X-CSRF-Token": session.csrf[:-1] + "x"}, session) == "missing or wrong CSRF token"
    assert csrf_problem(host, session, form_token=session.csrf) is None  # the sign-out form
    assert csrf_problem({**host, **token, "Origin": "http://evil.example"}, session) is not None
    assert csrf_problem({**host, **token, "Sec-Fetch-Site": "cross-site"}, session) is not None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("/trace?serial=A1", "/trace?serial=A1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
    ],
)
def test_after_sign_in_only_local_paths(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


# -- shifts --------------------------------------------------------------------------------------

STARTS = [dt.time(6), dt.time(14), dt.time(22)]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def test_shifts_in_utc_including_the_night_shift_over_midnight() -> None:
    zone = ZoneInfo("UTC")
    s = shift_at(utc(2026, 11, 21, 10, 30), STARTS, zone)
    assert (s.start, s.end, s.label) == (utc(2026, 11, 21, 6), utc(2026, 11, 21, 14), "06:00–14:00")
    s = shift_at(utc(2026, 11, 21, 14, 0), STARTS, zone)
    assert s.start == utc(2026, 11, 21, 14)  # the boundary belongs to the new shift
    s = shift_at(utc(2026, 11, 22, 1, 15), STARTS, zone)
    assert (s.start, s.end, s.label) == (utc(2026, 11, 21, 22), utc(2026, 11, 22, 6), "22:00–06:00")
    assert s.contains_us(int(utc(2026, 11, 21, 23).timestamp() * 1e6))
    assert not s.contains_us(s.end_us)


def test_shifts_in_a_zone_with_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    winter = shift_at(utc(2026, 1, 15, 6, 0), STARTS, berlin)  # 07:00 in Berlin
    assert winter.start == utc(2026, 1, 15, 5) and winter.label == "06:00–14:00"
    summer = shift_at(utc(2026, 7, 15, 6, 0), STARTS, berlin)  # 08:00 in Berlin
    assert summer.start == utc(2026, 7, 15, 4)
    # the night of the spring change is an hour shorter
    night = shift_at(utc(2026, 3, 29, 0, 30), STARTS, berlin)
    assert night.end - night.start == dt.timedelta(hours=7)


# -- the live state ------------------------------------------------------------------------------

NOW = utc(2026, 11, 21, 10, 0).timestamp()


def state(clock: Clock | None = None, **settings: Any) -> LiveState:
    return LiveState(DashboardSettings(shift_timezone="UTC", **settings), clock or Clock(NOW))


def at(minutes: float) -> str:
    t = dt.datetime.fromtimestamp(NOW + minutes * 60, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(seq: int, minutes: float = 0, **fields: Any) -> dict[str, Any]:
    base = {
        "kind": "measurement",
        "id": f"r{seq}",
        "gateway": "gw-1",
        "seq": seq,
        "recorded_at": at(minutes),
        "serial": "SN1",
        "characteristic": "D1",
        "judged_value": "12.001",
        "unit": "mm",
        "verdict": "pass",
    }
    return {**base, **fields}


def alert(record_id: str, minutes: float = 0, kind: str = "out_of_tolerance") -> dict[str, Any]:
    return {
        "kind": kind,
        "severity": "critical",
        "record_id": record_id,
        "gateway": "gw-1",
        "seq": 1,
        "site": "s",
        "line": "l",
        "station": "st-10",
        "serial": "SN1",
        "characteristic": "D1",
        "judged_value": "12.035",
        "lsl": "11.980",
        "usl": "12.020",
        "unit": "mm",
        "limit": "upper",
        "at": at(minutes),
    }


def stations(s: LiveState) -> dict[str, dict[str, Any]]:
    return {st["station"]: st for st in s.snapshot()[1]["stations"]}


def test_a_gateways_last_will_takes_all_its_stations_offline() -> None:
    s = state()
    s.on_gateway_status("gw-1", {"state": "online", "site": "s", "line": "l", "stations": ["st-10", "st-20"]})
    s.on_station_status("s", "l", "st-10", {"state": "online", "gateway": "gw-1", "station": "st-10"})
    s.on_station_status("s", "l", "st-20", {"state": "online", "gateway": "gw-1", "station": "st-20"})
    assert {k: v["state"] for k, v in stations(s).items()} == {"st-10": "online", "st-20": "online"}
    # the broker publishes the will: only the gateway's topic changes, the stations' stay "online"
    s.on_gateway_status(
        "gw-1",
        {"state": "offline", "site": "s", "line": "l", "stations": ["st-10", "st-20"], "reason": "connection lost"},
    )
    seen = stations(s)
    assert {k: v["state"] for k, v in seen.items()} == {"st-10": "offline", "st-20": "offline"}
    assert seen["st-10"]["reason"] == "connection lost"
    s.on_gateway_status("gw-1", {"state": "online", "site": "s", "line": "l", "stations": ["st-10", "st-20"]})
    assert stations(s)["st-20"]["state"] == "online"


def test_counts_per_shift_count_each_record_once_and_only_in_the_shift() -> None:
    s = state(records_per_station=3)
    s.on_records("s", "l", "st-10", [record(1), record(2, verdict="fail"), record(3, kind="part", verdict="reject")])
    s.on_records("s", "l", "st-10", [record(2, verdict="fail")])  # redelivered (at least once)
    s.on_records("s", "l", "st-10", [record(4, minutes=-300)])  # from the previous shift (a backlog)
    s.on_alert(alert("r2"))
    s.on_alert(alert("r2"), retained=True)  # the retained copy after a reconnect
    s.on_alert(alert("r2", kind="trend"))  # a second alert about the same value
    s.on_alert(alert("r0", minutes=-300))  # raised in the previous shift
    st = stations(s)["st-10"]
    assert st["counts"] == {"records": 3, "fails": 1, "alerts": 2}
    assert [r["id"] for r in st["records"]] == ["r4", "r3", "r2"]  # the newest first, at most 3
    # newest first; alerts of one moment (one value) with the latest arrival on top
    assert [a["key"] for a in s.snapshot()[1]["alerts"]] == ["r2:trend", "r2:out_of_tolerance", "r0:out_of_tolerance"]


def test_a_new_shift_starts_the_counts_again() -> None:
    clock = Clock(NOW)
    s = state(clock)
    s.on_records("s", "l", "st-10", [record(1, verdict="fail")])
    assert stations(s)["st-10"]["counts"]["fails"] == 1
    clock.now = utc(2026, 11, 21, 14, 0, 1).timestamp()
    s.tick()
    snap = s.snapshot()[1]
    assert snap["shift"]["label"] == "14:00–22:00"
    assert stations(s)["st-10"]["counts"] == {"records": 0, "fails": 0, "alerts": 0}


def test_an_acknowledgement_record_marks_the_alert_on_every_page() -> None:
    s = state()
    s.on_alert(alert("r9"))
    seq = s.hub.seq
    audit = {
        "kind": "audit",
        "id": "a1",
        "gateway": "gw-1",
        "seq": 10,
        "recorded_at": at(1),
        "event": "alert_ack",
        "by": "sam",
        "subject": "r9",
        "detail": "alert acknowledged: probe contaminated",
    }
    s.on_records("s", "l", "st-10", [audit])
    (only,) = s.snapshot()[1]["alerts"]
    assert only["ack"] == {"by": "sam", "comment": "probe contaminated", "at": at(1), "record": "a1"}
    got = s.hub.wait(seq, 0)
    assert got is not None
    assert any(b"event: ack" in e and b"probe contaminated" in e for e in got[1])
    # an alert that arrives after its acknowledgement (a retained one) shows it at once
    s.on_alert(alert("r9", kind="trend"), retained=True)
    assert all(a["ack"] is not None for a in s.snapshot()[1]["alerts"])


def test_the_event_ring_tells_a_slow_reader_to_start_over() -> None:
    s = state()
    seq, _ = s.snapshot()
    for i in range(2100):
        s.on_alert(alert(f"r{i}"))
    assert s.hub.wait(seq, 0) is None
    latest = s.hub.seq
    assert s.hub.wait(latest, 0) == (latest, [])


def test_seqset() -> None:
    seen = SeqSet()
    assert all(seen.add(i) for i in (1, 2, 3, 7, 5, 6, 4))
    assert len(seen) == 1
    assert not seen.add(5) and not seen.add(1)
    assert seen.add(10) and len(seen) == 2


# -- over HTTP, without a browser and without a broker ------------------------------------------------


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
    """Requests as a page of the dashboard would send them (or a forger would)."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash
        self.cookie = ""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.dash.port, timeout=10)
        try:
            h = {"Host": f"127.0.0.1:{self.dash.port}", **(headers or {})}
            if self.cookie:
                h["Cookie"] = self.cookie
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def login(self, name: str, password: str) -> int:
        form = urllib.parse.urlencode({"name": name, "password": password, "next": "/"}).encode()
        status, headers, _ = self.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
        if "set-cookie" in headers:
            self.cookie = headers["set-cookie"].split(";", 1)[0]
        return status

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
    status, headers, _ = client.request(
        "POST",
        "/login",
        urllib.parse.urlencode({"name": "sam", "password": "sam-pw"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert cookie.startswith(dashboard.cookie_name + "=")
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


def test_messages_and_acknowledgements_of_retained_alerts_from_the_store() -> None:
    audit = {
        "kind": "audit",
        "id": "a1",
        "recorded_at": at(1),
        "event": "alert_ack",
        "by": "sam",
        "subject": "r9",
        "detail": "alert acknowledged: done",
    }

    class AuditStore(EmptyStore):
        def __init__(self) -> None:
            self.queries: list[str] = []

        def iter_query(self, influxql: str) -> Iterator[Row]:
            self.queries.append(influxql)
            return iter([{"payload": "not json"}, {"payload": json.dumps(audit)}])

    store = AuditStore()
    dash = Dashboard(Config(mqtt=MqttSettings(port=closed_port())), DashboardSettings(shift_timezone="UTC"), store)
    try:
        dash.handle_message("qc/s/l/st-10/alert", json.dumps(alert("r9")).encode(), retained=True)
        dash.handle_message("qc/s/l/st-10/alert", b"{broken")  # counted, not fatal
        dash.handle_message("qc/s/l/st-10/record", b"\n".join(json.dumps(record(i)).encode() for i in (1, 2)))
        dash.handle_message("qc/gateways/gw-1/status", json.dumps({"state": "online"}).encode())
        dash.handle_message("other/s/l/st-10/alert", json.dumps(alert("x1")).encode())  # another prefix
        dash.load_earlier_acks()
        assert len(store.queries) == 1 and "\"kind\" = 'audit'" in store.queries[0]
        (only,) = dash.state.snapshot()[1]["alerts"]
        assert only["retained"] and only["ack"]["by"] == "sam" and only["ack"]["comment"] == "done"
        assert dash.state.malformed == 1
        assert [r["id"] for r in dash.state.snapshot()[1]["stations"][0]["records"]] == ["r2", "r1"]
    finally:
        dash.stop()
