"""Small helpers shared by the tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float = 10.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something truthy (so never None); fail with ``what``
    after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = condition()
    while last is None or not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)
        last = condition()
    return last
