"""Line-based ASCII instruments: the ``ascii`` driver (see README.md and the samples beside it)."""

from drivers.serial.ascii.codec import LineFormat, ParsedLine, parse_line, parse_number
from drivers.serial.ascii.driver import AsciiLineConfig, AsciiLineDriver

__all__ = ["AsciiLineConfig", "AsciiLineDriver", "LineFormat", "ParsedLine", "parse_line", "parse_number"]
