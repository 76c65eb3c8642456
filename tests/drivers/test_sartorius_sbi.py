"""What is particular to SBI, against the balance simulator over a real pty (no mocks).

The contract every driver keeps is in test_contract.py (16-character request and
22-character push set-ups).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import pytest

from drivers import registry
from drivers.base import DriverError, EventKind, ReadingStatus
from drivers.serial.sartorius_sbi import SartoriusConfig, SartoriusDriver
from simulators.sartorius import SartoriusSimulator, Scenario, format_frame

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector, MakeDriver, PlugSim

REPO = Path(__file__).resolve().parents[2]
MakeBalance = Callable[..., SartoriusSimulator]


@pytest.fixture
def make_balance(plug_sim: PlugSim) -> MakeBalance:
    return lambda scenario=None, **kw: plug_sim(SartoriusSimulator, scenario or Scenario(interval=0.01, seed=7), **kw)


def scale(make_driver: MakeDriver, **settings: Any) -> SartoriusDriver:
    drv = make_driver("sartorius-sbi", **settings)
    assert isinstance(drv, SartoriusDriver)
    return drv


# -- registry and configuration -----------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = registry.parse_config({"id": "s1", "driver": "sartorius-sbi", "port": "/dev/ttyUSB0"})
    assert isinstance(cfg, SartoriusConfig)
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits) == (9600, 7, "O", 1)
    assert (cfg.frame, cfg.mode, cfg.poll_interval, cfg.channel) == ("auto", "request", None, "weight")


def test_config_accepts_other_models_settings() -> None:
    raw = {"baudrate": 19200, "bytesize": 8, "parity": "N", "frame": 22, "mode": "push"}
    cfg = registry.parse_config({"id": "s1", "driver": "sartorius-sbi", "port": "p", **raw})
    assert isinstance(cfg, SartoriusConfig)
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.frame, cfg.mode) == (19200, 8, "N", "22", "push")


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "push", "poll_interval": 1.0},
        {"frame": 20},
        {"frame": "sixteen"},
        {"mode": "auto"},
        {"bytesize": 6},
        {"parity": "X"},
        {"command_suffix": "\n"},
        {"response_timeout": 0},
        {"plus_sign": "-"},
        {"identifiers": "N"},
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({"id": "s1", "driver": "sartorius-sbi", "port": "/dev/ttyUSB0", **bad})


# -- request mode -------------------------------------------------------------------------------


def test_22_character_frames_give_the_identifier_as_channel(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(identifier="N", noise=0.0, nominal=Decimal("-1.50")))
    sim.start()
    drv = scale(make_driver, mode="push", frame=22)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert reading.raw == b"N     -     1.50 g  \r\n"
    assert (reading.channel, str(reading.value), reading.unit) == ("N", "-1.50", "g")
    sim.send_garbage(format_frame(Decimal("2.00"), "g", 2))  # a 16-character frame where 22 are configured
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert "expected 22 characters" in bad.detail


def test_commands_reach_the_balance(make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector) -> None:
    sim = make_balance(Scenario(noise=0.0, nominal=Decimal("100.00")))
    sim.start()
    drv = scale(make_driver, mode="push", response_timeout=0.05)
    collector.wait_events(EventKind.CONNECTED)
    for command in ("tare", "zero", "tare_zero", "calibrate"):
        drv.request(command)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert sim.commands == ["U", "V", "T", "Z", "P"]
    assert reading.value == Decimal("0.00")  # zeroed, so the load reads nothing
    # commands are not answered; only the ESC P may arm a timeout, and it was answered
    time.sleep(0.15)
    assert not collector.events(EventKind.TIMEOUT)
    with pytest.raises(DriverError):
        drv.request("print")


def test_command_suffix_is_sent(make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector) -> None:
    sim = make_balance()
    sim.start()
    drv = scale(make_driver, mode="push", command_suffix="\r\n")
    assert drv.command("read") == b"\x1bP\r\n"
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    collector.wait_readings(1)
    assert sim.commands == ["P"]


# -- push mode, stability, special texts ---------------------------------------------------------


def test_settling_is_unstable_with_the_value_kept(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(noise=0.0, settle_frames=2))
    sim.start()
    scale(make_driver, poll_interval=0.01)
    collector.wait_readings(1)
    sim.put_load(Decimal("42.10"))
    collector.wait_for(lambda c: any(r.value == Decimal("42.10") and r.unit for r in c.readings()), what="settled")
    after = [r for r in collector.readings() if r.value == Decimal("42.10")]
    assert [r.status for r in after[:3]] == [ReadingStatus.UNSTABLE, ReadingStatus.UNSTABLE, ReadingStatus.OK]
    assert [r.unit for r in after[:3]] == [None, None, "g"]
    assert after[0].raw == b"+    42.10    \r\n"


@pytest.mark.parametrize(
    ("text", "identifier", "error"),
    [
        ("H", None, "H (overload)"),
        ("LL", None, "LL (underload during checkweighing)"),
        ("C", None, "C (calibration/adjustment)"),
        ("Err 123", None, "Err 123 (balance error)"),
        ("High", "N", "High (overload)"),
        ("ERR 54", "N", "ERR 54 (balance error)"),
    ],
)
def test_special_and_error_codes_are_errors_never_numbers(
    make_driver: MakeDriver,
    make_balance: MakeBalance,
    collector: Collector,
    text: str,
    identifier: str | None,
    error: str,
) -> None:
    sim = make_balance(Scenario(noise=0.0, identifier=identifier))
    sim.start()
    drv = scale(make_driver, mode="push")
    collector.wait_events(EventKind.CONNECTED)
    sim.show_special(text)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert (reading.status, reading.value, reading.unit, reading.error) == (ReadingStatus.ERROR, None, None, error)
    assert reading.raw == sim.sent_frames[0] and len(reading.raw) == (22 if identifier else 16)
    assert reading.channel == "weight"  # the ID code Stat names a status string, not a channel
    sim.show_special(None)
    drv.request("read")
    assert collector.wait_readings(2)[1].value == Decimal("100.00")


# -- faults -------------------------------------------------------------------------------------


def test_frames_outside_the_layout_are_bad_frames(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(noise=0.0))
    scale(make_driver, mode="push", frame=16)
    collector.wait_events(EventKind.CONNECTED)
    truncated = sim.send_truncated()
    wrong = [
        b"+    1x.00 g  \r\n",
        b"+    1234 g  \r\n",  # 12.34 that lost its decimal point: fifteen characters
        b"+   012.34 g  \r\n",  # a blank turned into a zero
        b"     12.34 g  \r\n",  # a lost minus, where the balance writes + for plus
        b"+    12.34  g \r\n",  # the unit not left-aligned
        b"+    12.34 xy \r\n",  # no unit symbol of the manual
        b"+    12.3  g  \r\n",  # the last digit blanked
    ]
    for frame in wrong:
        sim.send_garbage(frame)
    sim.send_value(Decimal("2.00"))
    (reading,) = collector.wait_readings(1)
    bad = collector.wait_events(EventKind.BAD_FRAME, 1 + len(wrong))
    assert reading.raw == b"+     2.00 g  \r\n"
    assert [e.raw for e in bad] == [truncated, *wrong]


def test_a_space_for_plus_where_the_balance_writes_one(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(noise=0.0, plus=" "))
    scale(make_driver, mode="push", plus_sign=" ")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("12.34"))
    sim.send_value(Decimal("-12.34"))
    sim.send_garbage(b"+    12.34 g  \r\n")
    readings = collector.wait_readings(2)
    assert [r.raw for r in readings] == [b"     12.34 g  \r\n", b"-    12.34 g  \r\n"]
    assert [str(r.value) for r in readings] == ["12.34", "-12.34"]
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert "not ' ' or '-'" in bad.detail


def test_only_the_configured_identifiers_are_channels(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(identifier="N", noise=0.0))
    scale(make_driver, mode="push", frame=22, identifiers=["N", "G#"])
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("1.00"))
    sim.send_garbage(b"X     +     1.00 g  \r\n")
    (reading,) = collector.wait_readings(1)
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert reading.channel == "N" and "ID code 'X'" in bad.detail
