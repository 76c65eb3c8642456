"""The generic ASCII line driver against the configurable instrument simulator, over a real pty.

The shipped Sylvac and Ohaus configurations are run against the simulator's presets, so an
example config that stops matching its instrument fails here.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import pytest
import yaml

from drivers import registry
from drivers.base import DriverError, EventKind, ReadingStatus
from drivers.serial.ascii_line import AsciiLineConfig, AsciiLineDriver
from drivers.serial.port import LinkDown
from simulators import ascii_line as sim_module
from simulators.ascii_line import OHAUS, SYLVAC, AsciiLineSimulator, Instrument, Scenario
from tests.helpers import wait_for

if TYPE_CHECKING:
    from conftest import Collector, MakeDriver

REPO = Path(__file__).resolve().parents[2]
MakeInstrument = Callable[..., AsciiLineSimulator]


def example(name: str) -> dict[str, Any]:
    """The first device of config/devices/<name>.yaml, without what make_driver fills in."""
    doc = yaml.safe_load((REPO / "config" / "devices" / f"{name}.yaml").read_text(encoding="utf-8"))
    device = dict(doc["devices"][0])
    for key in ("id", "driver", "port", "gauge", "reconnect_min", "reconnect_max"):
        device.pop(key, None)
    return device


@pytest.fixture
def make_instrument(link_path: Path) -> Iterator[MakeInstrument]:
    sims: list[AsciiLineSimulator] = []

    def make(instrument: Instrument = SYLVAC, scenario: Scenario | None = None, **kwargs: Any) -> AsciiLineSimulator:
        sim = AsciiLineSimulator(link_path, instrument, scenario or Scenario(interval=0.01, seed=7), **kwargs)
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.close()


def line_driver(make_driver: MakeDriver, **settings: Any) -> AsciiLineDriver:
    drv = make_driver("ascii", **settings)
    assert isinstance(drv, AsciiLineDriver)
    return drv


# -- registry and configuration -----------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert registry.get("ascii") is AsciiLineDriver
    assert "ascii" in registry.names()


def test_config_defaults() -> None:
    cfg = registry.parse_config({"id": "a", "driver": "ascii", "port": "/dev/ttyUSB0"})
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
        ({"colour": "red"}, "colour", ""),
    ],
)
def test_config_errors_name_the_field(bad: dict[str, object], field: str | None, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        registry.parse_config({"id": "a", "driver": "ascii", "port": "/dev/ttyUSB0", **bad})
    (error,) = info.value.errors()
    if field is not None:
        assert error["loc"][0] == field
    assert message in error["msg"]


@pytest.mark.parametrize("name", ["ascii", "sylvac", "ohaus"])
def test_example_config_files_are_valid(name: str) -> None:
    doc = yaml.safe_load((REPO / "config" / "devices" / f"{name}.yaml").read_text(encoding="utf-8"))
    assert doc["devices"]
    for device in doc["devices"]:
        device = dict(device)
        device.pop("gauge", None)
        assert isinstance(registry.parse_config(device), AsciiLineConfig)


# -- the shipped configurations against their instruments --------------------------------------


def test_sylvac_config_polls_and_gets_exactly_what_was_sent(
    no_thread_leaks: None, make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(SYLVAC, Scenario(nominal=Decimal("-3.500"), noise=0.4, seed=3))
    sim.start()
    drv = line_driver(make_driver, **{**example("sylvac"), "poll_interval": 0.01})
    collector.wait_readings(10)
    drv.stop()
    sim.stop()
    readings = collector.readings()
    sent = sim.sent_values[: len(readings)]
    assert [r.value for r in readings] == sent
    assert [str(r.value) for r in readings] == [str(v) for v in sent]
    assert [r.raw for r in readings] == sim.sent_frames[: len(readings)]
    assert all(r.raw[:1] in (b"+", b"-") and r.raw.endswith(b"\r") for r in readings)
    assert {(r.channel, r.unit, r.status) for r in readings} == {("1", "mm", ReadingStatus.OK)}
    assert set(sim.commands) == {"?"}
    assert not collector.events(EventKind.TIMEOUT) and not collector.events(EventKind.BAD_FRAME)


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
    drv = line_driver(make_driver, request="?\r", error_pattern=r"Err\s*\d+", unit="mm")
    collector.wait_events(EventKind.CONNECTED)
    sim.set_error("Err 3")
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert (reading.status, reading.value, reading.unit, reading.error) == (ReadingStatus.ERROR, None, None, "Err 3")
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


# -- faults -------------------------------------------------------------------------------------


def test_garbage_truncated_and_garbled_lines_are_bad_frames(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(SYLVAC, Scenario(noise=0.0))
    line_driver(make_driver, **{k: v for k, v in example("sylvac").items() if k != "poll_interval"})
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("1.000"))
    sim.send_garbage(b"\x00\xff\xfe\r")
    cut = sim.send_truncated()  # loses its CR: runs into the next line
    swallowed = sim.send_value(Decimal("7.000"))
    garbled = sim.send_garbled()
    sim.send_garbage(b"x" * 200 + b"\r")
    sim.send_value(Decimal("2.000"))
    readings = collector.wait_readings(2)
    bad = collector.wait_events(EventKind.BAD_FRAME, 4)
    assert [str(r.value) for r in readings] == ["1.000", "2.000"]
    assert [e.raw for e in bad] == [b"\x00\xff\xfe\r", cut + swallowed, garbled, b"x" * 128]
    assert bad[0].detail == "line does not match the pattern"


def test_random_corruption_never_yields_a_value(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(OHAUS, Scenario(noise=2.0, bad_rate=0.3, interval=0.003, seed=9), mode="push")
    line_driver(make_driver, **{k: v for k, v in example("ohaus").items() if k not in ("poll_interval", "request")})
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(30)
    sim.stop()
    sent, bad_sent = sim.sent_values, sim.bad_frames
    assert bad_sent
    collector.wait_for(
        lambda c: len(c.readings()) + len(c.events(EventKind.BAD_FRAME)) >= len(sent) + len(bad_sent),
        what="every line accounted for",
    )
    assert [r.value for r in collector.readings()] == sent
    assert [e.raw for e in collector.events(EventKind.BAD_FRAME)] == bad_sent


def test_silence_is_a_timeout_and_answers_resume(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(SYLVAC)
    sim.start()
    sim.go_silent(True)
    drv = line_driver(make_driver, request="?\r", response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    (event,) = collector.wait_events(EventKind.TIMEOUT)
    assert "0.1 s" in event.detail
    assert not collector.readings()
    sim.go_silent(False)
    drv.request("read")
    collector.wait_readings(1)
    assert len(collector.events(EventKind.TIMEOUT)) == 1


def test_polling_a_silent_instrument_reports_timeouts(
    make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(SYLVAC)
    sim.start()
    sim.go_silent(True)
    line_driver(make_driver, request="?\r", poll_interval=0.02, response_timeout=0.05)
    collector.wait_events(EventKind.TIMEOUT, 3)
    sim.go_silent(False)
    collector.wait_readings(2)


def test_slow_answers(make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector) -> None:
    sim = make_instrument(SYLVAC)
    sim.start()
    drv = line_driver(make_driver, request="?\r", response_timeout=0.3)
    collector.wait_events(EventKind.CONNECTED)
    sim.set_delay(0.05)
    drv.request("read")
    collector.wait_readings(1)
    sim.set_delay(0.5)
    drv.request("read")
    collector.wait_events(EventKind.TIMEOUT)
    collector.wait_readings(2)  # late, but still an answer
    assert len(collector.events(EventKind.TIMEOUT)) == 1


def test_request_without_request_string_is_refused(make_driver: MakeDriver) -> None:
    drv = line_driver(make_driver, start=False)
    with pytest.raises(DriverError, match="no request string"):
        drv.request("read")


def test_unplug_replug_reports_once_and_resumes(
    no_thread_leaks: None, make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(SYLVAC, Scenario(interval=0.005, seed=2), mode="push")
    drv = line_driver(make_driver, request="?\r", reconnect_min=0.01, reconnect_max=0.03)
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(5)

    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    with pytest.raises(LinkDown):
        drv.request("read")
    time.sleep(0.2)  # an absence over several reconnect attempts
    assert len(collector.events(EventKind.DISCONNECTED)) == 1
    before = len(collector.readings())

    sim.replug()
    collector.wait_events(EventKind.CONNECTED, 2)
    collector.wait_readings(before + 5)
    sim.stop()
    kinds = [e.kind for e in collector.events() if e.kind is not EventKind.BAD_FRAME]
    assert kinds == [EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CONNECTED]
    it = iter(sim.sent_values)
    assert all(any(r.value == v for v in it) for r in collector.readings())


def test_stop_joins_every_thread(
    no_thread_leaks: None, make_driver: MakeDriver, make_instrument: MakeInstrument, collector: Collector
) -> None:
    sim = make_instrument(SYLVAC)
    sim.start()
    drv = line_driver(make_driver, request="?\r", poll_interval=0.01)
    collector.wait_readings(2)
    drv.stop()
    names = {t.name for t in threading.enumerate()}
    assert not {"serial:caliper-1", "requester:caliper-1"} & names
    drv.stop()
    sim.stop()


# -- command line -------------------------------------------------------------------------------


def test_cli_subcommand_runs_until_stopped(link_path: Path) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="simulator", required=True)
    sim_module.add_parser(sub)
    argv = ["ascii", "--link", str(link_path), "--preset", "ohaus", "--mode", "push", "--interval", "0.01"]
    args = parser.parse_args([*argv, "--unstable-rate", "1", "--terminator", "\\r\\n"])
    lines: list[str] = []
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(args.run(args, lines.append, stop)))
    runner.start()
    try:
        wait_for(lambda: len(lines) >= 3, 5.0, "two lines sent")
        assert "ascii simulator (ohaus) on" in lines[0]
        assert " unstable " in lines[1] and "g ?\\r\\n'" in lines[1]
    finally:
        stop.set()
        runner.join(5.0)
    assert result == [0]
    assert not link_path.exists()


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
