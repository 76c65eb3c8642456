"""Serial instruments: gauges, scales and barcode scanners on RS-232 or USB serial adapters.

``port.py`` is the reconnecting, line-framed serial reader and the base class every driver
here builds on; each other module is one protocol. May import ``drivers.base``,
``drivers.backoff``, ``drivers.registry``, pyserial and pydantic; never ``collector``.
"""
