"""Inspection data collector: domain, gateway, recorder, stores and CLI.

One package per role (see the README's folder map); each package's docstring says what it
may import, and the import contracts in ``pyproject.toml`` check it (``lint-imports``).
Reaches devices only through ``drivers.registry`` and ``drivers.base``.
"""

__version__ = "0.1.0"
