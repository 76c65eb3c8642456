"""The user register, authentication (lockout, rate limit), sign-in sessions, placeholder secrets."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from collector import cli
from collector import config as config_mod
from collector.config_file import placeholder_problem
from collector.errors import ConfigError
from collector.people.accounts import hash_password, weak_secret_problem
from collector.people.authentication import WRONG, AuthenticationFailed, Authenticator, Sessions
from collector.people.register import Person, Role, UserRegister


def cheap(secret: str) -> str:
    """A hash tests can check in microseconds (the real cost is in the hash string)."""
    return hash_password(secret, n=2**4, r=1, p=1)


OLGA, QUENTIN, OTTO = cheap("2468"), cheap("quality-pw"), cheap("1357")
REGISTER = f"""
users:
  - id: op-42
    name: Olga Petrova
    badge: "4711-0042"
    roles: [inspector]
    secret_hash: "{OLGA}"
    qualifications:
      - {{plan: HX-4711, expires: 2026-12-31}}
  - id: qe-7
    name: Quentin Eder
    roles: [quality, supervisor]
    secret_hash: "{QUENTIN}"
    qualifications:
      - {{plan: "*", expires: 2027-06-30, note: general inspection training}}
  - id: old-1
    name: Otto Left
    roles: [inspector]
    secret_hash: "{OTTO}"
    disabled: true
