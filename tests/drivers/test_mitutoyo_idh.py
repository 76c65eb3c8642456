"""The Mitutoyo ID-H driver against the indicator simulator, over a real pty (no mocks)."""

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
import serial

from drivers import registry
from drivers.base import DriverError, EventKind, ReadingStatus
from drivers.serial.mitutoyo_idh import MitutoyoIdhConfig, MitutoyoIdhDriver
from drivers.serial.port import LinkDown
from simulators.mitutoyo_idh import MitutoyoIdhSimulator, Scenario, add_parser

if TYPE_CHECKING:
    from conftest import Collector, MakeDriver

MakeSim = Callable[..., MitutoyoIdhSimulator]


@pytest.fixture
def make_sim(link_path: Path) -> Iterator[MakeSim]:
    sims: list[MitutoyoIdhSimulator] = []

    def make(scenario: Scenario | None = None) -> MitutoyoIdhSimulator:
        sim = MitutoyoIdhSimulator(link_path, scenario or Scenario(seed=7))
        sims.append(sim)
        sim.start()
        return sim

    yield make
    for sim in sims:
        sim.close()


def indicator(make_driver: MakeDriver, **settings: Any) -> MitutoyoIdhDriver:
    drv = make_driver("mitutoyo-idh", **{"poll_interval": None, "response_timeout": 1.0, **settings})
    assert isinstance(drv, MitutoyoIdhDriver)
    return drv


# -- registry and configuration -----------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert registry.get("mitutoyo-idh") is MitutoyoIdhDriver
    assert "mitutoyo-idh" in registry.names()


def test_config_defaults() -> None:
    cfg = registry.parse_config({"id": "i1", "driver": "mitutoyo-idh", "port": "/dev/ttyUSB0"})
    assert isinstance(cfg, MitutoyoIdhConfig)
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits) == (9600, 8, "N", 1)
    assert (cfg.device_id, cfg.read, cfg.poll_interval, cfg.response_timeout) == (1, "GN", 1.0, 1.0)
    assert (cfg.unit, cfg.value_width) == ("mm", 9)


def test_device_id_may_be_written_as_two_digits() -> None:
    cfg = registry.parse_config({"id": "i1", "driver": "mitutoyo-idh", "port": "p", "device_id": "07"})
    assert isinstance(cfg, MitutoyoIdhConfig) and cfg.device_id == 7


