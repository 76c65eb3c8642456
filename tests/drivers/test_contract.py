"""The contract every driver keeps, run over every driver case of ``cases.py`` and its simulator.

Real peers: each case's simulator is written from the device's manual and speaks the wire
protocol over a pty (or TCP). What is specific to one protocol is tested in that driver's
own test file; what every driver must do is tested here, once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import pytest

from drivers import registry
from drivers.base import Driver, DriverError, EventKind, Reading
from drivers.serial.port import LinkDown
from simulators.cli import build_parser
from tests.drivers.cases import CASES, DriverCase, Peer, Setup

if TYPE_CHECKING:
    from tests.drivers.conftest import BuildDriver, Collector

DEVICE = "device-1"
MakeDriver = Callable[..., Driver]
Plug = Callable[..., Peer]


ASKING = [c for c in CASES if c.asks]  # request("read") is awaited: silence is a timeout
POLLING = [c for c in CASES if c.polling]
LINES = [c for c in CASES if c.terminator is not None]  # line protocols: garbage and noise on the wire
CORRUPTING = [c for c in CASES if c.corrupts]  # simulators that can corrupt a frame (not over TCP)


def cases(subset: list[DriverCase]) -> pytest.MarkDecorator:
    """Run a test over only ``subset`` of the cases (those that have what it needs)."""
    return pytest.mark.parametrize("case", subset, ids=[c.id for c in subset], indirect=True)


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> DriverCase:
    assert isinstance(request.param, DriverCase)
    return request.param


@pytest.fixture
def setup(case: DriverCase, tmp_path: Path) -> Setup:
    return case.prepare(tmp_path)


@pytest.fixture
def plug(setup: Setup) -> Iterator[Plug]:
    """Plugs the device in (creates its simulator); closes every one at the end."""
    peers: list[Peer] = []

    def make(**faults: Any) -> Peer:
        peer = setup.plug(**faults)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


@pytest.fixture
def driver(case: DriverCase, setup: Setup, build_driver: BuildDriver) -> MakeDriver:
    """Builds the case's driver through the registry (as the gateway does) and starts it."""

    def make(start: bool = True, **settings: Any) -> Driver:
        raw = {"id": DEVICE, "driver": case.driver, "reconnect_min": 0.02, "reconnect_max": 0.2}
        return build_driver({**raw, **setup.settings, **settings}, start)

    return make


def read_one(case: DriverCase, peer: Peer, drv: Driver) -> None:
    """Make one reading happen: ask for it, or let the device push it."""
    if case.asks:
        drv.request("read")
    else:
        assert peer.push is not None
        peer.push()


def running(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector, **settings: Any
) -> tuple[Peer, Driver]:
    """The device answering (and pushing, when started) and the driver connected to it."""
    peer = plug()
    if case.asks:
        peer.start()
    drv = driver(**settings)
    collector.wait_events(EventKind.CONNECTED)
    return peer, drv


def streaming(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector, **settings: Any
) -> tuple[Peer, Driver]:
    """Readings flowing: an asked device answering a polling driver, or a connected driver
    listening to a device that pushes by itself."""
    peer = plug(**settings.pop("faults", {}))
    if case.asks:
        peer.start()
        drv = driver(**case.polling, **settings)
    else:
        drv = driver(**settings)
        collector.wait_events(EventKind.CONNECTED)
        peer.start()
    return peer, drv


