"""No mutated frame yields a value that was not sent: a property-based test per serial driver.

Valid frames come from the simulators' encoders, which are written from the manuals, not
from the drivers. A stream of them is mutated (bytes flipped, inserted, deleted), fed
through the driver exactly as bytes read from the port would be (framing, resync, parsing),
and every reading the driver yields must be one a device could have sent for exactly that
content: its raw bytes must be the simulator's own encoding of its value (and unit,
channel, stability). A frame that lost or gained a character is therefore never a value.

One thing no receiver can tell: a mutation that turns a valid frame into another valid
frame (a digit changed into another digit; these protocols carry no checksum). Such a
frame is, byte for byte, what a device sends for another value; the test accepts it only
when it is exactly that, and counts nothing else as acceptable.

``MUTATION_EXAMPLES`` (environment) sets the number of examples per driver; the default
keeps the suite fast, a large number (a million) is the soak run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers import registry
from drivers.base import DeviceEvent, Reading, ReadingStatus
from drivers.serial.port import SerialLineDriver
from drivers.serial.scanner import parse_gs1
from simulators import ascii_line, mitutoyo, mitutoyo_idh, mt_sics, sartorius, scanner
from tests.drivers.cases import sample

EXAMPLES = int(os.environ.get("MUTATION_EXAMPLES", "300"))
GS = "\x1d"

#: bytes a noisy line or a lost bit most likes to produce, and any byte at all
NOISE = st.one_of(st.sampled_from(list(b"0123456789.,+- \r\n\x00\xffAgGSN")), st.integers(0, 255))


@dataclass(frozen=True)
class FrameModel:
    """How to make valid frames of one driver and how the device would encode a reading."""

    id: str
    driver: str
    config: dict[str, Any]
    frames: st.SearchStrategy[bytes]  # one valid frame, terminator included
    encode: Callable[[Reading], bytes | None]  # the device's bytes for that reading's content
    keys: Callable[[Reading], object] = field(default=lambda r: (r.channel, r.value, r.unit, r.status, r.text))


def decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent


def numbers(max_digits: int, max_decimals: int, *, negative: bool = True) -> st.SearchStrategy[Decimal]:
    low = -(10**max_digits) + 1 if negative else 0
    return st.builds(
        lambda n, d: Decimal(n).scaleb(-d),
        st.integers(low, 10**max_digits - 1),
        st.integers(1, max_decimals),
    )


def _try(make: Callable[[], bytes]) -> bytes | None:
    try:
        return make()
    except ValueError:
        return None


# -- each driver's frames, from its simulator --------------------------------------------------------


def _mitutoyo_frame(channel: str, value: Decimal) -> bytes | None:
    return _try(lambda: mitutoyo.format_frame(channel, value, decimals(value)))


MITUTOYO = FrameModel(
    "mitutoyo",
    "mitutoyo",
    {},
    st.builds(_mitutoyo_frame, st.sampled_from(["01", "02", "10"]), numbers(7, 6)).filter(bool),  # type: ignore[arg-type]
    lambda r: _mitutoyo_frame(r.channel, r.value) if r.value is not None else None,
)


def _idh_frame(header: str, value: Decimal) -> bytes | None:
    return _try(lambda: mitutoyo_idh.format_value(header, 1, value, decimals(value)))


IDH = FrameModel(
    "mitutoyo-idh",
    "mitutoyo-idh",
    {},
    st.builds(_idh_frame, st.sampled_from(["GN", "GX", "GM", "GW"]), numbers(8, 7)).filter(bool),  # type: ignore[arg-type]
    lambda r: _idh_frame(r.channel, r.value) if r.value is not None else None,
)


def _mt_sics_frame(status: str, value: Decimal, unit: str) -> bytes | None:
    return _try(lambda: mt_sics.format_weight("S", status, value, unit))


MT_SICS = FrameModel(
    "mt-sics",
    "mt-sics",
    {},
    st.builds(_mt_sics_frame, st.sampled_from("SD"), numbers(8, 5), st.sampled_from(["g", "kg", "mg", "ozt"])).filter(
        bool  # type: ignore[arg-type]
    ),
    lambda r: (
        _mt_sics_frame("S" if r.status is ReadingStatus.OK else "D", r.value, r.unit or "")
        if r.value is not None
        else None
    ),
)


def _sbi_frame(value: Decimal, unit: str | None, identifier: str | None) -> bytes | None:
    return _try(lambda: sartorius.format_frame(value, unit, decimals(value), identifier))


def _sbi_encode(r: Reading) -> bytes | None:
    if r.value is None:
        return None
    identifier = None if r.channel == "weight" else r.channel
    return _sbi_frame(r.value, r.unit, identifier)


SBI = FrameModel(
    "sartorius-sbi",
    "sartorius-sbi",
    {"frame": "auto"},
    st.builds(
        _sbi_frame, numbers(6, 5), st.sampled_from(["g", "kg", "ct", None]), st.sampled_from([None, "N", "G#"])
    ).filter(bool),  # type: ignore[arg-type]
    _sbi_encode,
)


def _line(instrument: ascii_line.Instrument, value: Decimal, stable: bool) -> bytes | None:
    return _try(lambda: ascii_line.format_line(value, instrument, stable=stable))


SYLVAC = FrameModel(
    "ascii-sylvac",
    "ascii",
    sample("ascii", "sample-sylvac.yaml"),
    st.builds(
        _line, st.just(ascii_line.SYLVAC), numbers(6, 3).map(lambda v: v.quantize(Decimal("0.001"))), st.just(True)
    ).filter(bool),  # type: ignore[arg-type]
    lambda r: _line(ascii_line.SYLVAC, r.value, True) if r.value is not None else None,
)
OHAUS = FrameModel(
    "ascii-ohaus",
    "ascii",
    sample("ascii", "sample-ohaus.yaml"),
    st.builds(
        _line, st.just(ascii_line.OHAUS), numbers(7, 2).map(lambda v: v.quantize(Decimal("0.01"))), st.booleans()
    ).filter(bool),  # type: ignore[arg-type]
    lambda r: _line(ascii_line.OHAUS, r.value, r.status is ReadingStatus.OK) if r.value is not None else None,
)


def _gs1_fields() -> st.SearchStrategy[list[tuple[str, str]]]:
    gtin = st.text("0123456789", min_size=13, max_size=13).map(lambda d: d + scanner.check_digit(d))
    date = st.builds(
        lambda y, m, d: f"{y:02d}{m:02d}{d:02d}", st.integers(0, 99), st.integers(1, 12), st.integers(1, 28)
    )
    text = st.text("ABCXYZ0123456789-", min_size=1, max_size=10)
    return st.builds(
        lambda g, e, lot, serial: [("01", g), ("17", e), ("10", lot), ("21", serial)], gtin, date, text, text
    )


def _gs1_code(fields: list[tuple[str, str]], printed: bool) -> bytes:
    code = scanner.hri(fields) if printed else scanner.element_string(fields)
    return code.encode() + b"\r"


def _element_string(fields: list[tuple[str, str]], symbology: str | None) -> re.Pattern[str]:
    """The simulator's element string, and the separators that carry no data which scanners
    also send (FNC1 in first position as GS, GS after a field of predefined length or at the
    end): the codes a device sends for exactly these fields."""
    parts = [re.escape(symbology or ""), GS + "?"]
    for n, (ai, value) in enumerate(fields):
        parts.append(re.escape(ai + value))
        needed = ai[:2] not in scanner.PREDEFINED_LENGTH and n < len(fields) - 1
        parts.append(GS if needed else GS + "?")
    assert re.fullmatch("".join(parts), scanner.element_string(fields, symbology=symbology))
    return re.compile("".join(parts))


def _gs1_encode(r: Reading) -> bytes | None:
    """The code as scanned, if it is one a device sends for the fields it holds: the printed
    form, or the element string (with the symbology identifier it came with, if any)."""
    text = r.text or ""
    try:
        fields = list(parse_gs1(text).items())
    except ValueError:
        return None
    # every check digit the simulator knows must hold: a misread GTIN is never a part
    if any(ai == "01" and scanner.check_digit(v[:-1]) != v[-1] for ai, v in fields):
        return None
    symbology = text[:3] if text.startswith("]") else None
    if text == scanner.hri(fields):
        return r.raw
    return r.raw if _element_string(fields, symbology).fullmatch(text) else None


SCANNER = FrameModel(
    "scanner-gs1",
    "scanner",
    {"format": "gs1"},
    st.builds(_gs1_code, _gs1_fields(), st.booleans()),
    _gs1_encode,
)

MODELS = [MITUTOYO, IDH, MT_SICS, SBI, SYLVAC, OHAUS, SCANNER]


# -- mutation and feeding ----------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, stream: bytes) -> bytes:
    """``stream`` with one to three bytes flipped, inserted or deleted."""
    data = bytearray(stream)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "insert", "delete"]))
        if how == "insert" or not data:
            data.insert(draw(st.integers(0, len(data))), draw(NOISE))
        else:
            at = draw(st.integers(0, len(data) - 1))
            if how == "flip":
                data[at] = draw(NOISE)
            else:
                del data[at]
    return bytes(data)


_drivers: dict[str, SerialLineDriver[Any]] = {}


def feed(model: FrameModel, data: bytes) -> list[Reading | DeviceEvent | tuple[Reading, ...]]:
    """``data`` through the driver's own path for bytes read from the port; what it emitted."""
    drv = _drivers.get(model.id)
    if drv is None:
        raw = {"id": "mutations", "driver": model.driver, "port": "/dev/never-opened", **model.config}
        made = registry.create(registry.parse_config(raw))
        assert isinstance(made, SerialLineDriver)
        drv = _drivers[model.id] = made
    items: list[Reading | DeviceEvent | tuple[Reading, ...]] = []
    drv._sink = items.append  # what start() would set; start() would also open the port
    drv.feed(data)
    drv.end_of_stream()
    return items


def readings(items: list[Reading | DeviceEvent | tuple[Reading, ...]]) -> list[Reading]:
    return [i for i in items if isinstance(i, Reading)]


@pytest.mark.parametrize("model", MODELS, ids=[m.id for m in MODELS])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_mutated_frames_never_yield_a_value_that_was_not_sent(model: FrameModel, data: st.DataObject) -> None:
    frames = data.draw(st.lists(model.frames, min_size=1, max_size=4), label="frames")
    stream = b"".join(frames)
    sent = readings(feed(model, stream))
    # the unmutated stream reads back exactly, every frame once: the oracle is sound
    assert [r.raw for r in sent] == frames
    assert [model.encode(r) for r in sent] == frames

    damaged = data.draw(mutated(stream), label="mutated")
    assume(damaged != stream)
    sent_keys = [model.keys(r) for r in sent]
    for reading in readings(feed(model, damaged)):
        if reading.value is None and reading.text is None:
            continue  # an error state: never a number
        assert reading.raw in damaged
        assert reading.raw == model.encode(reading), (
            f"{reading.raw!r} is no frame a device sends for what it read ({model.keys(reading)}); sent {sent_keys}"
        )
