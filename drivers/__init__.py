"""Device drivers: one module per protocol. Bytes in, readings out; no tolerance logic, no MQTT.

May import pyserial and pydantic; never ``collector`` (checked by ``lint-imports``).
"""

from drivers.base import (
    DeviceEvent,
    Driver,
    DriverConfig,
    DriverError,
    EventKind,
    FrameError,
    Reading,
    ReadingStatus,
)

__all__ = [
    "DeviceEvent",
    "Driver",
    "DriverConfig",
    "DriverError",
    "EventKind",
    "FrameError",
    "Reading",
    "ReadingStatus",
]
