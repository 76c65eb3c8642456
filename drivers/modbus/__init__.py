"""Modbus TCP, RTU and ASCII: PLCs and multi-channel sensors polled by the gateway.

See ``README.md`` beside this file for the modules, the specification sections they rely on,
and the readings, events and counters the driver delivers; ``sample.yaml`` for the
configuration. May import ``drivers.base``, ``drivers.backoff``, ``drivers.registry``,
pyserial and pydantic; never ``collector``.
"""
