"""Mitutoyo Digimatic interface adapters: the ``mitutoyo`` driver (see README.md beside it)."""

from drivers.serial.mitutoyo.codec import FRAME_LENGTH, parse_frame
from drivers.serial.mitutoyo.driver import MitutoyoConfig, MitutoyoDriver

__all__ = ["FRAME_LENGTH", "MitutoyoConfig", "MitutoyoDriver", "parse_frame"]
