"""What is particular to the Digimatic adapter driver, against the adapter simulator.

The contract every driver keeps is in test_contract.py (push and request set-ups).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

import pydantic
import pytest

from drivers import registry
from drivers.base import DriverError, EventKind
from drivers.serial.mitutoyo import MitutoyoConfig, MitutoyoDriver
from simulators.mitutoyo import MitutoyoSimulator, Scenario

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector, MakeDriver, PlugSim

MakeSim = Callable[..., MitutoyoSimulator]


@pytest.fixture
def make_sim(plug_sim: PlugSim) -> MakeSim:
    return lambda scenario=None, **kw: plug_sim(MitutoyoSimulator, scenario or Scenario(interval=0.01, seed=7), **kw)


def test_config_defaults_follow_the_adapter() -> None:
    cfg = registry.parse_config({"id": "c1", "driver": "mitutoyo", "port": "/dev/ttyUSB0"})
    assert isinstance(cfg, MitutoyoConfig)
    # 99MAF600B §6.3.1: 9600 baud, 8 data bits, no parity, 1 stop bit
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits, cfg.unit) == (9600, 8, "N", 1, "mm")
    assert cfg.request is None and cfg.poll_interval is None and cfg.channel is None


@pytest.mark.parametrize(
    "bad",
    [
        {"poll_interval": 1.0},  # polling without a request string
        {"channel": "1"},
        {"request": ""},
        {"request": "µ\r"},
        {"stopbits": 3},
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({"id": "c1", "driver": "mitutoyo", "port": "/dev/ttyUSB0", **bad})


def test_config_accepts_one_and_a_half_stop_bits() -> None:
    cfg = registry.parse_config({"id": "c1", "driver": "mitutoyo", "port": "p", "stopbits": 1.5})
    assert isinstance(cfg, MitutoyoConfig) and cfg.stopbits == 1.5


def test_request_needs_a_request_string(make_driver: MakeDriver) -> None:
    drv = make_driver("mitutoyo", start=False)
    with pytest.raises(DriverError, match="no request string"):
        drv.request("read")
    asking = make_driver("mitutoyo", start=False, request="1\r")
    assert isinstance(asking, MitutoyoDriver)
    assert asking.command_bytes("read") == b"1\r"


def test_unit_comes_from_configuration(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim(Scenario(decimals=5, nominal=Decimal("0.50000")))
    make_driver("mitutoyo", unit="in")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("0.12340"))
    (reading,) = collector.wait_readings(1)
    assert reading.raw == b"01A+00.12340\r"  # 99MAF600B §6.3.4: inch, 0.00005
    assert str(reading.value) == "0.12340" and reading.unit == "in"


def test_channel_filter(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    sim = make_sim(Scenario(channel="01"))
    make_driver("mitutoyo", channel="02")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_value(Decimal("1.000"))
    sim.send_garbage(b"02A+0002.000\r")
    (reading,) = collector.wait_readings(1)
    assert reading.channel == "02" and reading.value == Decimal("2.000")
    (bad,) = collector.events(EventKind.BAD_FRAME)
    assert bad.raw == b"01A+0001.000\r" and "channel 01" in bad.detail


def test_noise_on_plugging_in_does_not_lose_the_data_press(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    make_driver("mitutoyo")
    collector.wait_events(EventKind.CONNECTED)
    sim.send_noise(b"\x00\xff")
    sim.send_value(Decimal("1.000"))
    (reading,) = collector.wait_readings(1)
    (noise,) = collector.events(EventKind.BAD_FRAME)
    assert (noise.raw, reading.raw, reading.value) == (b"\x00\xff", b"01A+0001.000\r", Decimal("1.000"))


def test_frames_outside_the_layout_are_bad_frames(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    make_driver("mitutoyo")
    collector.wait_events(EventKind.CONNECTED)
    truncated = sim.send_truncated()
    for frame in (b"#E01\r", b"01A+00001234\r", b"01A+0012.34\r", b"01A+0000.123\n"):
        sim.send_garbage(frame)
    sim.send_value(Decimal("-12.340"))
    (reading,) = collector.wait_readings(1)
    bad = collector.wait_events(EventKind.BAD_FRAME, 5)
    assert str(reading.value) == "-12.340"
    assert [e.raw for e in bad][:4] == [truncated, b"#E01\r", b"01A+00001234\r", b"01A+0012.34\r"]
    assert bad[1].detail == "adapter error line"
    assert "exactly one decimal point" in bad[2].detail
    # an LF is no line end for the adapter: the next frame runs into that line
    assert bad[4].raw == b"01A+0000.123\n"
