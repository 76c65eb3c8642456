"""Mettler Toledo balances speaking MT-SICS: the ``mt-sics`` driver (see README.md beside it)."""

from drivers.serial.mt_sics.codec import GENERAL_ERRORS, REPLY_ID, Reply, command, parse_reply
from drivers.serial.mt_sics.driver import CHANNEL, MtSicsConfig, MtSicsDriver, Tare

__all__ = [
    "CHANNEL",
    "GENERAL_ERRORS",
    "REPLY_ID",
    "MtSicsConfig",
    "MtSicsDriver",
    "Reply",
    "Tare",
    "command",
    "parse_reply",
]
