"""Protocol-true peers of every driver, for tests and the demo (no hardware needed).

Written from the manuals, never from the drivers: may import pymodbus (the PLC's TCP server
and request handling); never ``drivers`` or ``collector`` (checked by ``lint-imports``).
"""
