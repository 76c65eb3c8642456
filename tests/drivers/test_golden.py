"""Golden cases: bytes on the wire -> the readings and bad frames a driver must produce.

Every ``*.yaml`` file under ``tests/golden/<driver>/`` is one case, run through the driver
named by its folder with no port and no threads: the bytes go through
``driver.feed()`` (the exact path of bytes read from the port: framing, then parsing), and
the bytes of requests come from ``driver.command_bytes()`` (what ``request()`` writes).
Cases are taken from the manuals: each names the document and section it follows.
Adding a case needs no code. Format::

    description: why this case exists          # required
    source:                                    # required: where the bytes come from
      document: Mitutoyo QM-Height User's Manual No. 99MAF600B
      section: 6.3.4 Data format examples
    sample: sample-ohaus.yaml                  # optional: start from a shipped sample beside the driver
    config: {unit: in}                         # optional driver settings (id, driver, port are filled in)
    sends:                                     # optional: the exact bytes of requests
      - {request: read, bytes: "GA01\\r\\n"}     # options: {mode: max} for keyword arguments
    input: "01A+0000.123\\r"                     # a string, or a list of strings fed as separate reads
    end_of_stream: true                        # optional: the stream is cut after the input
    expect:                                    # in order; nothing else may be emitted
      - reading: {channel: "01", value: "0.123", unit: mm, raw: "01A+0000.123\\r"}
      - bad_frame: {raw: "#E01\\r", detail: "adapter error"}   # detail: a substring

Strings are YAML double-quoted strings, so ``\\r``, ``\\n``, ``\\t`` and ``\\xNN`` escapes work;
each character U+0000..U+00FF stands for one byte (latin-1). ``value`` is compared as
text, so trailing zeros count. Reading keys left out are not checked, except ``status``
which defaults to ``ok``.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers import registry
from drivers.base import DeviceEvent, EventKind, Reading
from drivers.serial.port import ByteStreamDriver, SerialLineDriver

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
#: golden folders run by their own tests: exports (dfq), request/response protocols whose
#: cases are exchanges rather than a byte stream (modbus: tests/unit/test_modbus_golden.py),
#: and invalid configurations (tests/unit/test_config_golden.py)
NOT_DRIVERS = {"dfq", "modbus", "invalid-config"}
CASE_KEYS = {"description", "source", "sample", "config", "sends", "input", "end_of_stream", "expect"}
SEND_KEYS = {"request", "options", "bytes"}
READING_KEYS = {"channel", "value", "unit", "raw", "status", "error", "text"}
BAD_FRAME_KEYS = {"raw", "detail"}


def _cases() -> list[Any]:
    return [
        pytest.param(path, id=f"{path.parent.name}/{path.stem}")
        for path in sorted(GOLDEN.glob("*/*.yaml")) + sorted(GOLDEN.glob("*/*.yml"))
        if path.parent.name not in NOT_DRIVERS
    ]


def _bytes(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise AssertionError(f"{where}: expected a string, got {text!r}")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise AssertionError(f"{where}: characters above \\xff cannot stand for bytes: {text!r}") from None


def _run(path: Path) -> tuple[dict[str, Any], list[Reading | DeviceEvent]]:
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict), f"{path}: a case is a mapping"
    unknown = set(case) - CASE_KEYS
    assert not unknown, f"{path}: unknown keys {sorted(unknown)}"
    assert case.get("description"), f"{path}: say why the case exists"
    source = case.get("source")
    assert isinstance(source, dict) and source.get("document") and source.get("section"), (
        f"{path}: name the document and section the case follows (source: {{document: ..., section: ...}})"
    )

    driver_name = path.parent.name
    model = registry.get(driver_name).config_model
    settings: dict[str, Any] = {}
    if case.get("sample"):
        # the shipped sample itself: its pattern is what a plant would run
        folder = Path(str(sys.modules[registry.get(driver_name).__module__].__file__)).parent
        settings.update(yaml.safe_load((folder / case["sample"]).read_text(encoding="utf-8"))["devices"][0])
        settings.pop("gauge", None)
    settings.update({"id": "golden", "driver": driver_name})
    if "port" in model.model_fields:
        settings["port"] = "/dev/golden"  # never opened
    settings.update(case.get("config") or {})
    driver = registry.create(registry.parse_config(settings))
    assert isinstance(driver, ByteStreamDriver), f"driver {driver_name!r} cannot be fed bytes"
    assert isinstance(driver, SerialLineDriver)

    for n, send in enumerate(case.get("sends") or []):
        where = f"{path}: sends[{n}]"
        assert isinstance(send, dict) and not set(send) - SEND_KEYS, f"{where}: keys are {sorted(SEND_KEYS)}"
        written = driver.command_bytes(send["request"], **(send.get("options") or {}))
        assert written == _bytes(send["bytes"], where), f"{where}: wrote {written!r}"

    items: list[Reading | DeviceEvent] = []
    # emit() delivers to the sink that start() would set; start() would also open the port
    driver._sink = items.append
    raw_input = case.get("input", "")
    chunks = raw_input if isinstance(raw_input, list) else [raw_input]
    for i, chunk in enumerate(chunks):
        driver.feed(_bytes(chunk, f"{path}: input[{i}]"), 1_000 + i)
    if case.get("end_of_stream"):
        driver.end_of_stream(1_000 + len(chunks))
    return case, items


@pytest.mark.parametrize("path", _cases())
def test_golden(path: Path) -> None:
    case, items = _run(path)
    expected = case.get("expect") or []
    got = [_describe(item) for item in items]
    assert len(items) == len(expected), f"{path}: expected {len(expected)} items, got {got}"
    for n, (want, item) in enumerate(zip(expected, items, strict=True)):
        where = f"{path}: expect[{n}]"
        assert isinstance(want, dict) and len(want) == 1, f"{where}: one of reading / bad_frame"
        ((kind, fields),) = want.items()
        fields = fields or {}
        if kind == "reading":
            assert not set(fields) - READING_KEYS, f"{where}: unknown keys {sorted(set(fields) - READING_KEYS)}"
            assert isinstance(item, Reading), f"{where}: expected a reading, got {_describe(item)}"
            assert item.device == "golden"
            for key in ("channel", "unit", "error", "text"):
                if key in fields:
                    assert getattr(item, key) == fields[key], f"{where}: {key}"
            if "value" in fields:
                want_value = fields["value"]
                got_value = None if item.value is None else str(item.value)
                assert got_value == (None if want_value is None else str(want_value)), f"{where}: value"
                if want_value is not None:
                    assert item.value == Decimal(str(want_value))
            assert str(item.status) == fields.get("status", "ok"), f"{where}: status"
            if "raw" in fields:
                assert item.raw == _bytes(fields["raw"], where), f"{where}: raw"
        elif kind == "bad_frame":
            assert not set(fields) - BAD_FRAME_KEYS, f"{where}: unknown keys"
            assert isinstance(item, DeviceEvent) and item.kind is EventKind.BAD_FRAME, (
                f"{where}: expected a bad frame, got {_describe(item)}"
            )
            if "raw" in fields:
                assert item.raw == _bytes(fields["raw"], where), f"{where}: raw"
            if "detail" in fields:
                assert str(fields["detail"]) in item.detail, f"{where}: detail {item.detail!r}"
        else:
            raise AssertionError(f"{where}: unknown expectation {kind!r}")


def _describe(item: Reading | DeviceEvent) -> str:
    if isinstance(item, Reading):
        return f"reading {item.channel} {item.value} {item.unit} {item.raw!r}"
    return f"{item.kind} {item.detail!r} {item.raw!r}"


def test_golden_cases_exist_for_every_folder() -> None:
    folders = [p for p in GOLDEN.iterdir() if p.is_dir() and p.name not in NOT_DRIVERS]
    assert folders, "no golden folders"
    for folder in folders:
        assert folder.name in registry.names(), f"{folder}: no driver named {folder.name!r}"
        assert any(folder.glob("*.y*ml")), f"{folder}: no cases"
