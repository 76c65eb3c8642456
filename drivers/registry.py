"""Maps the ``driver:`` name in a configuration file to a driver class.

Drivers register themselves with :func:`register`; built-in drivers are imported lazily
by :func:`get` so that a gateway only imports the protocol modules it uses.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from drivers.base import Driver, DriverConfig

#: driver name -> module that defines it (imported on first use)
BUILTIN: dict[str, str] = {
    "mitutoyo": "drivers.serial.mitutoyo",
    "mitutoyo-idh": "drivers.serial.mitutoyo_idh",
    "mt-sics": "drivers.serial.mt_sics",
    "sartorius-sbi": "drivers.serial.sartorius_sbi",
    "ascii": "drivers.serial.ascii",
    "scanner": "drivers.serial.scanner",
    "modbus": "drivers.modbus.driver",
}

_registry: dict[str, type[Driver]] = {}


class UnknownDriver(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        known = ", ".join(names())
        return f"unknown driver {self.name!r} (known: {known})"


def register(cls: type[Driver]) -> type[Driver]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    _registry[cls.name] = cls
    return cls


def get(name: str) -> type[Driver]:
    if name not in _registry and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    try:
        return _registry[name]
    except KeyError:
        raise UnknownDriver(name) from None


def names() -> list[str]:
    """Every driver that can be used: registered ones and built-ins whose module is present."""
    found = set(_registry)
    for name, module in BUILTIN.items():
        if importlib.util.find_spec(module) is not None:
            found.add(name)
    return sorted(found)


def parse_config(raw: Mapping[str, Any]) -> DriverConfig:
    """Validate one device's settings with its driver's model (raises pydantic's ValidationError)."""
    name = raw.get("driver")
    if not isinstance(name, str):
        raise UnknownDriver(str(name))
    return get(name).config_model.model_validate(dict(raw))


def create(config: DriverConfig) -> Driver:
    return get(config.driver)(config)