"""


def register() -> UserRegister:
    return config_mod.parse_register(REGISTER, "people.yaml")


# -- the register ----------------------------------------------------------------------------------
def test_people_are_found_by_badge_or_id() -> None:
    reg = register()
    olga = reg.find("4711-0042")
    assert olga is not None and olga.id == "op-42" and olga.roles == (Role.INSPECTOR,)
    assert reg.find("op-42") is olga and reg.get("4711-0042") is None
    assert reg.find("nobody") is None
    assert "secret_hash" not in repr(olga)  # hashes stay out of log lines and tracebacks


@pytest.mark.parametrize(
    ("change", "where", "reason"),
    [
        (("id: qe-7", "id: op-42"), "(top level)", "user id(s) op-42 appear more than once"),
        (("roles: [quality, supervisor]", "roles: [quality, boss]"), "line 12: users[1].roles[1]", "Input should be"),
        (("roles: [inspector]\n    secret_hash", "roles: []\n    secret_hash"), "users[0].roles", "at least 1"),
        ((f'"{OTTO}"', '"changeme"'), "line 19: users[2].secret_hash", "not a password hash made by"),
        ((f'"{OTTO}"', '"scrypt$n=16384,r=8,p=5$..."'), "users[2].secret_hash", "not a password hash made by"),
        (("name: Olga Petrova", 'name: "Olga\\nPetrova"'), "line 4: users[0].name", "should match pattern"),
        (("    disabled: true", "    disabled: true\n    shoe_size: 44"), "users[2].shoe_size", "unknown field"),
        (("expires: 2026-12-31", "expires: soon"), "users[0].qualifications[0].expires", "valid date"),
    ],
)
def test_an_invalid_register_names_file_line_field_and_reason(change: tuple[str, str], where: str, reason: str) -> None:
    text = REGISTER.replace(*change)
    assert text != REGISTER
    with pytest.raises(ConfigError) as caught:
        config_mod.parse_register(text, "/etc/inspection-collector/people.yaml")
    message = caught.value.format()
    assert message.startswith("/etc/inspection-collector/people.yaml: invalid configuration"), message
    assert where in message and reason in message, message


def test_a_badge_that_is_someone_elses_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="badge 'qe-7' is the user id of qe-7"):
        config_mod.parse_register(REGISTER.replace('badge: "4711-0042"', "badge: qe-7"), "people.yaml")


def test_a_gateway_configuration_loads_its_register_or_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    people = tmp_path / "people.yaml"
    people.write_text(REGISTER)
    site = tmp_path / "gateway.yaml"
    site.write_text(f"gateway: {{id: gw-1, site: s, line: l, people: {{register: {people}}}}}\n")
    cfg = config_mod.load(site)
    assert cfg.register is not None and [u.id for u in cfg.register.users] == ["op-42", "qe-7", "old-1"]
    assert cfg.gateway is not None and cfg.gateway.people is not None
    # the floor: re-measure, invalidate and dispose always need the signer's secret
    site.write_text(
        f"gateway: {{id: gw-1, site: s, line: l, people: {{register: {people}, secret_required: [abandon]}}}}\n"
    )
    assert set(config_mod.load(site).gateway.people.secret_required) == {  # type: ignore[union-attr]
        "abandon",
        "remeasure",
        "invalidate",
        "dispose",
    }
    people.write_text(REGISTER.replace("roles: [inspector]\n    secret_hash", "roles: [cook]\n    secret_hash", 1))
    assert cli.main(["check-config", str(site)]) == 2
    err = capsys.readouterr().err
    assert f"{people}: line 6: users[0].roles[0]" in err
    people.unlink()
    assert cli.main(["check-config", str(site)]) == 2
    assert "cannot read the user register" in capsys.readouterr().err


def test_qualifications_with_their_expiry() -> None:
    reg = register()
    olga, quentin, otto = (reg.get(u) for u in ("op-42", "qe-7", "old-1"))
    assert olga is not None and quentin is not None and otto is not None
    day = dt.date(2026, 12, 31)
    assert olga.qualification_problem("HX-4711", day) is None  # valid through its expiry day
    assert olga.qualification_problem("HX-4711", day + dt.timedelta(days=1)) == (
        "op-42's qualification for HX-4711 expired on 2026-12-31"
    )
    assert olga.qualification_problem("PF-220", day) == "op-42 (Olga Petrova) has no qualification for PF-220"
    assert quentin.qualification_problem("PF-220", day) is None  # "*": every plan
    assert otto.qualification_problem("HX-4711", day) == "old-1 is disabled in the user register"


# -- authentication ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_secret_authenticates_its_person_and_repeated_failures_lock_out() -> None:
    clock = Clock()
    checked: list[str] = []
    reg = register()

    def verify(secret: str, stored: str) -> bool:
        checked.append(secret)
        from collector.people.accounts import verify_password

        return verify_password(secret, stored)

    auth = Authenticator(reg, max_failures=3, lockout=60, checks_per_second=100, burst=100, clock=clock, verify=verify)
    assert auth.authenticate("4711-0042", "2468").id == "op-42"  # the badge
    assert auth.authenticate("op-42", "2468").id == "op-42"  # or the typed id
    for _ in range(2):
        with pytest.raises(AuthenticationFailed) as caught:
            auth.authenticate("op-42", "1111")
        assert str(caught.value) == WRONG and caught.value.detail == "wrong secret"
    with pytest.raises(AuthenticationFailed, match="locked for 60 s") as caught:
        auth.authenticate("4711-0042", "1112")  # the third, by badge: the same person
    assert caught.value.detail == "wrong secret, now locked out"
    before = len(checked)
    with pytest.raises(AuthenticationFailed, match="too many wrong PINs/passwords for op-42"):
        auth.authenticate("op-42", "2468")  # even the right PIN: locked, and not even checked
    assert len(checked) == before
    clock.now += 61
    assert auth.authenticate("op-42", "2468").id == "op-42"
    with pytest.raises(AuthenticationFailed) as caught:
        auth.authenticate("nobody", "2468")
    assert str(caught.value) == WRONG and caught.value.detail == "unknown user or badge"
    with pytest.raises(AuthenticationFailed, match="old-1 may not sign: disabled"):
        auth.authenticate("old-1", "1357")
    assert "2468" not in repr(auth.__dict__)  # no secret is kept


def test_the_gateway_checks_a_bounded_number_of_secrets_per_second() -> None:
    clock = Clock()
    auth = Authenticator(register(), checks_per_second=2, burst=3, max_failures=100, clock=clock)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed, match=WRONG):
            auth.authenticate("qe-7", "guess")
    with pytest.raises(AuthenticationFailed, match="too many sign-in attempts at this gateway"):
        auth.authenticate("qe-7", "quality-pw")
    assert auth.rate_limited == 1
    clock.now += 0.5  # one check's worth
    assert auth.authenticate("qe-7", "quality-pw").id == "qe-7"


def test_sessions_are_bound_to_a_station_and_end_when_idle_or_replaced() -> None:
    clock = Clock()
    sessions = Sessions(idle_timeout=100, max_sessions=3, clock=clock)
    olga = register().get("op-42")
    quentin = register().get("qe-7")
    assert olga is not None and quentin is not None
    token = sessions.open("st-10", olga)
    found = sessions.get(token, "st-10")
    assert found is not None and found.person.id == "op-42"
    assert sessions.get(token, "st-20") is None  # another station's screen
    assert sessions.get("forged", "st-10") is None and sessions.get(None, "st-10") is None
    clock.now += 99
    assert sessions.get(token, "st-10") is not None  # use keeps it alive
    clock.now += 101
    assert sessions.get(token, "st-10") is None  # idle too long
    first = sessions.open("st-10", olga)
    second = sessions.open("st-10", quentin)  # someone else signs in at the station
    assert sessions.get(first, "st-10") is None and sessions.get(second, "st-10") is not None
    for station in ("st-20", "st-30", "st-40"):
        sessions.open(station, olga)
    assert len(sessions) == 3 and sessions.get(second, "st-10") is None  # bounded: the oldest goes


def test_a_register_person_needs_a_role() -> None:
    with pytest.raises(ValueError, match="a role is listed twice"):
        Person(id="a", name="A", roles=(Role.INSPECTOR, Role.INSPECTOR), secret_hash=cheap("9876"))


# -- secrets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["changeme", "CHANGE-ME", "change_me_please", "", "  ", "password", "<secret>"])
def test_placeholder_secrets_are_refused(value: str) -> None:
    assert placeholder_problem(value) is not None


@pytest.mark.parametrize("value", ["s3cret-9f2k", "pw-gw1", "x"])
def test_real_secrets_pass(value: str) -> None:
    assert placeholder_problem(value) is None


def test_a_daemon_refuses_to_start_with_a_placeholder_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("changeme\n")  # as an installer's example leaves it
    site = tmp_path / "recorder.yaml"
    site.write_text(f"mqtt: {{username: recorder-1, password: {{file: {secret}}}}}\n")
    assert cli.main(["check-config", str(site)]) == 2
    err = capsys.readouterr().err
    assert "line 1: mqtt.password: the secret is a placeholder: put the real secret there" in err
    assert "changeme" not in err  # even a placeholder is not echoed


@pytest.mark.parametrize(
    ("secret", "problem"),
    [("1234", "too easy"), ("0000", "too easy"), ("12", "at least 4"), ("changeme", "placeholder"), ("7391", None)],
)
def test_trivial_pins_are_not_hashed(secret: str, problem: str | None) -> None:
    found = weak_secret_problem(secret)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_hash_password_refuses_trivial_pins_and_makes_a_hash_the_register_takes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("1234\n"))
    assert cli.main(["hash-password", "--stdin"]) == 2
    assert "too easy to guess" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("7391\n"))
    assert cli.main(["hash-password", "--stdin"]) == 0
    made = capsys.readouterr().out.strip()
    person = Person(id="op-1", name="O", roles=(Role.INSPECTOR,), secret_hash=made)
    auth = Authenticator(UserRegister(users=(person,)))
    assert auth.authenticate("op-1", "7391").id == "op-1"


def test_an_operator_fixed_in_the_configuration_is_a_user_id() -> None:
    """Records carry the operator as a user id: the configuration refuses what a recorder would."""
    bad = "stations: [{id: st-1, plan: P, part: {part_number: P, operator: 'Olga P.\\nshift 2'}}]"
    with pytest.raises(ConfigError, match=r"stations\[0\]\.part\.operator: String should match pattern"):
        config_mod.parse(bad, "site.yaml")
