"""What is particular to the ID-H indicator: the §4.2.4 command set against the indicator simulator.

The contract every driver keeps (values delivered exactly, bad frames, timeouts, the cable,
stop) is in test_contract.py.
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
from drivers.base import DriverError, EventKind, ReadingStatus
from drivers.serial.mitutoyo_idh import MitutoyoIdhConfig, MitutoyoIdhDriver
from simulators.mitutoyo_idh import MitutoyoIdhSimulator, Scenario

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector, MakeDriver, PlugSim

MakeSim = Callable[..., MitutoyoIdhSimulator]


@pytest.fixture
def make_sim(plug_sim: PlugSim) -> MakeSim:
    return lambda scenario=None: plug_sim(MitutoyoIdhSimulator, scenario or Scenario(seed=7), start=True)


def indicator(make_driver: MakeDriver, **settings: Any) -> MitutoyoIdhDriver:
    drv = make_driver("mitutoyo-idh", **{"poll_interval": None, "response_timeout": 1.0, **settings})
    assert isinstance(drv, MitutoyoIdhDriver)
    return drv


# -- configuration ----------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = registry.parse_config({"id": "i1", "driver": "mitutoyo-idh", "port": "/dev/ttyUSB0"})
    assert isinstance(cfg, MitutoyoIdhConfig)
    assert (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits) == (9600, 8, "N", 1)
    assert (cfg.device_id, cfg.mode, cfg.poll_interval, cfg.response_timeout) == (1, None, 1.0, 1.0)
    assert (cfg.unit, cfg.value_width) == ("mm", 9)


def test_device_id_may_be_written_as_two_digits() -> None:
    cfg = registry.parse_config({"id": "i1", "driver": "mitutoyo-idh", "port": "p", "device_id": "07"})
    assert isinstance(cfg, MitutoyoIdhConfig) and cfg.device_id == 7


@pytest.mark.parametrize(
    "bad",
    [
        {"device_id": 100},
        {"device_id": -1},
        {"mode": "GN"},  # the header of a reply is not a mode
        {"read": "GN"},  # the old, invented setting: GN is no command
        {"poll_interval": 0},
        {"value_width": 0},
        {"value_width": None},
        {"unit": ""},
    ],
)
def test_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({"id": "i1", "driver": "mitutoyo-idh", "port": "/dev/ttyUSB0", **bad})


def test_request_bytes_are_the_manuals() -> None:
    drv = registry.create(registry.parse_config({"id": "i", "driver": "mitutoyo-idh", "port": "p", "device_id": 42}))
    assert isinstance(drv, MitutoyoIdhDriver)
    assert drv.command_bytes("read") == b"GA42\r\n"
    assert drv.command_bytes("zero") == b"CR42\r\n"
    assert drv.command_bytes("clear_peak") == b"CL42\r\n"
    assert drv.command_bytes("judgement") == b"DJ42,OUT\r\n"
    modes = {m: drv.command_bytes("mode", mode=m) for m in ("current", "max", "min", "runout")}
    assert modes == {"current": b"CN42\r\n", "max": b"CX42\r\n", "min": b"CM42\r\n", "runout": b"CW42\r\n"}
    for bad, kwargs in (("mode", {"mode": "GX"}), ("read", {"what": "GX"}), ("GN", {}), ("tare", {})):
        with pytest.raises(DriverError):
            drv.command_bytes(bad, **kwargs)


# -- data output and measurement modes ---------------------------------------------------------------


def test_data_output_is_ga_and_the_reply_header_is_the_channel(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(noise=0.0, drift=0.001, seed=9))
    drv = indicator(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    drv_readings = collector.wait_readings(1)
    assert drv_readings[0].raw == b"GN01,+0016.2345\r\n" and drv_readings[0].channel == "GN"
    for n, mode in enumerate(("max", "min", "runout"), 2):
        drv.request("mode", mode=mode)
        drv.request("read")
        collector.wait_readings(n)
    readings = collector.readings()
    assert [(r.channel, str(r.value)) for r in readings] == [
        ("GN", "16.2345"),
        ("GX", "16.2355"),  # the spindle moved 0.001 per sample: the max is the latest
        ("GM", "16.2345"),
        ("GW", "0.0030"),
    ]
    assert [(r.channel, r.value) for r in readings] == sim.sent_values
    assert sim.commands == ["GA01", "CX01", "GA01", "CM01", "GA01", "CW01", "GA01"]
    assert {(r.unit, r.status, r.text) for r in readings} == {("mm", ReadingStatus.OK, None)}


def test_configured_mode_is_set_once_connected_and_again_after_a_reconnect(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    indicator(make_driver, mode="max", poll_interval=0.02, reconnect_min=0.01, reconnect_max=0.03)
    collector.wait_readings(2)
    assert sim.commands[0] == "CX01" and set(sim.commands[1:]) == {"GA01"}
    assert {r.channel for r in collector.readings()} == {"GX"}
    sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    sim.replug()
    collector.wait_events(EventKind.CONNECTED, 2)
    n = len(collector.readings())
    collector.wait_readings(n + 2)
    assert sim.commands.count("CX01") == 2


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
    assert readings[1].raw == b"GN01,+0000.0000\r\n" and str(readings[1].value) == "0.0000"
    assert sim.commands == ["GA01", "CR01", "GA01"]
    assert b"CH01\r\n" in sim.sent_frames
    time.sleep(0.25)  # past the zero's deadline: CH was its answer, so no timeout
    assert not collector.events(EventKind.TIMEOUT)


def test_peak_hold_starts_again_on_clear(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    make_sim(Scenario(noise=0.0, drift=-0.001, mode="X", seed=1))
    drv = indicator(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    drv.request("read")
    drv.request("clear_peak")
    drv.request("read")
    readings = collector.wait_readings(3)
    # falling spindle: the max holds the first sample until the peak hold starts again
    assert [str(r.value) for r in readings] == ["16.2345", "16.2345", "16.2325"]


# -- the indicator's own judgement ----------------------------------------------------------------------


def test_judgement_is_kept_and_counted_not_emitted(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(noise=0.0, judging=True, lower=Decimal("16.0000"), upper=Decimal("16.2000"), seed=1))
    drv = indicator(make_driver, response_timeout=0.2)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("judgement")
    collector.wait_until(lambda: drv.last_judgement is not None, what="the judgement")
    judgement = drv.last_judgement
    assert judgement is not None and judgement.judgement == "+NG" and judgement.raw == b"DH01,+NG\r\n"
    assert sim.commands == ["DJ01,OUT"] and drv.judgements == {"+NG": 1}
    time.sleep(0.25)  # past the deadline: DH was the answer
    assert len(collector.snapshot()) == 1  # CONNECTED only: a verdict is no reading and no fault


def test_judgement_off_is_reported_as_such(make_driver: MakeDriver, make_sim: MakeSim, collector: Collector) -> None:
    make_sim(Scenario(seed=1))
    drv = indicator(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("judgement")
    collector.wait_until(lambda: drv.judgements == {"JOFF": 1}, what="JOFF")
    assert not collector.readings()


# -- addressing and unknown replies -----------------------------------------------------------------------


def test_reply_from_a_wrong_id_is_a_bad_frame_and_no_answer(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    drv = indicator(make_driver, response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    sim.answer_as(2)
    drv.request("read")
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert bad.raw.startswith(b"GN02,") and bad.detail == "ID No. 02 is not the configured 01"
    (timeout,) = collector.wait_events(EventKind.TIMEOUT)
    assert timeout.detail == "no answer to GA01 within 0.1 s"
    sim.answer_as(None)
    drv.request("read")
    assert collector.wait_readings(1)[0].raw.startswith(b"GN01,")


def test_commands_for_another_id_are_ignored_by_the_indicator(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim(Scenario(device_id=5, seed=1))
    drv = indicator(make_driver, device_id=6, response_timeout=0.1)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("read")
    collector.wait_events(EventKind.TIMEOUT)
    assert sim.commands == ["GA06"] and not sim.sent_frames


def test_replies_outside_the_manual_are_bad_frames(
    make_driver: MakeDriver, make_sim: MakeSim, collector: Collector
) -> None:
    sim = make_sim()
    drv = indicator(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    truncated = sim.send_truncated()
    for line in (b"ERR\r\n", b"DH01,MAYBE\r\n", b"GN01,+016.2345\r\n", b"GN01,+0016.2345\n", b"GN01 +0016.2345\r\n"):
        sim.send_garbage(line)
    drv.request("read")
    (reading,) = collector.wait_readings(1)
    bad = collector.wait_events(EventKind.BAD_FRAME, 5)
    assert reading.raw.startswith(b"GN01,+0016.")
    # the LF-only line has no line end of its own: it runs into the next line
    assert [e.raw for e in bad] == [
        truncated,
        b"ERR\r\n",
        b"DH01,MAYBE\r\n",
        b"GN01,+016.2345\r\n",
        b"GN01,+0016.2345\nGN01 +0016.2345\r\n",
    ]
    assert "value is 8 characters after the sign, expected 9" in bad[3].detail


# -- the simulator by itself ------------------------------------------------------------------------------


def talk(port: serial.Serial, command: bytes) -> bytes:
    port.write(command + b"\r\n")
    return bytes(port.read_until(b"\r\n"))


def test_simulator_answers_the_rows_of_the_manual(make_sim: MakeSim, link_path: Path) -> None:
    make_sim(Scenario(device_id=3, nominal=Decimal("-1.5"), noise=0.0, decimals=3, seed=1))
    with serial.Serial(str(link_path), timeout=2.0) as port:
        assert talk(port, b"GA03") == b"GN03,-00001.500\r\n"
        assert talk(port, b"CX03") == b"CH03\r\n"
        assert talk(port, b"GA03") == b"GX03,-00001.500\r\n"
        assert talk(port, b"CW03") == b"CH03\r\n"
        assert talk(port, b"GA03") == b"GW03,+00000.000\r\n"
        assert talk(port, b"CN03") == b"CH03\r\n"
        assert talk(port, b"CR03") == b"CH03\r\n"
        assert talk(port, b"GA03") == b"GN03,+00000.000\r\n"
        assert talk(port, b"CG03,+0000.100") == b"CH03\r\n"
        assert talk(port, b"CD03,-0000.100") == b"CH03\r\n"
        assert talk(port, b"DJ03,OUT") == b"DH03,JOFF\r\n"
        assert talk(port, b"DJ03,ON") == b"DH03\r\n"
        assert talk(port, b"DJ03,OUT") == b"DH03,OK\r\n"
        assert talk(port, b"DJ03,GOUT") == b"DG03,+00000.100\r\n"
        port.write(b"GN03\r\n")  # a reply header is no command: the indicator says nothing
        port.timeout = 0.2
        assert port.read(1) == b""


def test_simulator_refuses_impossible_scenarios() -> None:
    with pytest.raises(ValueError, match="does not fit in 9 characters"):
        Scenario(nominal=Decimal("123456.0"))  # does not fit nine characters with four decimals
    with pytest.raises(ValueError, match="judging needs lower and upper limits"):
        Scenario(judging=True)  # judging needs limits
    with pytest.raises(ValueError, match="device_id must be 0"):
        Scenario(device_id=100)
    with pytest.raises(ValueError, match="mode must be one of"):
        Scenario(mode="GN")
