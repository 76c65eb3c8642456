"""The Mitutoyo driver against the simulator, over a real pty (no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic
import pytest
import serial

from drivers import registry
from drivers.base import DriverError, EventKind
from drivers.serial.mitutoyo import MitutoyoConfig, MitutoyoDriver
from drivers.serial.port import LinkDown
from simulators.mitutoyo import Scenario
from simulators.pty import PortUnplugged, PtyPort

if TYPE_CHECKING:
    from conftest import Collector, MakeDriver, MakeSimulator

REPO = Path(__file__).resolve().parents[2]


def is_subsequence(part: list[Decimal | None], whole: list[Decimal]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


# -- registry and configuration -----------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert registry.get("mitutoyo") is MitutoyoDriver
    assert "mitutoyo" in registry.names()


def test_config_defaults_follow_the_adapter() -> None:
    cfg = registry.parse_config({"id": "c1", "driver": "mitutoyo", "port": "/dev/ttyUSB0"})
    assert isinstance(cfg, MitutoyoConfig)
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits, cfg.unit) == (9600, 8, "N", 1, "mm")
    assert cfg.request is None and cfg.poll_interval is None and cfg.channel is None


@pytest.mark.parametrize(
    "bad",
    [
        {"poll_interval": 1.0},  # polling without a request string
        {"parity": "X"},
        {"stopbits": 3},
        {"channel": "1"},
        {"request": ""},
        {"reconnect_min": 5, "reconnect_max": 1},
        {"colour": "red"},  # typos must fail at start-up, not be ignored
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({"id": "c1", "driver": "mitutoyo", "port": "/dev/ttyUSB0", **bad})


def test_config_accepts_one_and_a_half_stop_bits() -> None:
    cfg = registry.parse_config({"id": "c1", "driver": "mitutoyo", "port": "p", "stopbits": 1.5})
    assert isinstance(cfg, MitutoyoConfig) and cfg.stopbits == 1.5


# -- push mode ----------------------------------------------------------------------------------


def test_push_mode_delivers_exactly_what_was_sent(
    no_thread_leaks: None, make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(Scenario(nominal=Decimal("12.000"), noise=0.5, interval=0.005, seed=3))
    make_driver(unit="mm")
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(30)
    sim.stop()
    sent = sim.sent_values
    readings = collector.wait_readings(len(sent))

    assert [r.value for r in readings] == sent
    # str() too: Decimal equality ignores trailing zeros, the record must not
    assert [str(r.value) for r in readings] == [str(v) for v in sent]
    assert [r.raw for r in readings] == sim.sent_frames
    assert all(r.raw.endswith(b"\r") and len(r.raw) == 13 for r in readings)
    assert {(r.device, r.channel, r.unit) for r in readings} == {("caliper-1", "01", "mm")}
    stamps = [r.timestamp_ns for r in readings]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time_ns()) < 60 * 10**9
    assert not collector.events(EventKind.BAD_FRAME)


def test_unit_comes_from_configuration(
    make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(Scenario(decimals=5, nominal=Decimal("0.50000")))
    make_driver(unit="in")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("0.12340"))
    (reading,) = collector.wait_readings(1)
    assert reading.raw == b"01A+00.12340\r"
    assert str(reading.value) == "0.12340" and reading.unit == "in"


# -- request mode -------------------------------------------------------------------------------


def test_request_mode_polls_and_gets_exactly_what_was_sent(
    no_thread_leaks: None, make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(Scenario(noise=0.01, seed=11), mode="request", request=b"1\r")
    sim.start()
    drv = make_driver(request="1\r", poll_interval=0.01)
    readings = collector.wait_readings(10)
    drv.stop()
    sim.stop()
    readings = collector.readings()
    assert [r.value for r in readings] == sim.sent_values[: len(readings)]
    assert [r.raw for r in readings] == sim.sent_frames[: len(readings)]
    assert sim.requests_received >= len(readings)
    assert not collector.events(EventKind.TIMEOUT)


def test_request_read_on_demand(make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector) -> None:
    sim = make_simulator(mode="request", request=b"1\r")
    sim.start()
    drv = make_driver(request="1\r", response_timeout=0.05)
    collector.wait_events(EventKind.CONNECTED)
    for n in (1, 2, 3):
        drv.request("read")
        collector.wait_readings(n)
    assert [r.value for r in collector.readings()] == sim.sent_values
    assert sim.requests_received == 3
    # answers can be parsed before write() returns; that must not leave a timeout armed
    time.sleep(0.15)
    assert not collector.events(EventKind.TIMEOUT)
    with pytest.raises(DriverError):
        drv.request("zero")


def test_request_without_request_string_is_refused(make_driver: MakeDriver) -> None:
    drv = make_driver(start=False)
    with pytest.raises(DriverError, match="no request string"):
        drv.request("read")


def test_unanswered_request_is_a_timeout_not_a_value(
    make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(mode="request", request=b"1\r")
    sim.start()
    sim.go_silent(True)
    drv = make_driver(request="1\r", response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    (event,) = collector.wait_events(EventKind.TIMEOUT)
    assert "0.1 s" in event.detail and event.device == "caliper-1"
    assert not collector.readings()

    sim.go_silent(False)
    drv.request("read")
    collector.wait_readings(1)
    assert len(collector.events(EventKind.TIMEOUT)) == 1


def test_request_while_unplugged_raises_link_down(
    make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(mode="request")
    drv = make_driver(request="1\r")
    collector.wait_events(EventKind.CONNECTED)
    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    with pytest.raises(LinkDown):
        drv.request("read")


# -- bad frames ---------------------------------------------------------------------------------


def test_bad_frames_are_events_and_the_next_good_frame_survives(
    make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator()
    make_driver()
    collector.wait_events(EventKind.CONNECTED)

    sim.send_value(Decimal("12.001"))
    sim.send_garbage(b"\x00\xffnoise\r")
    truncated = sim.send_truncated()
    sim.send_garbage(b"#E01\r")
    sim.send_value(Decimal("-12.340"))
    sim.send_garbage(b"x" * 100 + b"\r")  # longer than max_frame_length: never buffered whole
    sim.send_value(Decimal("0.000"))

    readings = collector.wait_readings(3)
    bad = collector.wait_events(EventKind.BAD_FRAME, 4)
    assert [str(r.value) for r in readings] == ["12.001", "-12.340", "0.000"]
    assert [e.raw for e in bad] == [b"\x00\xffnoise\r", truncated, b"#E01\r", b"x" * 64]
    assert bad[2].detail == "adapter error line"
    assert "no terminator within 64 bytes" in bad[3].detail
    assert all(e.device == "caliper-1" for e in bad)


def test_random_corruption_never_yields_a_value(
    make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(Scenario(noise=0.02, bad_rate=0.3, oot_rate=0.1, interval=0.003, seed=5))
    make_driver()
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(40)
    sim.stop()
    sent, bad_sent = sim.sent_values, sim.bad_frames
    assert bad_sent, "the scenario should have corrupted some frames"
    collector.wait_for(
        lambda c: len(c.readings()) + len(c.events(EventKind.BAD_FRAME)) >= len(sent) + len(bad_sent),
        what="every frame accounted for",
    )
    assert [r.value for r in collector.readings()] == sent
    assert [e.raw for e in collector.events(EventKind.BAD_FRAME)] == bad_sent


def test_channel_filter(make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector) -> None:
    sim = make_simulator(Scenario(channel="01"))
    make_driver(channel="02")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("1.000"))
    sim.send_garbage(b"02A+0002.000\r")
    (reading,) = collector.wait_readings(1)
    assert reading.channel == "02" and reading.value == Decimal("2.000")
    (bad,) = collector.events(EventKind.BAD_FRAME)
    assert bad.raw == b"01A+0001.000\r" and "channel 01" in bad.detail


# -- cable faults -------------------------------------------------------------------------------


def test_unplug_replug_reports_once_and_resumes(
    no_thread_leaks: None, make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(Scenario(interval=0.005, seed=2))
    make_driver(reconnect_min=0.01, reconnect_max=0.03)
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(5)

    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    # A window for several reconnect attempts (max backoff 0.03 s): asserts an absence, so
    # a slow machine only makes the check weaker, never flaky.
    time.sleep(0.3)
    assert len(collector.events(EventKind.DISCONNECTED)) == 1
    assert len(collector.events(EventKind.CONNECTED)) == 1
    before = len(collector.readings())

    sim.replug()
    collector.wait_events(EventKind.CONNECTED, 2)
    collector.wait_readings(before + 5)
    sim.stop()

    kinds = [e.kind for e in collector.events() if e.kind is not EventKind.BAD_FRAME]
    assert kinds == [EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CONNECTED]
    # frames sent while nobody listened are lost, but nothing is invented or reordered
    assert is_subsequence([r.value for r in collector.readings()], sim.sent_values)


def test_missing_port_at_start_then_appears(
    link_path: Path, make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    make_driver(reconnect_min=0.01, reconnect_max=0.05)
    (down,) = collector.wait_events(EventKind.DISCONNECTED)
    assert str(link_path) in down.detail
    sim = make_simulator()
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("12.000"))
    collector.wait_readings(1)
    assert len(collector.events(EventKind.DISCONNECTED)) == 1


def test_stop_is_prompt_even_during_a_long_backoff(
    no_thread_leaks: None, make_driver: MakeDriver, collector: Collector
) -> None:
    drv = make_driver(reconnect_min=5.0, reconnect_max=10.0)
    collector.wait_events(EventKind.DISCONNECTED)  # no port: now waiting out a 5 s backoff
    t0 = time.monotonic()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    drv.stop()  # idempotent


def test_stop_joins_every_thread(
    no_thread_leaks: None, make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator(mode="request")
    sim.start()
    drv = make_driver(request="1\r", poll_interval=0.01)
    collector.wait_readings(2)
    t0 = time.monotonic()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    names = {t.name for t in threading.enumerate()}
    assert not {"serial:caliper-1", "requester:caliper-1"} & names
    sim.stop()


def test_restart_after_stop(make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector) -> None:
    sim = make_simulator()
    drv = make_driver()
    collector.wait_events(EventKind.CONNECTED)
    drv.stop()
    drv.start(collector)
    collector.wait_events(EventKind.CONNECTED, 2)
    sim.send_value(Decimal("3.000"))
    collector.wait_readings(1)
    drv.stop()


def test_a_failing_sink_does_not_kill_the_reader(
    make_driver: MakeDriver, make_simulator: MakeSimulator, collector: Collector
) -> None:
    sim = make_simulator()
    drv = make_driver(start=False)
    calls: list[object] = []

    def sink(item: object) -> None:
        calls.append(item)
        if len(calls) == 2:
            raise RuntimeError("sink bug")
        collector(item)  # type: ignore[arg-type]

    drv.start(sink)
    try:
        collector.wait_events(EventKind.CONNECTED)
        sim.send_value(Decimal("1.000"))  # the sink raises on this one
        sim.send_value(Decimal("2.000"))
        (reading,) = collector.wait_readings(1)
        assert reading.value == Decimal("2.000")
    finally:
        drv.stop()


# -- the pty under the simulator ----------------------------------------------------------------


def test_pty_unplug_is_an_error_on_the_driver_side(link_path: Path) -> None:
    with PtyPort(link_path) as pty:
        first = pty.slave_name
        assert os.path.realpath(link_path) == first
        port = serial.Serial(str(link_path), timeout=0.5)
        try:
            pty.write(b"01A+0000.123\r")
            assert port.read(13) == b"01A+0000.123\r"
            port.write(b"1\r")
            assert pty.read_available(1.0) == b"1\r"

            pty.unplug()
            assert not link_path.exists() and not pty.plugged
            with pytest.raises(serial.SerialException):
                port.read(1)
            with pytest.raises(serial.SerialException):
                port.write(b"1\r")
            with pytest.raises(serial.SerialException):
                serial.Serial(str(link_path))
            with pytest.raises(PortUnplugged):
                pty.write(b"x")
            assert pty.read_available(0.01) == b""
        finally:
            port.close()

        pty.replug()
        assert link_path.is_symlink() and os.path.realpath(link_path) == pty.slave_name
        with serial.Serial(str(link_path), timeout=0.5) as again:
            pty.write(b"01A-0000.001\r")
            assert again.read(13) == b"01A-0000.001\r"
    assert not link_path.exists()


def test_pty_is_raw(link_path: Path) -> None:
    """Cooked mode would echo frames back to the simulator and turn CR into LF."""
    with PtyPort(link_path) as pty:
        fd = os.open(link_path, os.O_RDWR | os.O_NOCTTY)  # plain open: pyserial would set raw itself
        try:
            pty.write(b"01A+0000.123\r")
            assert os.read(fd, 100) == b"01A+0000.123\r"
            assert pty.read_available(0.05) == b""  # no echo
        finally:
            os.close(fd)


def test_pty_unplug_wakes_a_blocked_reader(link_path: Path) -> None:
    with PtyPort(link_path) as pty:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(pty.read_available(5.0)))
        reader.start()  # whether it is already in select() or not, unplug must end it
        t0 = time.monotonic()
        pty.unplug()
        reader.join(2.0)
        assert not reader.is_alive() and result == [b""]
        assert time.monotonic() - t0 < 1.0


def test_pty_refuses_to_replace_a_real_file(tmp_path: Path) -> None:
    target = tmp_path / "not-a-link"
    target.write_text("keep me")
    with pytest.raises(FileExistsError):
        PtyPort(target)
    assert target.read_text() == "keep me"


# -- command line -------------------------------------------------------------------------------


def test_cli_runs_until_interrupted(link_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "simulators.cli", "mitutoyo", "--link", str(link_path)]
    cmd += ["--interval", "0.01", "--seed", "1", "--nominal", "5.5", "--bad-rate", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "mitutoyo simulator on" in banner, proc.stderr.read() if proc.stderr else ""
        with serial.Serial(str(link_path), timeout=2.0) as port:
            port.read_until(b"\r")  # may start mid-frame: the input queue was flushed on open
            frame = port.read_until(b"\r")
        assert len(frame) == 13 and frame.startswith(b"01A+0005.")
        assert "value" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5.0) == 0
        assert not link_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
