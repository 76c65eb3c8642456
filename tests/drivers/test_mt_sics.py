"""What is particular to MT-SICS, against the balance simulator over a real pty (no mocks).

The contract every driver keeps is in test_contract.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import pytest
import serial

from drivers import registry
from drivers.base import DriverError, EventKind, Reading, ReadingStatus
from drivers.serial.mt_sics import MtSicsConfig, MtSicsDriver
from simulators.mt_sics import MtSicsSimulator, Scenario

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector, MakeDriver, PlugSim

MakeSim = Callable[..., MtSicsSimulator]


@pytest.fixture
def make_sim(plug_sim: PlugSim) -> MakeSim:
    return lambda scenario=None, start=True: plug_sim(MtSicsSimulator, scenario or Scenario(seed=7), start=start)


def scale(make_driver: MakeDriver, **settings: Any) -> MtSicsDriver:
    drv = make_driver("mt-sics", **{"poll_interval": None, "response_timeout": 1.0, **settings})
    assert isinstance(drv, MtSicsDriver)
    return drv


def weights(collector: Collector, channel: str = "weight") -> list[Reading]:
    return [r for r in collector.readings() if r.channel == channel]


# -- registry and configuration -----------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = registry.parse_config({"id": "s1", "driver": "mt-sics", "port": "/dev/ttyUSB0"})
    assert isinstance(cfg, MtSicsConfig)
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits) == (9600, 8, "N", 1)
    assert (cfg.mode, cfg.command, cfg.poll_interval, cfg.response_timeout) == ("request", "S", 1.0, 2.0)
    assert cfg.accept_dynamic and not cfg.report_tare


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "continuous", "poll_interval": 0.5},  # the balance sets the pace
        {"mode": "push"},
        {"command": "SIR"},  # continuous mode is a mode, not a poll command
        {"parity": "X"},
        {"poll_interval": 0},
        {"response_timeout": -1},
        {"units": "g"},
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({"id": "s1", "driver": "mt-sics", "port": "/dev/ttyUSB0", **bad})


def test_continuous_mode_accepts_the_default_poll_interval() -> None:
    cfg = registry.parse_config({"id": "s1", "driver": "mt-sics", "port": "p", "mode": "continuous"})
    assert isinstance(cfg, MtSicsConfig) and cfg.mode == "continuous"


# -- request mode ---------------------------------------------------------------------------------


def test_unit_and_resolution_come_from_the_reply(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    make_sim(Scenario(nominal=Decimal("1.250"), unit="kg", decimals=3, capacity=Decimal("6.000")))
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert reading.raw == b"S S      1.250 kg\r\n"
    assert str(reading.value) == "1.250" and reading.unit == "kg"


def test_si_reports_a_settling_load_as_unstable_then_stable(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(settle_time=0.3, swing=1.0, seed=5))
    drv = scale(make_driver, command="SI")
    collector.wait_events(EventKind.CONNECTED)
    sim.load(Decimal("100.00"))  # settling starts now, whatever the connect took
    drv.request("read")
    collector.wait_readings(1)
    while collector.readings()[-1].status is not ReadingStatus.OK:
        n = len(collector.readings())
        drv.request("read")
        collector.wait_readings(n + 1)
    readings = collector.readings()
    statuses = [r.status for r in readings]
    assert statuses[0] is ReadingStatus.UNSTABLE
    assert set(statuses[:-1]) == {ReadingStatus.UNSTABLE}
    assert all(r.value is not None and r.raw.startswith(b"S D") for r in readings[:-1])
    assert readings[-1].value == Decimal("100.00") and readings[-1].raw.startswith(b"S S")
    assert [r.value for r in readings] == [v for _, v in sim.sent_weights]


def test_dynamic_weights_can_be_dropped(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim(Scenario(settle_time=0.2, seed=5))
    drv = scale(make_driver, command="SI", poll_interval=0.02, accept_dynamic=False)
    collector.wait_events(EventKind.CONNECTED)
    sim.load(Decimal("50.00"))
    collector.wait_until(lambda: drv.dynamic_dropped > 0, what="a dropped dynamic weight")
    collector.wait_for(lambda c: any(r.value == Decimal("50.00") for r in c.readings()), what="the settled load")
    assert {r.status for r in collector.readings()} == {ReadingStatus.OK}
    sim.stop()
    sent = sim.sent_weights
    # every weight sent is accounted for: emitted if stable, counted if dynamic
    collector.wait_until(lambda: len(collector.readings()) + drv.dynamic_dropped == len(sent), what="all weights")
    assert sum(1 for status, _ in sent if status == "D") == drv.dynamic_dropped
    assert [r.value for r in collector.readings()] == [v for status, v in sent if status == "S"]


def test_s_waits_for_stability(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim(Scenario(settle_time=0.2, seed=2))
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    sim.load(Decimal("100.00"))
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert reading.status is ReadingStatus.OK and reading.value == Decimal("100.00")
    assert sim.sent_weights == [("S", Decimal("100.00"))]  # no dynamic reply in between
    drv.request("read", immediate=True)
    assert collector.wait_readings(2)[1].raw == b"S S     100.00 g\r\n"


def test_polls_are_not_stacked_while_an_answer_is_due(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(settle_time=0.3, seed=2))
    scale(make_driver, poll_interval=0.01)
    collector.wait_readings(3)  # the first S waited ~0.3 s for stability
    # ~30 poll slots passed meanwhile; stacked polls would all be in the balance's buffer now
    assert len(sim.commands) <= len(collector.readings()) + 1


# -- every error reply ----------------------------------------------------------------------------

ERROR_CASES: list[tuple[str, Callable[[MtSicsSimulator], None], str, str, str]] = [
    ("busy", lambda s: s.set_busy(), "read", "weight", "S I: not executable"),
    ("logical", lambda s: s.force_reply("S L"), "read", "weight", "S L: logical error"),
    ("overload", lambda s: s.load(Decimal("230.00")), "read", "weight", "S +: overload"),
    ("underload", lambda s: s.load(Decimal("-20.00")), "read", "weight", "S -: underload"),
    ("syntax", lambda s: s.force_reply("ES"), "read", "weight", "ES: syntax error"),
    ("transmission", lambda s: s.force_reply("ET"), "read", "weight", "ET: transmission error"),
    ("general logical", lambda s: s.force_reply("EL"), "tare", "tare", "EL: logical error"),
    ("zero out of range", lambda s: s.load(Decimal("10.00")), "zero", "zero", "Z +: above the zero setting range"),
    ("zero busy", lambda s: s.set_busy(), "zero", "zero", "Z I: not executable"),
    ("tare below range", lambda s: s.load(Decimal("-5.00")), "tare", "tare", "T -: below the taring range"),
    ("tare busy", lambda s: s.set_busy(), "tare", "tare", "T I: not executable"),
    ("clear tare busy", lambda s: s.set_busy(), "clear_tare", "tare", "TAC I: not executable"),
    ("identify logical", lambda s: s.force_reply("I1 L"), "identify", "info", "I1 L: logical error"),
]


@pytest.mark.parametrize(
    ("fault", "command", "channel", "error"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_every_error_reply_is_an_error_reading_never_a_number(
    make_driver: MakeDriver,
    make_sim: MakeSim,
    collector: Collector,
    fault: Callable[[MtSicsSimulator], None],
    command: str,
    channel: str,
    error: str,
) -> None:
    sim = make_sim(Scenario(seed=1))
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    fault(sim)
    drv.request(command)
    reading = collector.wait_readings(1)[0]
    assert reading.status is ReadingStatus.ERROR
    assert reading.value is None and reading.unit is None and reading.text is None
    assert reading.channel == channel
    assert reading.error is not None and reading.error.startswith(error)
    assert reading.raw == sim.sent_frames[0]
    assert not collector.events(EventKind.BAD_FRAME)


def test_errors_clear_when_the_fault_does(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim()
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    sim.set_busy()
    drv.request("read")
    collector.wait_readings(1)
    sim.set_busy(False)
    drv.request("read")
    readings = collector.wait_readings(2)
    assert [r.status for r in readings] == [ReadingStatus.ERROR, ReadingStatus.OK]
    assert readings[1].value == Decimal("100.00")


# -- zero, tare, reset, identification ---------------------------------------------------------------


def test_tare_is_kept_not_emitted_by_default(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim()
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("tare")
    collector.wait_until(lambda: drv.last_tare is not None, what="the tare reply")
    tare = drv.last_tare
    assert tare is not None and (tare.value, tare.unit, tare.stable) == (Decimal("100.00"), "g", True)
    assert tare.raw == b"T S     100.00 g\r\n"
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert reading.channel == "weight" and reading.value == Decimal("0.00")
    drv.request("clear_tare")
    drv.request("read")
    assert collector.wait_readings(2)[1].value == Decimal("100.00")
    assert drv.last_tare is None
    assert sim.commands == ["T", "S", "TAC", "S"]


def test_tare_can_be_reported_as_readings(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim(Scenario(nominal=Decimal("12.34"), seed=1))
    drv = scale(make_driver, report_tare=True)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("tare", immediate=True)
    (tare,) = collector.wait_readings(1)
    assert (tare.channel, tare.value, tare.unit, tare.status) == ("tare", Decimal("12.34"), "g", ReadingStatus.OK)
    assert tare.raw == b"TI S      12.34 g\r\n"
    assert sim.tare == Decimal("12.34")


def test_zero(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim(Scenario(nominal=Decimal("1.50"), seed=1))
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("zero")
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert reading.value == Decimal("0.00")
    drv.request("zero", immediate=True)
    drv.request("read")
    collector.wait_readings(2)
    assert sim.commands == ["Z", "S", "ZI", "S"]
    assert b"Z A\r\n" in sim.sent_frames and b"ZI S\r\n" in sim.sent_frames


def test_reset_and_identification(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    make_sim(Scenario(serial="B021002593", model="MS204TS", seed=1))
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("reset")
    collector.wait_until(lambda: "I4" in drv.identification, what="the reset reply")
    assert drv.identification == {"I4": "B021002593"}
    drv.request("identify")
    collector.wait_until(lambda: len(drv.identification) == 4, what="I1..I4")
    assert drv.identification["I2"] == "MS204TS 220.00 g"
    assert not collector.readings()


def test_unsupported_requests_are_refused(make_driver: MakeDriver) -> None:
    drv = scale(make_driver, start=False)
    with pytest.raises(DriverError, match="does not support request 'calibrate'"):
        drv.request("calibrate")
    with pytest.raises(DriverError, match="no immediate form"):
        drv.request("reset", immediate=True)
    with pytest.raises(DriverError, match="unknown request options"):
        drv.request("read", fast=True)


# -- continuous mode -------------------------------------------------------------------------------


def test_continuous_mode_sends_sir_once_and_streams(
    no_thread_leaks: None, make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(sir_interval=0.01, noise=0.01, seed=4))
    drv = scale(make_driver, mode="continuous", response_timeout=0.5)
    collector.wait_readings(10)
    assert sim.commands == ["SIR"] and sim.streaming
    drv.stop()
    sim.stop()
    readings = collector.readings()
    assert [r.value for r in readings] == [v for _, v in sim.sent_weights[: len(readings)]]
    assert not collector.events(EventKind.TIMEOUT)


def test_a_command_interrupts_the_stream_which_is_restarted(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(sir_interval=0.01, seed=4))
    drv = scale(make_driver, mode="continuous", response_timeout=0.5)
    collector.wait_readings(3)
    drv.request("tare")
    collector.wait_until(lambda: drv.last_tare is not None, what="the tare")
    n = len(collector.readings())
    collector.wait_readings(n + 3)
    assert sim.commands == ["SIR", "T", "SIR"]
    assert collector.readings()[-1].value == Decimal("0.00")


def test_continuous_stream_silence_is_a_timeout_and_sir_is_sent_again(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(sir_interval=0.01, seed=4))
    scale(make_driver, mode="continuous", response_timeout=0.1)
    collector.wait_readings(3)
    sim.go_silent()
    event = collector.wait_events(EventKind.TIMEOUT)[0]  # more follow while it stays silent
    assert "stream silent for 0.1 s" in event.detail
    sim.go_silent(False)
    n = len(collector.readings())
    collector.wait_readings(n + 3)
    assert sim.commands.count("SIR") >= 2


# -- faults on the wire -----------------------------------------------------------------------------


def test_lines_outside_the_reply_layout_are_bad_frames(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    truncated = sim.send_truncated()
    wrong = [
        b"S S     1O0.00 g\r\n",  # letter O for a zero
        b"S S    720629 g\r\n",  # 7206.29 that lost its decimal point
        b"S S      100.00 g\r\n",  # an eleven-character weight field
        b"S S    0100.00 g\r\n",  # a blank turned into a zero
        b"S  S     100.00 g\r\n",  # two spaces after the identifier
        b"S S     100.00 g \r\n",  # a character after the unit
    ]
    for line in wrong:
        sim.send_garbage(line)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    bad = collector.wait_events(EventKind.BAD_FRAME, 1 + len(wrong))
    assert reading.raw == b"S S     100.00 g\r\n" and reading.value == Decimal("100.00")
    assert [e.raw for e in bad] == [truncated, *wrong]


def test_only_cr_lf_ends_a_line(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim()
    drv = scale(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    sim.send_garbage(b"S S      12.00 g\n")  # LF only: runs into the next reply
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    # the reply after it is whole: noise before a frame, reported, and the frame is read
    assert bad.raw == b"S S      12.00 g\n" and reading.value == Decimal("100.00")


def test_a_weight_in_another_unit_than_configured_is_a_bad_frame(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    make_sim(Scenario(nominal=Decimal("1.250"), unit="kg", decimals=3, capacity=Decimal("6.000")))
    drv = scale(make_driver, units=["g"])
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert bad.raw == b"S S      1.250 kg\r\n" and "unit 'kg' is not one of the configured ['g']" in bad.detail
    assert not collector.readings()


def test_continuous_stream_is_requested_again_after_replug(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(sir_interval=0.01, seed=4))
    scale(make_driver, mode="continuous", response_timeout=0.5, reconnect_min=0.01, reconnect_max=0.03)
    collector.wait_readings(3)
    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    assert not sim.streaming  # the balance's interface reset with the cable
    before = len(collector.readings())
    sim.replug()
    collector.wait_events(EventKind.CONNECTED, 2)
    collector.wait_readings(before + 3)
    assert sim.commands == ["SIR", "SIR"]
    assert len(collector.events(EventKind.DISCONNECTED)) == 1


# -- lifecycle ----------------------------------------------------------------------------------------


def test_stop_is_prompt_and_idempotent_with_commands_in_flight(
    no_thread_leaks: None, make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    make_sim(Scenario(settle_time=5.0, seed=1))  # S will not be answered for seconds
    drv = scale(make_driver, poll_interval=0.01)
    collector.wait_events(EventKind.CONNECTED)
    t0 = time.monotonic()
    drv.stop()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    drv.start(collector)
    collector.wait_events(EventKind.CONNECTED, 2)
    drv.stop()


# -- the simulator by itself ------------------------------------------------------------------------------


def talk(port: serial.Serial, command: bytes) -> bytes:
    port.write(command + b"\r\n")
    return bytes(port.read_until(b"\r\n"))


def test_simulator_speaks_mt_sics(make_sim: MakeSim, link_path: Path) -> None:
    sim = make_sim(Scenario(nominal=Decimal("50.00"), seed=1))
    with serial.Serial(str(link_path), timeout=2.0) as port:
        assert talk(port, b"S") == b"S S      50.00 g\r\n"
        assert talk(port, b"XYZ") == b"ES\r\n"
        assert talk(port, b"S 1") == b"ES\r\n"  # S takes no parameter
        assert talk(port, b"TA 10.00 g") == b"TA A      10.00 g\r\n"
        assert talk(port, b"TA 10.00 kg") == b"TA L\r\n"
        assert talk(port, b"TA") == b"TA A      10.00 g\r\n"
        assert talk(port, b"SI") == b"S S      40.00 g\r\n"
        assert talk(port, b"TAC") == b"TAC A\r\n"
        assert talk(port, b"I4") == b'I4 A "B012345678"\r\n'
        assert talk(port, b"SIR") == b"S S      50.00 g\r\n"
        assert port.read_until(b"\r\n") == b"S S      50.00 g\r\n"  # the stream goes on by itself
        line = talk(port, b"@")
        while line.startswith(b"S S"):  # streamed before the balance read the @
            line = port.read_until(b"\r\n")
        assert line == b'I4 A "B012345678"\r\n'
        port.timeout = 0.1
        assert port.read(1) == b""  # @ ended the stream
    assert not sim.streaming
    assert sim.commands[-1] == "@"


def test_simulator_refuses_impossible_scenarios() -> None:
    with pytest.raises(ValueError, match="bad_rate must be within 0"):
        Scenario(bad_rate=2.0)
    with pytest.raises(ValueError, match="bad unit 'k g'"):
        Scenario(unit="k g")
    with pytest.raises(ValueError, match="must be positive"):
        Scenario(sir_interval=0)
