"""The dashboard's access control without a browser or a broker: password hashes, sessions
and their expiry and cap per user, roles, the sign-in throttle against guessing, flooding and
lock-outs, the CSRF checks, and forwarded headers from trusted proxies only."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from email.message import Message

import pydantic
import pytest

from collector import forwarded
from collector.dashboard.auth import Auth, SignInBusy, csrf_problem, may_acknowledge, safe_next
from collector.dashboard.throttle import Throttle, source_of
from collector.people.accounts import DashboardSettings, DashboardUser, hash_password, verify_password
from tests.unit.dashboard_helpers import Clock, cheap_hash, users

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
    with pytest.raises(ValueError, match="an empty password cannot be hashed"):
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


def test_sign_in_makes_a_random_session_that_expires(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    auth = Auth(users(), ttl=60, clock=clock)
    caplog.set_level(logging.INFO, "collector.dashboard")
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
    caplog.set_level(logging.INFO, "collector.dashboard")
    assert auth.login("sam", "guess-1", "10.0.0.9") is None
    assert auth.login("mallory", "guess-2", "10.0.0.9") is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dashboard: failed sign-in for 'sam' from 10.0.0.9",
        "dashboard: failed sign-in for unknown user 'mallory' from 10.0.0.9",
    ]
    assert "guess" not in caplog.text


def test_logout_ends_the_session_and_roles_decide_who_acknowledges() -> None:
    auth = Auth(users(), ttl=60)
    session = auth.login("vera", "vera-pw")
    assert session is not None and session.role == "viewer"
    assert auth.logout(session.token) is session
    assert auth.session(session.token) is None
    assert may_acknowledge("supervisor")
    assert not may_acknowledge("viewer") and not may_acknowledge("")


def test_the_session_cap_is_per_user_so_one_account_cannot_end_anothers_sessions() -> None:
    clock = Clock()
    auth = Auth(users(), ttl=60, clock=clock)
    sam = auth.create("sam", "supervisor")
    # the attack: a viewer's account signs in over and over (a global cap evicted the oldest of all)
    first_vera = auth.create("vera", "viewer")
    for _ in range(Auth.MAX_SESSIONS_PER_USER * 5):
        clock.now += 0.001
        auth.create("vera", "viewer")
    assert auth.session(sam.token) is sam  # the supervisor is still signed in
    assert auth.count("vera") == Auth.MAX_SESSIONS_PER_USER  # the store is bounded per user
    assert auth.count() == Auth.MAX_SESSIONS_PER_USER + 1
    assert auth.session(first_vera.token) is None  # vera's own oldest gave way


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


# -- the sign-in throttle ----------------------------------------------------------------------------


class Sleeper:
    """Stands in for waiting: records each delay and moves the clock on by it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.now += seconds


def throttled_auth() -> tuple[Auth, Clock, Sleeper]:
    clock = Clock()
    sleeper = Sleeper(clock)
    return Auth(users(), ttl=3600, clock=clock, sleep=sleeper), clock, sleeper


def test_a_guesser_is_slowed_down_and_the_right_password_still_gets_in() -> None:
    auth, _, sleeper = throttled_auth()
    free = auth.throttle.free_per_user
    for _ in range(free):
        assert auth.login("sam", "guess", "10.0.0.9") is None
    assert sleeper.slept == []  # a few typos cost nothing
    for _ in range(7):
        assert auth.login("sam", "guess", "10.0.0.9") is None
    assert sleeper.slept == [1, 2, 4, 8, 16, 30, 30]  # doubling, up to max_delay
    # the old throttle refused every attempt here, the right password too: a lockout anyone
    # could cause by typing wrong passwords under someone's name. Now it waits, then checks.
    session = auth.login("sam", "sam-pw", "10.0.0.9")
    assert session is not None and session.user == "sam"
    assert sleeper.slept[-1] == 30
    sleeper.slept.clear()
    assert auth.login("sam", "guess", "10.0.0.9") is None  # success cleared the count
    assert sleeper.slept == []


def test_a_guesser_elsewhere_does_not_slow_the_user_down() -> None:
    auth, _, sleeper = throttled_auth()
    for _ in range(12):
        auth.login("sam", "guess", "10.0.0.9")
    sleeper.slept.clear()
    assert auth.login("sam", "sam-pw", "10.0.0.5") is not None
    assert auth.login("vera", "vera-pw", "10.0.0.6") is not None
    assert sleeper.slept == []


