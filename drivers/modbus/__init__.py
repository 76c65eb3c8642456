"""Modbus TCP and RTU: PLCs and multi-channel sensors polled by the gateway.

``driver.py`` runs the poll loop, ``planner.py`` merges addresses into the fewest requests,
``codec.py`` turns registers into values and back. May import ``drivers.base``,
``drivers.backoff``, ``drivers.registry``, pymodbus and pydantic; never ``collector``.
"""
