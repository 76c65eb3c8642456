"""The Sartorius SBI driver against the balance simulator, over a real pty (no mocks)."""

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
from drivers.serial.port import LinkDown
from drivers.serial.sartorius import SartoriusConfig, SartoriusDriver
from simulators import sartorius as sim_module
from simulators.sartorius import SartoriusSimulator, Scenario, format_frame
from tests.helpers import wait_for

if TYPE_CHECKING:
    from conftest import Collector, MakeDriver

REPO = Path(__file__).resolve().parents[2]
MakeBalance = Callable[..., SartoriusSimulator]


@pytest.fixture
def make_balance(link_path: Path) -> Iterator[MakeBalance]:
    sims: list[SartoriusSimulator] = []

    def make(scenario: Scenario | None = None, **kwargs: Any) -> SartoriusSimulator:
        sim = SartoriusSimulator(link_path, scenario or Scenario(interval=0.01, seed=7), **kwargs)
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.close()


def scale(make_driver: MakeDriver, **settings: Any) -> SartoriusDriver:
    drv = make_driver("sartorius-sbi", **settings)
    assert isinstance(drv, SartoriusDriver)
    return drv


# -- registry and configuration -----------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert registry.get("sartorius-sbi") is SartoriusDriver
    assert "sartorius-sbi" in registry.names()


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
        {"reconnect_min": 5, "reconnect_max": 1},
        {"colour": "red"},
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({"id": "s1", "driver": "sartorius-sbi", "port": "/dev/ttyUSB0", **bad})


def test_example_config_file_is_valid() -> None:
    doc = yaml.safe_load((REPO / "config" / "devices" / "sartorius-sbi.yaml").read_text(encoding="utf-8"))
    assert doc["devices"]
    for device in doc["devices"]:
        device = dict(device)
        device.pop("gauge", None)
        assert isinstance(registry.parse_config(device), SartoriusConfig)


# -- request mode -------------------------------------------------------------------------------


def test_request_mode_polls_and_gets_exactly_what_was_sent(
    no_thread_leaks: None, make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(nominal=Decimal("250.00"), noise=0.5, seed=3))
    sim.start()
    drv = scale(make_driver, poll_interval=0.01)
    collector.wait_readings(10)
    drv.stop()
    sim.stop()
    readings = collector.readings()
    assert [r.value for r in readings] == sim.sent_values[: len(readings)]
    assert [str(r.value) for r in readings] == [str(v) for v in sim.sent_values[: len(readings)]]
    assert [r.raw for r in readings] == sim.sent_frames[: len(readings)]
    assert all(len(r.raw) == 16 and r.raw.endswith(b"\r\n") for r in readings)
    assert {(r.device, r.channel, r.unit, r.status) for r in readings} == {
        ("caliper-1", "weight", "g", ReadingStatus.OK)
    }
    assert set(sim.commands) == {"P"}
    assert not collector.events(EventKind.TIMEOUT)
    assert not collector.events(EventKind.BAD_FRAME)


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


def test_push_mode_delivers_exactly_what_was_sent(
    no_thread_leaks: None, make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(noise=0.3, interval=0.005, seed=5), mode="push")
    scale(make_driver, mode="push")
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(20)
    sim.stop()
    sent = sim.sent_values
    readings = collector.wait_readings(len(sent))
    assert [r.value for r in readings] == sent
    assert [r.raw for r in readings] == sim.sent_frames
    assert sim.commands == []


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
    ("text", "error"),
    [
        ("High", "High (overload)"),
        ("Low", "Low (underload)"),
        ("Err 123", "Err 123 (balance error)"),
        ("Stat ERR 123", "Stat ERR 123 (balance status error)"),
    ],
)
def test_special_texts_are_errors_never_numbers(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector, text: str, error: str
) -> None:
    sim = make_balance(Scenario(noise=0.0))
    sim.start()
    drv = scale(make_driver, mode="push")
    collector.wait_events(EventKind.CONNECTED)
    sim.show_special(text)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    assert (reading.status, reading.value, reading.unit, reading.error) == (ReadingStatus.ERROR, None, None, error)
    assert reading.raw == sim.sent_frames[0] and len(reading.raw) == 16
    sim.show_special(None)
    drv.request("read")
    assert collector.wait_readings(2)[1].value == Decimal("100.00")


# -- faults -------------------------------------------------------------------------------------


def test_garbage_and_truncated_frames_are_bad_frames(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(noise=0.0))
    scale(make_driver, mode="push")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("1.00"))
    sim.send_garbage(b"\x00\xff\xfe\r\n")
    truncated = sim.send_truncated()
    sim.send_garbage(b"+    1x.00 g  \r\n")
    sim.send_garbage(b"x" * 100 + b"\r\n")  # longer than max_frame_length
    sim.send_value(Decimal("2.00"))
    readings = collector.wait_readings(2)
    bad = collector.wait_events(EventKind.BAD_FRAME, 4)
    assert [str(r.value) for r in readings] == ["1.00", "2.00"]
    assert [e.raw for e in bad] == [b"\x00\xff\xfe\r\n", truncated, b"+    1x.00 g  \r\n", b"x" * 64]
    assert "value is not a decimal number" in bad[2].detail


