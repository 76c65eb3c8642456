"""Serial barcode scanners: one code per line, decoded into part context (GS1 or a shop format).

Every scanned line becomes ``Reading(value=None, unit=None, text=<the code exactly as
scanned>, channel="code", status=OK)``; ``raw`` holds the bytes with the terminator. The
reading never carries decoded fields (the Reading type has no room for them): the gateway
calls :func:`decode` with the reading's ``text`` and the device's configuration::

    fields = decode(reading.text, config)   # {"gtin": "09501101530003", "lot": "ABC", ...}

``format`` decides what a code must be (the GS1 rules and their sources are in :mod:`.codec`):

* ``raw``: anything printable; :func:`decode` returns ``{}`` and the station's own
  ``scan_pattern`` (if any) applies.
* ``gs1``: a GS1 element string, either as scanned (FNC1 sent as ASCII 29, GS, between
  variable-length fields; an optional AIM symbology identifier ``]C1`` GS1-128, ``]d2`` GS1
  DataMatrix, ``]Q3`` GS1 QR, ``]e0`` GS1 DataBar is stripped) or in the parenthesised
  human-readable form ``(01)09501101530003(10)ABC(21)123``. Application identifiers are
  mapped to context keys by ``gs1_map`` (default: 01 -> gtin, 10 -> lot, 21 -> serial).
  A GTIN identifies the trade item, not the shop's part number: ``gtin_to_part_number``
  translates it when the shop wants that; a GTIN missing from a non-empty map is an error,
  since it is a product this station does not know.
* ``pattern``: a shop label format, a regular expression matched against the whole code
  with named groups among part_number, serial, lot, work_order, operator.

In ``gs1`` and ``pattern`` mode a code that does not decode is a ``BAD_FRAME`` event, never
a reading, so a wrong label is seen at the scanner and not as a part context half set.
A line with control characters (other than GS, RS and EOT, which ISO/IEC 15434 envelopes
and GS1 use) is a bad frame in every mode: it is line noise, not a label. Bytes no scanner
sends (controls, 8-bit) before a code that decodes are reported as a bad frame and the code
is read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from drivers import registry
from drivers.base import FrameError, Reading
from drivers.serial.frames import after_noise
from drivers.serial.port import TERMINATORS, SerialDriverConfig, SerialLineDriver, Terminator, TerminatorText
from drivers.serial.scanner.codec import (
    AIS,
    CHANNEL,
    DEFAULT_GS1_MAP,
    DecodeError,
    check_text,
    compile_label,
    gs1_check_digit,
    parse_gs1,
)

log = logging.getLogger(__name__)

# -- configuration and decode helper ---------------------------------------------------------------


def _normalise_gtin(key: Any) -> str:
    # YAML reads an unquoted GTIN without a leading zero as an int
    text = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) not in (8, 12, 13, 14):
        raise ValueError(f"{key!r} is not a GTIN (8, 12, 13 or 14 digits)")
    gtin = text.zfill(14)
    if gs1_check_digit(gtin[:-1]) != gtin[-1]:
        raise ValueError(f"GTIN {text}: check digit is wrong (expected {gs1_check_digit(gtin[:-1])})")
    return gtin


class ScannerConfig(SerialDriverConfig):
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    #: "\r" also accepts CR LF (the LF is dropped); "\n" also accepts CR LF
    terminator: TerminatorText = "\r"
    format: Literal["gs1", "pattern", "raw"] = "raw"
    #: format: pattern only
    pattern: str | None = None
    #: GS1 application identifier -> context key
    gs1_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_GS1_MAP))
    #: GTIN (8 to 14 digits, padded to 14) -> the shop's part number, sets part_number
    gtin_to_part_number: dict[str, str] = Field(default_factory=dict)
    #: a longer line without terminator is garbage (wrong baud rate, a scanner in the wrong mode)
    max_frame_length: int = Field(default=512, ge=16, le=65536)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            compile_label(value)
        return value

    @field_validator("gs1_map", mode="before")
    @classmethod
    def _ai_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[Any, Any] = {}
        for key, target in value.items():
            # YAML reads an unquoted 01 as the int 1; AIs are at least two digits
            ai = f"{key:02d}" if isinstance(key, int) and not isinstance(key, bool) else key
            if ai not in AIS:
                raise ValueError(f"{key!r} is not a known GS1 application identifier (quote it: '01')")
            out[ai] = target
        return out

    @field_validator("gs1_map")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        targets = list(value.values())
        if any(not t.isidentifier() for t in targets):
            raise ValueError("context keys must be names such as lot or serial")
        if len(set(targets)) != len(targets):
            raise ValueError("two application identifiers map to the same key")
        return value

    @field_validator("gtin_to_part_number", mode="before")
    @classmethod
    def _gtins(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for key, part in value.items():
            gtin = _normalise_gtin(key)
            if gtin in out:
                raise ValueError(f"GTIN {gtin} appears twice")
            out[gtin] = part
        return out

    def _check(self) -> None:
        if self.format == "pattern" and self.pattern is None:
            raise ValueError("format: pattern needs a pattern")
        if self.format != "pattern" and self.pattern is not None:
            raise ValueError("pattern is only used with format: pattern")
        if self.gtin_to_part_number and "part_number" in self.gs1_map.values():
            raise ValueError("part_number comes from gtin_to_part_number or gs1_map, not both")
        super()._check()


def decode(reading_text: str, config: ScannerConfig) -> dict[str, str]:
    """The context fields of a scanned code, as configured for the scanner.

    * ``raw``: ``{}`` (nothing is decoded; the station's ``scan_pattern`` may apply).
    * ``gs1``: each AI of ``gs1_map`` present in the code under its key, plus
      ``part_number`` from ``gtin_to_part_number`` when that map is configured.
    * ``pattern``: the named groups of ``pattern`` that matched.

    Raises :class:`DecodeError` (:class:`GS1Error` for GS1 faults) when the code does not
    decode; the driver never emits such a code as a reading.
    """
    if config.format == "raw":
        return {}
    if config.format == "pattern":
        assert config.pattern is not None  # the config validator guarantees it
        return compile_label(config.pattern).decode(reading_text)
    elements = parse_gs1(reading_text)
    out = {key: elements[ai] for ai, key in config.gs1_map.items() if ai in elements}
    if config.gtin_to_part_number:
        gtin = elements.get("01")
        if gtin is None:
            raise DecodeError("code has no GTIN (01) to look up the part number")
        part = config.gtin_to_part_number.get(gtin)
        if part is None:
            raise DecodeError(f"GTIN {gtin} is not in gtin_to_part_number")
        out["part_number"] = part
    return out


# -- driver ---------------------------------------------------------------------------------------


@registry.register
class ScannerDriver(SerialLineDriver[ScannerConfig]):
    name = "scanner"
    config_model = ScannerConfig

    def _terminator(self) -> Terminator:
        return TERMINATORS[self.cfg.terminator]

    def decode(self, text: str) -> dict[str, str]:
        """:func:`decode` with this scanner's configuration."""
        return decode(text, self.cfg)

    def label_fields(self, reading: Reading) -> dict[str, str] | None:
        """The label's fields for the station; None in raw mode (the station's pattern decides)."""
        fields = self.decode(reading.text or "")
        return fields or None

    # -- internals ---------------------------------------------------------------------------

    def _code(self, frame: bytes) -> str:
        """The code of a line, if it is one this scanner's format accepts."""
        try:
            text = check_text(frame)
            decode(text, self.cfg)
        except DecodeError as exc:
            raise FrameError(str(exc), frame) from None
        return text

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        found = self._find(frame, raw, timestamp_ns, self._code, after_noise)
        if found is None:
            return
        text, raw = found
        self.emit(
            Reading(
                device=self.device_id,
                channel=CHANNEL,
                value=None,
                unit=None,
                raw=raw,
                timestamp_ns=timestamp_ns,
                text=text,
            )
        )