def test_spraying_one_password_over_many_names_slows_the_source_down() -> None:
    throttle = Throttle(clock=Clock())
    for i in range(throttle.free_per_source):
        attempt = throttle.begin("10.0.0.66", f"user-{i}", known=False)
        assert attempt is not None and attempt.delay == 0
        throttle.end(attempt, ok=False)
    attempt = throttle.begin("10.0.0.66", "sam", known=True)  # a real user's first failure from there
    assert attempt is not None and attempt.delay == 1
    throttle.end(attempt, ok=True)  # still checked, and the right password signs in
    other = throttle.begin("10.0.0.67", "sam", known=True)
    assert other is not None and other.delay == 0


def test_a_flood_of_unknown_names_neither_resets_nor_evicts_a_users_throttle() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock, max_sources=100, max_sources_per_user=100)
    for _ in range(throttle.free_per_user + 3):
        attempt = throttle.begin("10.0.0.9", "sam", known=True)
        assert attempt is not None
        throttle.end(attempt, ok=False)
    # the old store of failures was cleared whole past 10,000 keys: inventing names reset it
    for i in range(20_000):
        attempt = throttle.begin(f"10.1.{i // 250}.{i % 250}", f"nobody-{i}", known=False)
        assert attempt is not None
        throttle.end(attempt, ok=False)
    attempt = throttle.begin("10.0.0.9", "sam", known=True)
    assert attempt is not None and attempt.failures == throttle.free_per_user + 3 and attempt.delay == 8
    sizes = throttle.sizes()
    assert sizes["unknown"] <= 100 and sizes["sources"] <= 100 and sizes["users"] == 1  # bounded
    throttle.end(attempt, ok=False)


def test_one_attempt_at_a_time_per_name_and_address() -> None:
    auth, _, _ = throttled_auth()
    under_way = auth.throttle.begin(source_of("10.0.0.9"), "sam", known=True)
    assert under_way is not None
    with pytest.raises(SignInBusy):
        auth.login("sam", "sam-pw", "10.0.0.9")
    assert auth.login("sam", "sam-pw", "10.0.0.5") is not None  # another address: its own turn
    auth.throttle.end(under_way, ok=False)
    assert auth.login("sam", "sam-pw", "10.0.0.9") is not None


def test_attempts_under_way_are_bounded_per_source_and_overall_but_not_for_known_browsers() -> None:
    throttle = Throttle(clock=Clock(), max_waiting=10, max_waiting_per_source=3, max_waiting_per_device_user=2)
    flood = [throttle.begin("10.0.0.66", f"name-{i}", known=False) for i in range(3)]
    assert all(a is not None for a in flood)
    assert throttle.begin("10.0.0.66", "sam", known=True) is None  # the source has enough under way
    elsewhere = [throttle.begin(f"10.0.1.{i}", "vera", known=True) for i in range(7)]
    assert all(a is not None for a in elsewhere)
    assert throttle.begin("10.0.2.1", "sam", known=True) is None  # ten under way in all
    # a browser that signed in before has its own allowance (per user, so no one else can use it up)
    devices = [throttle.begin("10.0.0.66", "sam", known=True, device=f"sam|d{i}") for i in range(3)]
    assert devices[0] is not None and devices[1] is not None and devices[2] is None
    for attempt in [*flood, *elsewhere, *devices]:
        if attempt is not None:
            throttle.end(attempt, ok=False)
    again = throttle.begin("10.0.0.66", "sam", known=True)
    assert again is not None  # all released
    throttle.end(again, ok=True)


def test_unknown_names_are_throttled_exactly_like_users() -> None:
    """Neither the delays nor "busy" may tell a guesser which names exist."""
    throttle = Throttle(clock=Clock())
    for name, known in (("sam", True), ("mallory", False)):
        delays = []
        for _ in range(throttle.free_per_user + 3):
            attempt = throttle.begin("10.0.0.9", name, known=known)
            assert attempt is not None
            assert throttle.begin("10.0.0.9", name, known=known) is None  # busy either way
            delays.append(attempt.delay)
            throttle.end(attempt, ok=False)
        assert delays == [0, 0, 0, 0, 0, 1, 2, 4], name


def test_a_browser_that_signed_in_before_is_not_slowed_by_a_guesser_behind_the_same_address() -> None:
    auth, _, sleeper = throttled_auth()
    session = auth.login("sam", "sam-pw", "10.0.0.9")
    assert session is not None
    device = auth.device_token("sam")  # the dashboard sets it as a cookie after this sign-in
    for _ in range(12):  # someone at the same address (the plant's NAT) guesses sam's password
        auth.login("sam", "guess", "10.0.0.9")
    under_way = auth.throttle.begin(source_of("10.0.0.9"), "sam", known=True)  # and keeps one going
    sleeper.slept.clear()
    assert auth.login("sam", "sam-pw", "10.0.0.9", device) is not None
    assert sleeper.slept == []
    # the cookie counts for sam only, and a forged one for nobody
    assert auth.device_id(device, "sam") is not None
    assert auth.device_id(device, "vera") is None
    assert auth.device_id(device[:-1] + ("0" if device[-1] != "0" else "1"), "sam") is None
    with pytest.raises(SignInBusy):
        auth.login("sam", "sam-pw", "10.0.0.9", "forged.cookie")
    assert under_way is not None
    auth.throttle.end(under_way, ok=False)