@pytest.mark.parametrize(
    "bad",
    [
        {"device_id": 100},
        {"device_id": -1},
        {"read": "GZ"},
        {"poll_interval": 0},
        {"value_width": 0},
        {"unit": ""},
        {"reconnect_min": 5, "reconnect_max": 1},
        {"colour": "red"},
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({"id": "i1", "driver": "mitutoyo-idh", "port": "/dev/ttyUSB0", **bad})


# -- happy path -----------------------------------------------------------------------------------


def test_polling_delivers_exactly_what_was_sent(
    no_thread_leaks: None, make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(noise=0.002, seed=3))
    drv = indicator(make_driver, poll_interval=0.01)
    collector.wait_readings(15)
    drv.stop()
    sim.stop()
    readings = collector.readings()
    sent = sim.sent_values[: len(readings)]
    assert [(r.channel, r.value) for r in readings] == sent
    # str() too: trailing zeros are the indicator's resolution and must survive
    assert [str(r.value) for r in readings] == [str(v) for _, v in sent]
    assert [r.raw for r in readings] == sim.sent_frames[: len(readings)]
    assert all(r.raw.startswith(b"GN01,") and r.raw.endswith(b"\r\n") for r in readings)
    assert {(r.device, r.unit, r.status, r.text) for r in readings} == {("caliper-1", "mm", ReadingStatus.OK, None)}
    assert set(sim.commands) == {"GN01"}
    assert not collector.events(EventKind.TIMEOUT) and not collector.events(EventKind.BAD_FRAME)


def test_max_min_and_run_out_are_their_own_channels(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    # a spindle moving 0.001 per sample: every read samples it, GX/GM/GW included
    sim = make_sim(Scenario(device_id=42, noise=0.0, drift=0.001, seed=9))
    drv = indicator(make_driver, device_id=42, unit="in")
    collector.wait_events(EventKind.CONNECTED)
    for n, what in enumerate(("GN", "GN", "GX", "GM", "GW"), 1):
        drv.request("read", what=what) if n % 2 else drv.request(what)
        collector.wait_readings(n)
    readings = collector.readings()
    assert [(r.channel, r.value) for r in readings] == sim.sent_values
    assert [(r.channel, str(r.value)) for r in readings] == [
        ("GN", "16.2345"),
        ("GN", "16.2355"),
        ("GX", "16.2365"),
        ("GM", "16.2345"),
        ("GW", "0.0040"),
    ]
    assert {r.unit for r in readings} == {"in"}
    assert sim.commands == ["GN42", "GN42", "GX42", "GM42", "GW42"]


def test_configured_read_command_is_polled(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim()
    indicator(make_driver, read="GW", poll_interval=0.01)
    collector.wait_readings(3)
    assert {r.channel for r in collector.readings()} == {"GW"}
    assert set(sim.commands) == {"GW01"}


def test_zero_is_acknowledged_and_emits_nothing(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(noise=0.0, seed=1))
    drv = indicator(make_driver, response_timeout=0.2)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    assert collector.wait_readings(1)[0].value == Decimal("16.2345")
    drv.request("zero")
    drv.request("read")
    readings = collector.wait_readings(2)
    assert str(readings[1].value) == "0.0000"
    assert readings[1].raw == b"GN01,+0000.0000\r\n"
    assert sim.commands == ["GN01", "CR01", "GN01"]
    assert b"CH01\r\n" in sim.sent_frames
    time.sleep(0.25)  # past the zero's deadline: CH was its answer, so no timeout
    assert not collector.events(EventKind.TIMEOUT)


def test_unsupported_requests_are_refused(make_driver: MakeDriver) -> None:
    drv = indicator(make_driver, start=False)
    with pytest.raises(DriverError):
        drv.request("tare")
    with pytest.raises(DriverError):
        drv.request("read", what="GZ")
    with pytest.raises(DriverError, match="unknown request options"):
        drv.request("zero", what="GN")


# -- judgement replies ----------------------------------------------------------------------------


def test_judgement_after_the_value_is_kept_but_not_emitted(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(noise=0.0, judgement="append", lower=Decimal("16.0000"), upper=Decimal("16.2000"), seed=1))
    drv = indicator(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert reading.value == Decimal("16.2345")  # the collector judges the value itself
    collector.wait_until(lambda: drv.last_judgement is not None, what="the judgement")
    judgement = drv.last_judgement
    assert judgement is not None and judgement.judgement == "+NG" and judgement.raw == b"DH01,+NG\r\n"
    assert drv.judgements == {"+NG": 1}
    assert sim.sent_frames == [b"GN01,+0016.2345\r\n", b"DH01,+NG\r\n"]
    assert len(collector.snapshot()) == 2  # CONNECTED and the reading: nothing else


def test_judgement_instead_of_the_value_answers_the_request(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    make_sim(Scenario(noise=0.0, judgement="reply", lower=Decimal("16.0"), upper=Decimal("16.5"), seed=1))
    drv = indicator(make_driver, response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    collector.wait_until(lambda: drv.judgements.get("OK", 0) == 1, what="the first judgement")
    drv.request("read")
    collector.wait_until(lambda: drv.judgements.get("OK", 0) == 2, what="the second judgement")
    time.sleep(0.15)  # past the deadline: the judgement was the answer
    assert drv.judgements == {"OK": 2}
    assert not collector.readings() and not collector.events(EventKind.TIMEOUT)


# -- faults -------------------------------------------------------------------------------------------


def test_reply_from_a_wrong_device_id_is_rejected(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    drv = indicator(make_driver, response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    sim.answer_as(2)
    drv.request("read")
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert bad.raw.startswith(b"GN02,") and bad.detail == "device id 02 is not the configured 01"
    # not this indicator's answer: the request is still unanswered
    (timeout,) = collector.wait_events(EventKind.TIMEOUT)
    assert timeout.detail == "no answer to GN01 within 0.1 s"
    sim.answer_as(None)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert reading.raw.startswith(b"GN01,")


def test_commands_for_another_device_id_are_ignored_by_the_indicator(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(device_id=5, seed=1))
    drv = indicator(make_driver, device_id=6, response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    collector.wait_events(EventKind.TIMEOUT)
    assert sim.commands == ["GN06"] and not sim.sent_frames


def test_garbage_truncated_and_unknown_replies_are_bad_frames(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    drv = indicator(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    sim.send_garbage(b"\x00\xffnoise\r\n")
    truncated = sim.send_truncated()
    sim.send_garbage(b"ERR\r\n")
    sim.send_garbage(b"DH01,MAYBE\r\n")
    sim.send_garbage(b"x" * 100 + b"\r\n")
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    bad = collector.wait_events(EventKind.BAD_FRAME, 5)
    assert reading.raw.startswith(b"GN01,+0016.")
    assert [e.raw for e in bad] == [b"\x00\xffnoise\r\n", truncated, b"ERR\r\n", b"DH01,MAYBE\r\n", b"x" * 64]
    assert "judgement" in bad[3].detail and "no terminator within 64 bytes" in bad[4].detail


def test_unknown_command_error_reply_is_a_bad_frame(
    make_sim: MakeSim, link_path: Path, collector: Collector, make_driver: MakeDriver
) -> None:
    sim = make_sim()
    drv = indicator(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    # a command the driver never sends: written on the driver's own link, as a confused host would
    drv.link.write(b"XX01\r\n")
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert bad.raw == b"ERR\r\n" and bad.detail == "unknown reply"
    assert sim.commands == ["XX01"]


def test_random_corruption_never_yields_a_value(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(noise=0.01, bad_rate=0.3, seed=5))
    drv = indicator(make_driver, poll_interval=0.002, response_timeout=0.5)
    collector.wait_readings(30)
    drv.stop()
    sim.stop()
    assert sim.bad_frames
    got = collector.readings()
    assert [(r.channel, r.value) for r in got] == sim.sent_values[: len(got)]
    bad = collector.events(EventKind.BAD_FRAME)
    assert [e.raw for e in bad] == sim.bad_frames[: len(bad)]
    # a garbled answer is still the answer: no timeouts on top of the bad frames
    assert not collector.events(EventKind.TIMEOUT)


def test_silence_is_a_timeout_not_a_value(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim()
    drv = indicator(make_driver, response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    sim.go_silent()
    drv.request("zero")
    (event,) = collector.wait_events(EventKind.TIMEOUT)
    assert event.detail == "no answer to CR01 within 0.1 s" and event.device == "caliper-1"
    sim.go_silent(False)
    drv.request("read")
    collector.wait_readings(1)
    assert len(collector.events(EventKind.TIMEOUT)) == 1


def test_polling_through_silence_times_out_every_poll(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    sim.go_silent()
    indicator(make_driver, poll_interval=0.01, response_timeout=0.05)
    collector.wait_events(EventKind.TIMEOUT, 3)
    sim.go_silent(False)
    collector.wait_readings(2)


def test_slow_reply_within_the_timeout_still_works(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    drv = indicator(make_driver, response_timeout=0.5)
    collector.wait_events(EventKind.CONNECTED)
    sim.set_reply_delay(0.15)
    drv.request("read")
    collector.wait_readings(1)
    time.sleep(0.5)  # past the deadline: a timeout would have been reported by now
    assert not collector.events(EventKind.TIMEOUT)


def test_unplug_replug_reports_once_and_resumes(
    no_thread_leaks: None, make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    indicator(make_driver, poll_interval=0.01, reconnect_min=0.01, reconnect_max=0.03)
    collector.wait_readings(3)
    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    time.sleep(0.2)  # several reconnect attempts: asserts an absence, a slow box only weakens it
    assert len(collector.events(EventKind.DISCONNECTED)) == 1
    assert len(collector.events(EventKind.CONNECTED)) == 1
    before = len(collector.readings())
    sim.replug()
    collector.wait_events(EventKind.CONNECTED, 2)
    collector.wait_readings(before + 3)
    kinds = [e.kind for e in collector.events() if e.kind is not EventKind.BAD_FRAME]
    assert kinds == [EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CONNECTED]


def test_request_while_unplugged_raises_link_down(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    drv = indicator(make_driver, response_timeout=0.05)
    collector.wait_events(EventKind.CONNECTED)
    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    with pytest.raises(LinkDown):
        drv.request("read")
    time.sleep(0.1)
    assert not collector.events(EventKind.TIMEOUT)


def test_stop_is_prompt_and_restartable(
    no_thread_leaks: None, make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    sim.set_reply_delay(5.0)
    drv = indicator(make_driver, poll_interval=0.01)
    collector.wait_events(EventKind.CONNECTED)
    t0 = time.monotonic()
    drv.stop()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    sim.set_reply_delay(0.0)
    drv.start(collector)
    collector.wait_events(EventKind.CONNECTED, 2)
    drv.stop()


# -- the simulator by itself ------------------------------------------------------------------------------


def talk(port: serial.Serial, command: bytes) -> bytes:
    port.write(command + b"\r\n")
    return bytes(port.read_until(b"\r\n"))


def test_simulator_speaks_the_protocol(make_sim: MakeSim, link_path: Path) -> None:
    make_sim(Scenario(device_id=3, nominal=Decimal("-1.5"), noise=0.0, decimals=3, seed=1))
    with serial.Serial(str(link_path), timeout=2.0) as port:
        assert talk(port, b"GN03") == b"GN03,-00001.500\r\n"
        assert talk(port, b"GX03") == b"GX03,-00001.500\r\n"
        assert talk(port, b"GW03") == b"GW03,+00000.000\r\n"
        assert talk(port, b"CR03") == b"CH03\r\n"
        assert talk(port, b"GN03") == b"GN03,+00000.000\r\n"
        assert talk(port, b"HELLO") == b"ERR\r\n"


def test_simulator_refuses_impossible_scenarios() -> None:
    with pytest.raises(ValueError):
        Scenario(nominal=Decimal("123456.0"))  # does not fit nine characters with four decimals
    with pytest.raises(ValueError):
        Scenario(judgement="append")  # judging needs limits
    with pytest.raises(ValueError):
        Scenario(device_id=100)


def test_cli_subcommand_runs_until_stopped(link_path: Path, collector: Collector) -> None:
    parser = argparse.ArgumentParser(prog="simulators")
    add_parser(parser.add_subparsers(dest="simulator", required=True))
    argv = ["mitutoyo-idh", "--link", str(link_path), "--device-id", "7", "--nominal", "2.5", "--noise", "0"]
    args = parser.parse_args(argv)
    lines: list[str] = []
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(args.run(args, lines.append, stop)))
    runner.start()
    try:
        collector.wait_until(link_path.exists, what="the pty link")
        with serial.Serial(str(link_path), timeout=2.0) as port:
            assert talk(port, b"GN07") == b"GN07,+0002.5000\r\n"
    finally:
        stop.set()
        runner.join(5.0)
    assert result == [0]
    assert "mitutoyo-idh simulator (id 07) on" in lines[0]
    assert "value" in lines[1] and "GN07,+0002.5000" in lines[1]
    assert not link_path.exists()
