"""Sartorius balances speaking SBI: the ``sartorius-sbi`` driver (see README.md beside it)."""

from drivers.serial.sartorius_sbi.codec import SPECIAL_CODES, UNITS, SbiFrame, command, parse_frame
from drivers.serial.sartorius_sbi.driver import COMMANDS, SartoriusConfig, SartoriusDriver

__all__ = [
    "COMMANDS",
    "SPECIAL_CODES",
    "UNITS",
    "SartoriusConfig",
    "SartoriusDriver",
    "SbiFrame",
    "command",
    "parse_frame",
]
