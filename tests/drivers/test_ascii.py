"""What is particular to the generic ASCII line driver, against the instrument simulator over a pty.

The shipped Sylvac and Ohaus samples are run against the simulator's presets (written from
those instruments' manuals) here and in the contract suite (test_contract.py), so a sample
that stops matching its instrument fails.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import pytest

from drivers import registry
from drivers.base import DriverError, EventKind, ReadingStatus
from drivers.serial.ascii import AsciiLineConfig, AsciiLineDriver
from simulators.ascii_line import OHAUS, SYLVAC, AsciiLineSimulator, Instrument, Scenario
from tests.drivers.cases import PTY_LINE, sample

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector, MakeDriver, PlugSim

REPO = Path(__file__).resolve().parents[2]
MakeInstrument = Callable[..., AsciiLineSimulator]


def example(name: str) -> dict[str, Any]:
    """The first device of drivers/serial/ascii/sample-<name>.yaml, without what make_driver fills in."""
    return {**sample("ascii", f"sample-{name}.yaml"), **PTY_LINE}


@pytest.fixture
def make_instrument(plug_sim: PlugSim) -> MakeInstrument:
    def make(instrument: Instrument = SYLVAC, scenario: Scenario | None = None, **kw: Any) -> AsciiLineSimulator:
        return plug_sim(AsciiLineSimulator, instrument, scenario or Scenario(interval=0.01, seed=7), **kw)

    return make


def line_driver(make_driver: MakeDriver, **settings: Any) -> AsciiLineDriver:
    drv = make_driver("ascii", **settings)
    assert isinstance(drv, AsciiLineDriver)
    return drv


# -- registry and configuration -----------------------------------------------------------------


ANY = r"(?P<value>[0-9]+)"


def test_config_defaults() -> None:
    cfg = registry.parse_config({"id": "a", "driver": "ascii", "port": "/dev/ttyUSB0", "pattern": ANY})
    assert isinstance(cfg, AsciiLineConfig)
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits, cfg.terminator) == (9600, 8, "N", 1, "\r")
    assert cfg.request is None and cfg.unit is None and not cfg.decimal_comma


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ({"pattern": "(?P<value>[0-9"}, "pattern", "not a valid regular expression"),
        ({"pattern": r"\d+"}, "pattern", "named group 'value'"),
        ({"pattern": r"(?P<value>\d+) (?P<units>\w+)"}, "pattern", "unknown named groups ['units']"),
        ({"pattern": r"(?P<stable>S)?(?P<unstable>D)?(?P<value>\d+)"}, "pattern", "not both"),
        ({"error_pattern": "E("}, "error_pattern", "not a valid regular expression"),
        ({"ignore_pattern": "[OK"}, "ignore_pattern", "not a valid regular expression"),
        ({"stable_when": "S"}, None, "stable_when needs a named group 'stable'"),
        ({"poll_interval": 1.0}, None, "poll_interval needs a request"),
        ({"request": ""}, "request", "must not be empty"),
        ({"request": "µ\r"}, "request", "ASCII"),
        ({"commands": {"read": "?\r"}}, "commands", "'read' is the request string"),
        ({"unit": " "}, "unit", "blank"),
        ({"bytesize": 6}, "bytesize", ""),
        ({"parity": "M"}, "parity", ""),
        ({"stopbits": 3}, "stopbits", ""),
        ({"terminator": "\r\r"}, "terminator", ""),
        ({"pattern": None}, "pattern", ""),  # there is no default: the instrument's layout is needed
    ],
)
def test_config_errors_name_the_field(bad: dict[str, object], field: str | None, message: str) -> None:
    raw = {"id": "a", "driver": "ascii", "port": "/dev/ttyUSB0", "pattern": ANY, **bad}
    with pytest.raises(pydantic.ValidationError) as info:
        registry.parse_config({k: v for k, v in raw.items() if v is not None})
    (error,) = info.value.errors()
    if field is not None:
        assert error["loc"][0] == field
    assert message in error["msg"]


# -- the shipped configurations against their instruments --------------------------------------


def test_ohaus_config_reads_stable_and_unstable_values(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(OHAUS, Scenario(nominal=Decimal("250.00"), noise=1.0, unstable_rate=0.4, seed=4))
    sim.start()
    drv = line_driver(make_driver, **{**example("ohaus"), "poll_interval": 0.01})
    collector.wait_readings(20)
    drv.stop()
    readings = collector.readings()
    sent = sim.sent[: len(readings)]
    assert [r.value for r in readings] == [s.value for s in sent]
    assert [r.status for r in readings] == [
        ReadingStatus.OK if s.kind == "value" else ReadingStatus.UNSTABLE for s in sent
    ]
    assert {ReadingStatus.OK, ReadingStatus.UNSTABLE} == {r.status for r in readings}
    assert {(r.channel, r.unit) for r in readings} == {("weight", "g")}
    assert all(r.raw.endswith(b"\r\n") for r in readings)
    assert set(sim.commands) == {"IP"}


def test_ohaus_commands_ok_is_ignored_and_es_is_an_error(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(OHAUS, Scenario(noise=0.0))
    sim.start()
    settings = {k: v for k, v in example("ohaus").items() if k != "poll_interval"}
    settings["commands"] = {**settings["commands"], "bogus": "XX\r\n"}
    drv = line_driver(make_driver, **settings)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("zero")
    drv.request("tare")
    drv.request("bogus")
    (error,) = collector.wait_readings(1)
    assert (error.status, error.value, error.error, error.raw) == (ReadingStatus.ERROR, None, "ES", b"ES\r\n")
    assert sim.commands == ["Z", "T", "XX"]
    assert [s.data for s in sim.sent] == [b"OK!\r\n", b"OK!\r\n", b"ES\r\n"]
    drv.request("read")
    assert collector.wait_readings(2)[1].value == Decimal("12.34")  # 12.345 shown with two decimals
    assert not collector.events(EventKind.BAD_FRAME)
    with pytest.raises(DriverError, match="configured: read, bogus, print_stable, tare, zero"):
        drv.request("calibrate")


def test_error_state_reads_become_error_readings(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(SYLVAC)
    sim.start()
    drv = line_driver(make_driver, **{**example("sylvac"), "poll_interval": None})
    collector.wait_events(EventKind.CONNECTED)
    sim.set_error("ERR3")  # Sylvac: measuring range exceeded
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert (reading.status, reading.value, reading.unit, reading.error) == (ReadingStatus.ERROR, None, None, "ERR3")
    sim.set_error(None)
    drv.request("read")
    assert collector.wait_readings(2)[1].status is ReadingStatus.OK


# -- other line formats -------------------------------------------------------------------------


def test_push_mode_with_decimal_comma(
    no_thread_leaks: None, make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    inst = Instrument(template="M1 {value} {unit}", unit="mm", decimals=3, decimal_comma=True)
    sim = make_instrument(inst, Scenario(noise=0.5, interval=0.005, seed=8), mode="push")
    line_driver(make_driver, pattern=r"M(?P<channel>\d) (?P<value>\S+) (?P<unit>\w+)", decimal_comma=True)
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(20)
    sim.stop()
    readings = collector.wait_readings(len(sim.sent_values))
    assert [r.value for r in readings] == sim.sent_values
    assert b"," in readings[0].raw
    assert {(r.channel, r.unit) for r in readings} == {("1", "mm")}


def test_stable_when_compares_the_stable_group(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    inst = Instrument(template="S {mark} {value} g", decimals=2, stable_mark="S", unstable_mark="D", sign="negative")
    sim = make_instrument(inst, Scenario(noise=0.0), mode="push")  # not started: sends only on demand
    pattern = r"S (?P<stable>[SD]) +(?P<value>-?\d+\.\d+) (?P<unit>g)"
    line_driver(make_driver, pattern=pattern, stable_when="S")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("1.00"), stable=True)
    sim.send_value(Decimal("-2.00"), stable=False)
    readings = collector.wait_readings(2)
    assert [r.raw for r in readings] == [b"S S 1.00 g\r", b"S D -2.00 g\r"]
    assert [r.status for r in readings] == [ReadingStatus.OK, ReadingStatus.UNSTABLE]
    assert [r.value for r in readings] == [Decimal("1.00"), Decimal("-2.00")]


# -- requests -----------------------------------------------------------------------------------


def test_request_without_request_string_is_refused(make_driver: MakeDriver) -> None:
    drv = line_driver(make_driver, start=False, pattern=ANY)
    with pytest.raises(DriverError, match="no request string"):
        drv.request("read")


def test_an_acknowledgement_does_not_answer_a_pending_read(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(OHAUS)
    sim.start()
    sim.go_silent(True)
    settings = {k: v for k, v in example("ohaus").items() if k != "poll_interval"}
    drv = line_driver(make_driver, **{**settings, "response_timeout": 0.1})
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")  # armed before request() returns
    sim.send_line("OK!")  # the acknowledgement of some earlier command arrives meanwhile
    collector.wait_events(EventKind.TIMEOUT)
    assert not collector.readings() and not collector.events(EventKind.BAD_FRAME)
