"""Serial barcode scanners: the ``scanner`` driver (see README.md beside it)."""

from drivers.serial.scanner.codec import (
    AIS,
    GS,
    LABEL_GROUPS,
    AISpec,
    DecodeError,
    GS1Error,
    LabelFormat,
    check_text,
    gs1_check_digit,
    gs1_date,
    parse_gs1,
    strip_symbology,
)
from drivers.serial.scanner.driver import ScannerConfig, ScannerDriver, decode

__all__ = [
    "AIS",
    "GS",
    "LABEL_GROUPS",
    "AISpec",
    "DecodeError",
    "GS1Error",
    "LabelFormat",
    "ScannerConfig",
    "ScannerDriver",
    "check_text",
    "decode",
    "gs1_check_digit",
    "gs1_date",
    "parse_gs1",
    "strip_symbology",
]
