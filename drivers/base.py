"""The driver contract: bytes in, readings out.

Drivers know nothing of tolerances, records or MQTT. A driver is built from its own
pydantic config model (validated once, at start-up), started with a sink that receives
every :class:`Reading` and every :class:`DeviceEvent`, and stopped. Anything that runs
in the background (a serial reader, a poll loop) is a thread owned by the driver and
joined by :meth:`Driver.stop`.
"""

from __future__ import annotations

import enum
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ReadingStatus(enum.StrEnum):
    """What the device said about the value it sent."""

    OK = "ok"  # a stable, valid value
    UNSTABLE = "unstable"  # a value the device itself marked as not settled (dynamic weight)
    ERROR = "error"  # the device answered with an error state; there is no value


@dataclass(frozen=True, slots=True)
class Reading:
    """One value (or one error state) as a device reported it.

    ``value`` is a :class:`~decimal.Decimal` parsed from the device's own digits, so that no
    binary floating point rounding happens between the gauge and the tolerance check.
    ``raw`` is the complete frame as received, kept as evidence. ``timestamp_ns`` is UTC
    nanoseconds since the epoch taken when the frame was complete.
    """

    device: str
    channel: str
    value: Decimal | None
    unit: str | None
    raw: bytes
    timestamp_ns: int
    status: ReadingStatus = ReadingStatus.OK
    error: str | None = None
    text: str | None = None  # scanners: the decoded code; other drivers leave it empty


def _ok_reading_maker() -> Callable[[str, str, Decimal, str | None, bytes, int], Reading]:
    names = tuple(f.name for f in fields(Reading))
    if names != ("device", "channel", "value", "unit", "raw", "timestamp_ns", "status", "error", "text"):
        raise AssertionError(f"Reading's fields changed to {names}: update ok_reading() with them")
    new = object.__new__
    s_device, s_channel, s_value, s_unit, s_raw, s_ts, s_status, s_error, s_text = (
        getattr(Reading, name).__set__ for name in names
    )
    ok = ReadingStatus.OK

    def ok_reading(
        device: str, channel: str, value: Decimal, unit: str | None, raw: bytes, timestamp_ns: int
    ) -> Reading:
        reading: Reading = new(Reading)
        s_device(reading, device)
        s_channel(reading, channel)
        s_value(reading, value)
        s_unit(reading, unit)
        s_raw(reading, raw)
        s_ts(reading, timestamp_ns)
        s_status(reading, ok)
        s_error(reading, None)
        s_text(reading, None)
        return reading

    return ok_reading


#: ``Reading(device, channel, value, unit, raw, timestamp_ns)`` (status ok, no error, no text) at
#: under half the cost: a frozen dataclass's ``__init__`` sets each field through
#: ``object.__setattr__``, this sets the same slots through their descriptors. The result is
#: equal to the constructor's in every respect; for drivers that build tens of thousands of
#: readings a second (a PLC's registers).
ok_reading = _ok_reading_maker()


class EventKind(enum.StrEnum):
    BAD_FRAME = "bad_frame"  # bytes that do not parse: counted and logged, never a value
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    TIMEOUT = "timeout"  # a request got no answer in time
    #: a handshake with the device (a PLC's part-done / acknowledge) waits longer than it may:
    #: the station is held up until the matching RESUMED
    STALLED = "stalled"
    RESUMED = "resumed"  # the stalled handshake moved on


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device: str
    kind: EventKind
    detail: str
    raw: bytes = b""
    timestamp_ns: int = field(default_factory=time.time_ns)


#: what a driver hands its sink: one reading, one device event, or every reading of one
#: poll cycle at once (a PLC poll of 200 registers is one item, not 200, so the gateway
#: judges and journals the cycle together)
Item = Reading | DeviceEvent | tuple[Reading, ...]

#: The gateway's sink may block while its bounded queue is full: a driver that polls then
#: polls late (and reports the overrun), one that listens lets the OS buffer the line.
Sink = Callable[[Item], None]


class DriverError(Exception):
    """Base of every error a driver raises."""


class FrameError(DriverError):
    """A frame that does not parse. Carries the offending bytes."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(f"{reason}: {raw!r}")
        self.reason = reason
        self.raw = raw


class DriverConfig(BaseModel):
    """Fields every device has. Each driver extends this with its own settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    driver: str


class Driver(ABC):
    """Base class of all drivers (Telegraf's shape: validate on init, start, stop)."""

    #: the name used in configuration files (``driver: mitutoyo``)
    name: ClassVar[str]
    #: the pydantic model that validates this driver's configuration
    config_model: ClassVar[type[DriverConfig]]
    #: the protocol's frames are binary (Modbus registers): records carry ``raw`` as hex;
    #: text protocols (gauges, scales, scanners) keep the frame as text
    binary: ClassVar[bool] = False

    def __init__(self, config: DriverConfig) -> None:
        self.config = config
        self._sink: Sink | None = None
        self._stop = threading.Event()

    @property
    def device_id(self) -> str:
        return self.config.id

    @abstractmethod
    def start(self, sink: Sink) -> None:
        """Begin delivering readings and events to ``sink``. Returns at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and join every thread the driver started. Idempotent."""

    def request(self, command: str, **kwargs: Any) -> None:  # pragma: no cover - optional
        """Ask the device for something (a reading, a zero); drivers that cannot raise."""
        raise DriverError(f"driver {self.name!r} does not support request {command!r}")

    def label_fields(self, reading: Reading) -> dict[str, str] | None:
        """Fields a scanned label carries (serial, lot, part number ...), for drivers of scanners.

        The default is None: the reading is a measurement, or a code the station decodes
        with its own label pattern.
        """
        return None

    def counters(self) -> dict[str, int]:
        """Numbers for status pages and metrics: running totals since the driver was created
        (requests, faults by kind, overruns ...) and the few current states a driver documents
        as such (slaves silent now). Safe to call from any thread; the default is none.
        """
        return {}

    def emit(self, item: Item) -> None:
        sink = self._sink
        if sink is not None:
            sink(item)
