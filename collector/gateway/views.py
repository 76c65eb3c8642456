"""What each station's screen shows, kept current for live views (operator view, dashboard).

The gateway's processing thread alone changes a station, so it publishes a fresh snapshot
here after every batch that touched the station; web handlers in other threads read
snapshots and wait for the next one without ever touching the station itself.
"""

from __future__ import annotations

import copy
import threading
from typing import Any


class ViewHub:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._views: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, int] = {}

    def update(self, station: str, view: dict[str, Any]) -> None:
        with self._cond:
            self._views[station] = view
            self._versions[station] = self._versions.get(station, 0) + 1
            view["version"] = self._versions[station]
            self._cond.notify_all()

    def get(self, station: str) -> dict[str, Any] | None:
        with self._cond:
            view = self._views.get(station)
            return copy.deepcopy(view) if view is not None else None

    def field(self, station: str, key: str) -> Any:
        """One entry of the station's view (a copy), without copying the whole view."""
        with self._cond:
            view = self._views.get(station)
            return copy.deepcopy(view.get(key)) if view is not None else None

    def wait(self, station: str, after_version: int, timeout: float) -> dict[str, Any] | None:
        """The station's view once its version is past ``after_version`` (None on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._versions.get(station, 0) > after_version, timeout)
            if self._versions.get(station, 0) <= after_version:
                return None
            return copy.deepcopy(self._views[station])

    def stations(self) -> list[str]:
        with self._cond:
            return sorted(self._views)