def test_random_corruption_never_yields_a_value(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(noise=0.2, bad_rate=0.3, interval=0.003, seed=9), mode="push")
    scale(make_driver, mode="push")
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(30)
    sim.stop()
    sent, bad_sent = sim.sent_values, sim.bad_frames
    assert bad_sent
    collector.wait_for(
        lambda c: len(c.readings()) + len(c.events(EventKind.BAD_FRAME)) >= len(sent) + len(bad_sent),
        what="every frame accounted for",
    )
    assert [r.value for r in collector.readings()] == sent
    assert [e.raw for e in collector.events(EventKind.BAD_FRAME)] == bad_sent


def test_silence_is_a_timeout_and_answers_resume(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance()
    sim.start()
    sim.go_silent(True)
    drv = scale(make_driver, mode="push", response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    (event,) = collector.wait_events(EventKind.TIMEOUT)
    assert "0.1 s" in event.detail and event.device == "caliper-1"
    assert not collector.readings()
    assert sim.commands == ["P"]  # heard, not answered
    sim.go_silent(False)
    drv.request("read")
    collector.wait_readings(1)
    assert len(collector.events(EventKind.TIMEOUT)) == 1


def test_polling_a_silent_balance_reports_timeouts(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance()
    sim.start()
    sim.go_silent(True)
    scale(make_driver, poll_interval=0.02, response_timeout=0.05)
    collector.wait_events(EventKind.TIMEOUT, 3)
    sim.go_silent(False)
    collector.wait_readings(2)


def test_slow_answers(make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector) -> None:
    sim = make_balance()
    sim.start()
    drv = scale(make_driver, mode="push", response_timeout=0.3)
    collector.wait_events(EventKind.CONNECTED)
    sim.set_delay(0.05)  # slow, but in time
    drv.request("read")
    collector.wait_readings(1)
    sim.set_delay(0.5)  # too slow: a timeout, then the late answer still counts
    drv.request("read")
    collector.wait_events(EventKind.TIMEOUT)
    collector.wait_readings(2)
    assert len(collector.events(EventKind.TIMEOUT)) == 1


def test_unplug_replug_reports_once_and_resumes(
    no_thread_leaks: None, make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance(Scenario(interval=0.005, seed=2), mode="push")
    scale(make_driver, mode="push", reconnect_min=0.01, reconnect_max=0.03)
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(5)

    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    # asserts an absence over several reconnect attempts: a slow machine weakens it, never flakes it
    time.sleep(0.2)
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


def test_request_while_unplugged_raises_link_down(
    make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance()
    drv = scale(make_driver, mode="push", response_timeout=0.05)
    collector.wait_events(EventKind.CONNECTED)
    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    with pytest.raises(LinkDown):
        drv.request("read")
    with pytest.raises(LinkDown):
        drv.request("tare")
    time.sleep(0.1)
    assert not collector.events(EventKind.TIMEOUT)  # nothing was sent, so nothing is awaited


def test_stop_joins_every_thread(
    no_thread_leaks: None, make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector
) -> None:
    sim = make_balance()
    sim.start()
    drv = scale(make_driver, poll_interval=0.01)
    collector.wait_readings(2)
    t0 = time.monotonic()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    names = {t.name for t in threading.enumerate()}
    assert not {"serial:caliper-1", "requester:caliper-1"} & names
    drv.stop()  # idempotent
    sim.stop()


def test_restart_after_stop(make_driver: MakeDriver, make_balance: MakeBalance, collector: Collector) -> None:
    sim = make_balance()
    sim.start()
    # 8N1: reopening the same Linux pty with 7-bit parity fails in tcsetattr (EINVAL), a pty quirk
    drv = scale(make_driver, mode="push", response_timeout=0.2, baudrate=19200, bytesize=8, parity="N")
    collector.wait_events(EventKind.CONNECTED)
    drv.stop()
    drv.start(collector)
    collector.wait_events(EventKind.CONNECTED, 2)
    drv.request("read")
    collector.wait_readings(1)
    sim.go_silent(True)
    drv.request("read")  # the restarted requester still watches deadlines
    collector.wait_events(EventKind.TIMEOUT)
    drv.stop()


# -- command line -------------------------------------------------------------------------------


def test_cli_subcommand_runs_until_stopped(link_path: Path) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="simulator", required=True)
    sim_module.add_parser(sub)
    args = parser.parse_args(["sartorius-sbi", "--link", str(link_path), "--mode", "push", "--interval", "0.01"])
    lines: list[str] = []
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(args.run(args, lines.append, stop)))
    runner.start()
    try:
        wait_for(lambda: sum(" value " in line for line in lines) >= 2, 5.0, "two printed frames")
        assert "sartorius-sbi simulator on" in lines[0]
        assert " value " in lines[1] and "g  \\r\\n'" in lines[1]
    finally:
        stop.set()
        runner.join(5.0)
    assert result == [0]
    assert not link_path.exists()