def is_subsequence(part: list[object], whole: list[object]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


# -- identity and configuration -------------------------------------------------------------------


def test_registered_under_its_name_and_typos_fail(case: DriverCase, setup: Setup) -> None:
    cls = registry.get(case.driver)
    assert cls.name == case.driver and case.driver in registry.names()
    base = {"id": DEVICE, "driver": case.driver, **setup.settings}
    assert isinstance(registry.parse_config(base), cls.config_model)
    for bad in ({"colour": "red"}, {"reconnect_min": 5, "reconnect_max": 1}):
        with pytest.raises(pydantic.ValidationError):
            registry.parse_config({**base, **bad})


def test_unknown_request_is_refused(case: DriverCase, driver: MakeDriver) -> None:
    with pytest.raises(DriverError):
        driver(start=False).request("no-such-request")


# -- values ---------------------------------------------------------------------------------------


def test_delivers_exactly_what_was_sent(
    no_thread_leaks: None, case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer, drv = streaming(case, plug, driver, collector)
    collector.wait_readings(10)
    if case.asks:
        drv.stop()  # stop asking first: an answer in flight may then be lost, never half read
        peer.stop()
        readings = collector.readings()
    else:
        peer.stop()
        readings = collector.wait_readings(len(peer.sent()))  # everything pushed arrives
    sent, frames = peer.sent(), peer.sent_frames()
    assert readings and len(readings) <= len(sent)
    assert [case.key(r) for r in readings] == sent[: len(readings)]
    assert [r.raw for r in readings] == frames[: len(readings)]
    assert {r.device for r in readings} == {DEVICE}
    stamps = [r.timestamp_ns for r in readings]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time_ns()) < 60 * 10**9
    assert not collector.events(EventKind.BAD_FRAME) and not collector.events(EventKind.TIMEOUT)


@cases(LINES)
def test_garbage_is_a_bad_frame_and_the_next_frame_survives(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer, drv = running(case, plug, driver, collector)
    assert peer.send_bytes is not None and case.terminator is not None
    garbage = b"\x00\xffnoise" + case.terminator
    max_length = int(getattr(drv.config, "max_frame_length"))  # noqa: B009 - serial drivers' setting
    overlong = b"x" * (max_length + 10) + case.terminator
    peer.send_bytes(garbage)
    peer.send_bytes(overlong)
    read_one(case, peer, drv)
    (reading,) = collector.wait_readings(1)
    bad = collector.wait_events(EventKind.BAD_FRAME, 2)
    assert [e.raw for e in bad] == [garbage, b"x" * max_length]
    assert f"no terminator within {max_length} bytes" in bad[1].detail
    assert (case.key(reading), reading.raw) == (peer.sent()[0], peer.sent_frames()[0])
    assert all(e.device == DEVICE for e in bad)


@cases(LINES)
def test_noise_before_a_frame_is_reported_and_the_frame_read(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    """A DATA press right after the adapter was plugged in: line noise runs into the frame."""
    peer, drv = running(case, plug, driver, collector)
    assert peer.send_bytes is not None
    peer.send_bytes(b"\x00\xff")
    read_one(case, peer, drv)
    (reading,) = collector.wait_readings(1)
    (noise,) = collector.wait_events(EventKind.BAD_FRAME)
    assert noise.raw == b"\x00\xff" and "noise before a frame" in noise.detail
    assert (case.key(reading), reading.raw) == (peer.sent()[0], peer.sent_frames()[0])


@cases(CORRUPTING)
def test_corruption_never_yields_a_value_that_was_not_sent(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    asking = {"response_timeout": 0.5} if case.asks else {}  # a corrupted answer must not time out the next
    peer, drv = streaming(case, plug, driver, collector, faults={"bad_rate": 0.3}, **asking)
    collector.wait_readings(30)
    drv.stop()
    peer.stop()
    assert peer.bad_frames(), "the scenario should have corrupted some frames"
    sent, frames, bad = peer.sent(), peer.sent_frames(), peer.bad_frames()
    at = 0  # readings of whole frames come in the order the frames were sent
    for r in collector.readings():
        match = next((k for k in range(at, len(frames)) if frames[k] == r.raw), None)
        if match is not None:
            assert case.key(r) == sent[match]
            at = match + 1
        else:
            # an intact frame after noise that ran into it: the frame itself was sent whole
            assert any(b.endswith(r.raw) and b != r.raw for b in bad), f"{r.raw!r} was never sent whole"


# -- silence --------------------------------------------------------------------------------------


@cases(ASKING)
def test_silence_is_a_timeout_not_a_value(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer, drv = running(case, plug, driver, collector, response_timeout=0.1)
    peer.go_silent(True)
    drv.request("read")
    (event,) = collector.wait_events(EventKind.TIMEOUT)
    assert "0.1 s" in event.detail and event.device == DEVICE
    assert not collector.readings()
    peer.go_silent(False)
    drv.request("read")
    collector.wait_readings(1)
    assert len(collector.events(EventKind.TIMEOUT)) == 1


@cases(POLLING)
def test_polling_a_silent_device_reports_timeouts(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer = plug()
    peer.start()
    peer.go_silent(True)
    driver(**{**case.polling, "poll_interval": 0.02}, response_timeout=0.05)
    collector.wait_events(EventKind.TIMEOUT, 3)
    assert not collector.readings()
    peer.go_silent(False)
    collector.wait_readings(2)


@cases(ASKING)
def test_slow_answers_count_and_late_ones_are_still_read(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer, drv = running(case, plug, driver, collector, response_timeout=0.3)
    assert peer.delay is not None
    peer.delay(0.1)  # slow, but in time
    t0 = time.monotonic()
    drv.request("read")
    collector.wait_readings(1)
    time.sleep(max(0.0, t0 + 0.35 - time.monotonic()))  # past the deadline: a timeout would be here
    assert not collector.events(EventKind.TIMEOUT)
    peer.delay(0.5)  # too slow: a timeout, and the late answer is still the device's value
    drv.request("read")
    collector.wait_events(EventKind.TIMEOUT)
    (_, late) = collector.wait_readings(2)
    assert (case.key(late), late.raw) == (peer.sent()[1], peer.sent_frames()[1])
    assert len(collector.events(EventKind.TIMEOUT)) == 1


# -- the cable ------------------------------------------------------------------------------------


def test_unplug_replug_reports_once_and_resumes(
    no_thread_leaks: None, case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer, _ = streaming(case, plug, driver, collector, reconnect_min=0.01, reconnect_max=0.03)
    collector.wait_readings(3)
    peer.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    # a window for several reconnect attempts: asserts an absence, so a slow box only weakens it
    time.sleep(0.2)
    assert len(collector.events(EventKind.DISCONNECTED)) == 1
    assert len(collector.events(EventKind.CONNECTED)) == 1
    before = len(collector.readings())
    peer.replug()
    collector.wait_events(EventKind.CONNECTED, 2)
    collector.wait_readings(before + 3)
    peer.stop()
    kinds = [e.kind for e in collector.events() if e.kind not in (EventKind.BAD_FRAME, EventKind.TIMEOUT)]
    assert kinds == [EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CONNECTED]
    # frames sent while nobody listened are lost, but nothing is invented or reordered
    assert is_subsequence([case.key(r) for r in collector.readings()], peer.sent())


@cases(ASKING)
def test_request_while_unplugged_raises_link_down(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer, drv = running(case, plug, driver, collector, response_timeout=0.05)
    peer.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    with pytest.raises(LinkDown):
        drv.request("read")
    time.sleep(0.1)  # nothing was sent, so nothing may time out
    assert not collector.events(EventKind.TIMEOUT)


def test_missing_port_at_start_then_appears(
    case: DriverCase, setup: Setup, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    drv = driver(reconnect_min=0.01, reconnect_max=0.05)
    (down,) = collector.wait_events(EventKind.DISCONNECTED)
    assert setup.address in down.detail
    peer = plug()
    if case.asks:
        peer.start()
    collector.wait_events(EventKind.CONNECTED)
    read_one(case, peer, drv)
    (reading,) = collector.wait_readings(1)
    assert case.key(reading) == peer.sent()[0]
    assert len(collector.events(EventKind.DISCONNECTED)) == 1


# -- lifecycle ------------------------------------------------------------------------------------


def test_stop_is_prompt_even_during_a_long_backoff(
    no_thread_leaks: None, case: DriverCase, driver: MakeDriver, collector: Collector
) -> None:
    drv = driver(reconnect_min=5.0, reconnect_max=10.0)
    collector.wait_events(EventKind.DISCONNECTED)  # no device: now waiting out a 5 s backoff
    t0 = time.monotonic()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    drv.stop()  # idempotent


def test_stop_joins_every_thread_and_the_driver_restarts(
    no_thread_leaks: None, case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer, drv = running(case, plug, driver, collector)
    read_one(case, peer, drv)
    collector.wait_readings(1)
    t0 = time.monotonic()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    assert not [t.name for t in threading.enumerate() if t.name.endswith(f":{DEVICE}")]
    drv.stop()  # idempotent
    drv.start(collector)
    collector.wait_events(EventKind.CONNECTED, 2)
    read_one(case, peer, drv)
    collector.wait_readings(2)


def test_a_failing_sink_does_not_kill_the_reader(
    case: DriverCase, plug: Plug, driver: MakeDriver, collector: Collector
) -> None:
    peer = plug()
    if case.asks:
        peer.start()
    drv = driver(start=False)
    failed: list[Reading | tuple[Reading, ...]] = []

    def sink(item: Any) -> None:
        # a reading, or a poll cycle's readings together (Modbus)
        if isinstance(item, Reading | tuple) and not failed:
            failed.append(item)
            raise RuntimeError("sink bug")
        collector(item)

    drv.start(sink)
    try:
        collector.wait_events(EventKind.CONNECTED)
        read_one(case, peer, drv)  # the sink raises on this one
        collector.wait_until(lambda: bool(failed), what="the failing delivery")
        read_one(case, peer, drv)
        (reading,) = collector.wait_readings(1)
        assert case.key(reading) == peer.sent()[1]
    finally:
        drv.stop()


# -- the simulator's command line -----------------------------------------------------------------


def test_simulator_command_line_serves_the_driver(
    case: DriverCase, setup: Setup, driver: MakeDriver, collector: Collector
) -> None:
    argv = case.cli(setup)
    args = build_parser().parse_args(argv)
    lines: list[str] = []
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(args.run(args, lines.append, stop)))
    runner.start()
    try:
        collector.wait_until(lambda: bool(lines), what="the banner")
        driver(**case.polling)
        collector.wait_readings(1)
    finally:
        stop.set()
        runner.join(5.0)
    assert result == [0]
    assert f"{argv[0]} simulator" in lines[0] and setup.address in lines[0]
    if setup.address.startswith("/"):
        assert not Path(setup.address).exists()  # closing the simulator removes the pty link