def test_failure_log_lines_thin_out_under_a_flood(caplog: pytest.LogCaptureFixture) -> None:
    auth, _, _ = throttled_auth()
    caplog.set_level(logging.INFO, "collector.dashboard")
    for _ in range(40):
        auth.login("sam", "guess", "10.0.0.9")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 + 3  # each of the free ones, then at the 8th, 16th and 32nd failure
    assert lines[-1] == "dashboard: failed sign-in for 'sam' from 10.0.0.9 (32 recent failures, delayed 30 s)"
    assert "guess" not in caplog.text


def test_ipv6_sources_count_per_64() -> None:
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::7") == "2001:db8:1:2::/64"
    assert source_of("::ffff:10.0.0.9") == "10.0.0.9"
    assert source_of("10.0.0.9") == "10.0.0.9"


# -- forwarded headers, from trusted proxies only ----------------------------------------------------


def headers(**values: str) -> Message[str, str]:
    m: Message[str, str] = Message()
    for key, value in values.items():
        m[key.replace("_", "-")] = value
    return m


PROXY = forwarded.networks(["127.0.0.1", "10.9.0.0/16"])


def test_forwarded_headers_from_anyone_else_are_ignored() -> None:
    h = headers(Host="127.0.0.1:8080", X_Forwarded_Host="evil.example", X_Forwarded_For="10.0.0.1")
    assert forwarded.via("10.0.0.77", h, PROXY) == forwarded.Via("10.0.0.77", "127.0.0.1:8080", "http", False)
    assert forwarded.via("127.0.0.1", h, ()) == forwarded.Via("127.0.0.1", "127.0.0.1:8080", "http", False)


def test_x_forwarded_headers_from_a_trusted_proxy() -> None:
    h = headers(
        Host="127.0.0.1:8080",
        X_Forwarded_Host="dash.plant.example",
        X_Forwarded_Proto="https",
        X_Forwarded_For="6.6.6.6, 10.1.1.1, 10.9.0.2",  # a forged entry, the client, an inner proxy
    )
    assert forwarded.via("127.0.0.1", h, PROXY) == forwarded.Via("10.1.1.1", "dash.plant.example", "https", True)


def test_rfc7239_forwarded_from_a_trusted_proxy() -> None:
    h = headers(
        Host="127.0.0.1:8080",
        Forwarded='for=6.6.6.6;host=evil.example, for="[2001:db8::17]:4711";host="dash.plant.example:8443";proto=https',
    )
    expected = forwarded.Via("2001:db8::17", "dash.plant.example:8443", "https", True)
    assert forwarded.via("127.0.0.1", h, PROXY) == expected
    bad = headers(Host="127.0.0.1:8080", Forwarded='for="unterminated;host=x')
    assert forwarded.via("127.0.0.1", bad, PROXY) == forwarded.Via("127.0.0.1", "127.0.0.1:8080", "http", False)
    odd = headers(Host="127.0.0.1:8080", X_Forwarded_Host="evil.example/path@x", X_Forwarded_Proto="gopher")
    assert forwarded.via("127.0.0.1", odd, PROXY) == forwarded.Via("127.0.0.1", "127.0.0.1:8080", "http", False)


def test_trusted_proxies_are_validated() -> None:
    assert DashboardSettings(trusted_proxies=["127.0.0.1", "10.9.0.0/16", "::1"]).trusted_proxies
    with pytest.raises(pydantic.ValidationError, match="not an IP address or network"):
        DashboardSettings(trusted_proxies=["proxy.plant.example"])


def test_csrf_origin_against_the_forwarded_host_and_scheme() -> None:
    h = {"Host": "127.0.0.1:8080", "Origin": "https://dash.plant.example"}
    assert csrf_problem(h, None) == "request from another origin refused"  # what broke behind a proxy
    assert csrf_problem(h, None, host="dash.plant.example", scheme="https") is None
    assert csrf_problem(h, None, host="dash.plant.example", scheme="http") is not None


def test_sessions_are_thread_safe_under_concurrent_sign_ins() -> None:
    auth = Auth(users(), ttl=60)
    barrier = threading.Barrier(4)

    def many() -> None:
        barrier.wait()
        for _ in range(50):
            auth.create("vera", "viewer")

    threads = [threading.Thread(target=many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert auth.count("vera") == Auth.MAX_SESSIONS_PER_USER
