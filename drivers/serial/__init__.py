"""Serial instruments: gauges, scales and barcode scanners on RS-232 or USB serial adapters.

``port.py`` is the reconnecting, line-framed serial reader and the base class every driver
here builds on; ``frames.py`` the frame rules they share (resynchronisation after noise,
fixed-width numeric fields). Each other folder is one driver: ``codec.py`` (the frame
layout, citing the manual it follows), ``driver.py`` (configuration and driver),
``sample.yaml`` and ``README.md``. May import ``drivers.base``, ``drivers.backoff``,
``drivers.registry``, pyserial and pydantic; never ``collector``.
"""
