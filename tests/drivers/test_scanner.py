"""What is particular to barcode scanners, against the scanner simulator over a real pty (no mocks).

The contract every driver keeps is in test_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import pytest
import yaml

from drivers import registry
from drivers.base import EventKind, ReadingStatus
from drivers.serial.scanner import ScannerConfig, ScannerDriver, decode
from simulators.scanner import ScannerSimulator, ScanScenario

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector, MakeDriver, PlugSim

REPO = Path(__file__).resolve().parents[2]
SHOP = r"(?P<part_number>[A-Z]{2}-\d{4})\|(?P<serial>HX\d{6})\|(?P<lot>L[\d-]+)"
MakeScanner = Callable[..., ScannerSimulator]


@pytest.fixture
def make_scanner(plug_sim: PlugSim) -> MakeScanner:
    return lambda scenario=None, **kw: plug_sim(
        ScannerSimulator, scenario or ScanScenario(interval=0.005, seed=7), **kw
    )


def scanner(make_driver: MakeDriver, **settings: Any) -> ScannerDriver:
    drv = make_driver("scanner", **settings)
    assert isinstance(drv, ScannerDriver)
    return drv


def config(**settings: Any) -> ScannerConfig:
    cfg = registry.parse_config({"id": "s", "driver": "scanner", "port": "/dev/ttyACM0", **settings})
    assert isinstance(cfg, ScannerConfig)
    return cfg


# -- registry and configuration -----------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = config()
    assert (cfg.format, cfg.pattern, cfg.terminator, cfg.gtin_to_part_number) == ("raw", None, "\r", {})
    assert cfg.gs1_map == {"01": "gtin", "10": "lot", "21": "serial"}


def test_config_reads_yaml_numbers_as_identifiers() -> None:
    # unquoted in YAML: 01 is the int 1, a GTIN without leading zero is an int
    doc = yaml.safe_load("gs1_map: {01: gtin, 10: lot}\ngtin_to_part_number: {4006381333931: P-1}\n")
    cfg = config(format="gs1", **doc)
    assert cfg.gs1_map == {"01": "gtin", "10": "lot"}
    assert cfg.gtin_to_part_number == {"04006381333931": "P-1"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"format": "pattern"}, "format: pattern needs a pattern"),
        ({"pattern": SHOP}, "only used with format: pattern"),
        ({"format": "pattern", "pattern": "(?P<serial>"}, "not a valid regular expression"),
        ({"format": "pattern", "pattern": r"(?P<badge>\d+)"}, "unknown named groups ['badge']"),
        ({"format": "pattern", "pattern": r"\d+"}, "at least one named group"),
        ({"gs1_map": {"99x": "lot"}}, "not a known GS1 application identifier"),
        ({"gs1_map": {"10": "lot", "21": "lot"}}, "same key"),
        ({"gs1_map": {"10": "lot number"}}, "names"),
        ({"gtin_to_part_number": {"09501101530004": "P"}}, "check digit is wrong"),
        ({"gtin_to_part_number": {"12345": "P"}}, "is not a GTIN"),
        ({"gs1_map": {"01": "part_number"}, "gtin_to_part_number": {"09501101530003": "P"}}, "not both"),
        ({"format": "ean"}, ""),
    ],
)
def test_config_rejects(bad: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        config(**bad)
    assert message in str(info.value)


# -- scanning -----------------------------------------------------------------------------------


def test_gs1_codes_arrive_exactly_as_scanned_and_decode(
    no_thread_leaks: None, make_driver: MakeDriver, make_scanner: MakeScanner, collector: Collector
) -> None:
    sim = make_scanner(ScanScenario(formats=("gs1", "hri"), interval=0.005, seed=1))
    drv = scanner(make_driver, format="gs1", gtin_to_part_number={"09501101530003": "HX-4711"})
    collector.wait_events(EventKind.CONNECTED)
    sim.start()
    collector.wait_readings(6)
    sim.stop()
    codes = sim.sent_codes
    readings = collector.wait_readings(len(codes))
    assert [r.text for r in readings] == codes
    assert "\x1d" in codes[0] and codes[0].startswith("]C1") and codes[1].startswith("(01)")
    assert [r.raw for r in readings] == [c.encode() + b"\r" for c in codes]
    assert {(r.channel, r.value, r.unit, r.status, r.error) for r in readings} == {
        ("code", None, None, ReadingStatus.OK, None)
    }
    fields = [drv.decode(r.text or "") for r in readings]
    assert fields[0] == {"gtin": "09501101530003", "lot": "L2026-1121", "serial": "000001", "part_number": "HX-4711"}
    assert [f["serial"] for f in fields] == [f"{n:06d}" for n in range(1, len(codes) + 1)]
    assert not collector.events(EventKind.BAD_FRAME)


def test_gs1_codes_that_do_not_decode_are_bad_frames(
    make_driver: MakeDriver, make_scanner: MakeScanner, collector: Collector
) -> None:
    sim = make_scanner()
    scanner(make_driver, format="gs1", gtin_to_part_number={"09501101530003": "HX-4711"})
    collector.wait_events(EventKind.CONNECTED)
    sim.scan("]C10109501101530004\x1d10ABC")  # wrong check digit
    sim.scan("(01)04006381333931(10)ABC")  # a valid GTIN this station does not know
    sim.scan("]C0HX-4711|HX000001|L1")  # plain Code 128: not GS1 at all
    sim.scan("(01)09501101530003(17)271331")  # month 13
    sim.scan("(01)09501101530003(10)ABC")
    (reading,) = collector.wait_readings(1)
    bad = collector.wait_events(EventKind.BAD_FRAME, 4)
    assert reading.text == "(01)09501101530003(10)ABC"
    assert [e.raw for e in bad] == [c.data for c in sim.sent[:4]]
    assert "check digit" in bad[0].detail
    assert "04006381333931 is not in gtin_to_part_number" in bad[1].detail
    assert "]C0" in bad[2].detail
    assert "month 13" in bad[3].detail


def test_shop_labels_with_a_pattern(make_driver: MakeDriver, make_scanner: MakeScanner, collector: Collector) -> None:
    sim = make_scanner(ScanScenario(formats=("shop",), serial_start=41))
    drv = scanner(make_driver, format="pattern", pattern=SHOP)
    collector.wait_events(EventKind.CONNECTED)
    sim.scan()
    sim.scan("]C10109501101530003")  # a GS1 label at a station that expects its own
    sim.scan()
    readings = collector.wait_readings(2)
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert [r.text for r in readings] == ["HX-4711|HX000041|L2026-1121", "HX-4711|HX000042|L2026-1121"]
    assert drv.decode(readings[1].text or "") == {"part_number": "HX-4711", "serial": "HX000042", "lot": "L2026-1121"}
    assert "does not match the label pattern" in bad.detail


def test_raw_mode_passes_any_printable_code(
    make_driver: MakeDriver, make_scanner: MakeScanner, collector: Collector
) -> None:
    sim = make_scanner(terminator=b"\r\n")
    drv = scanner(make_driver, terminator="\r\n")
    collector.wait_events(EventKind.CONNECTED)
    for code in ("ABC-123", " spaced code ", "]C10109501101530004", "Größe 42"):
        sim.scan(code)
    readings = collector.wait_readings(4)
    assert [r.text for r in readings] == ["ABC-123", " spaced code ", "]C10109501101530004", "Größe 42"]
    assert readings[3].raw == "Größe 42\r\n".encode()
    assert decode(readings[0].text or "", drv.cfg) == {}


def test_crlf_with_cr_terminator_keeps_codes_clean(
    make_driver: MakeDriver, make_scanner: MakeScanner, collector: Collector
) -> None:
    sim = make_scanner(terminator=b"\r\n")
    scanner(make_driver, format="gs1")
    collector.wait_events(EventKind.CONNECTED)
    sim.scan()
    sim.scan()
    readings = collector.wait_readings(2)
    assert [r.text for r in readings] == sim.sent_codes
    assert not collector.events(EventKind.BAD_FRAME)


# -- faults -------------------------------------------------------------------------------------


def test_garbage_truncated_and_garbled_codes_are_bad_frames(
    make_driver: MakeDriver, make_scanner: MakeScanner, collector: Collector
) -> None:
    sim = make_scanner()
    scanner(make_driver, format="gs1")
    collector.wait_events(EventKind.CONNECTED)
    sim.scan()
    sim.send_garbage(b"\x00\xff\xfe\r")
    truncated = sim.send_truncated()
    garbled = sim.send_garbled()
    sim.send_garbage(b"7" * 600 + b"\r")  # longer than max_frame_length
    sim.scan()
    readings = collector.wait_readings(2)
    bad = collector.wait_events(EventKind.BAD_FRAME, 4)
    assert [r.text for r in readings] == sim.sent_codes
    assert [e.raw for e in bad] == [b"\x00\xff\xfe\r", truncated, garbled, b"7" * 512]
    assert "AI (01) GTIN: expected 14 characters, got 7" in bad[1].detail


def test_control_characters_are_bad_frames_even_in_raw_mode(
    make_driver: MakeDriver, make_scanner: MakeScanner, collector: Collector
) -> None:
    sim = make_scanner()
    scanner(make_driver)
    collector.wait_events(EventKind.CONNECTED)
    sim.send_garbage(b"AB\x07C\r")
    sim.scan("]d2\x1e01\x1d")  # GS, RS belong to codes
    (reading,) = collector.wait_readings(1)
    (bad,) = collector.wait_events(EventKind.BAD_FRAME)
    assert "control character '\\x07'" in bad.detail
    assert reading.text == "]d2\x1e01\x1d"


# -- command line -------------------------------------------------------------------------------
