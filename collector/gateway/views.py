"""What each station's screen shows, kept current for live views (operator view, dashboard).

The gateway's processing thread alone changes a station, so it publishes a fresh snapshot
here after every batch that touched the station; web handlers in other threads read
snapshots and wait for the next one without ever touching the station itself.

It also keeps the last ``HISTORY`` judged values of each characteristic of each station
(:meth:`ViewHub.remember`, every measurement of every batch), for the operator view's small chart. They are what
this gateway judged since it started (a restart begins them again): a picture for the
operator, not evidence; the evidence is in the records.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from typing import Any

HISTORY = 50  # values per characteristic the operator view's chart shows at most


class ViewHub:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._views: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, int] = {}
        self._history: dict[tuple[str, str], deque[tuple[str, float]]] = {}

    def update(self, station: str, view: dict[str, Any]) -> None:
        with self._cond:
            self._views[station] = view
            self._versions[station] = self._versions.get(station, 0) + 1
            view["version"] = self._versions[station]
            self._cond.notify_all()

    def remember(self, station: str, measurements: list[dict[str, Any]]) -> None:
        """Keep the judged values of ``measurements`` (drafts, in order) for the station's charts."""
        with self._cond:
            for m in measurements:
                values = self._history.setdefault((station, str(m.get("characteristic"))), deque(maxlen=HISTORY))
                if m.get("supersedes"):  # a re-measure takes the place of the value it supersedes
                    kept = [(i, v) for i, v in values if i != m["supersedes"]]
                    values.clear()
                    values.extend(kept)
                try:
                    values.append((str(m["id"]), float(m["judged_value"])))
                except (KeyError, TypeError, ValueError):
                    continue  # no judged value: nothing to draw

    def history(self, station: str, characteristic: str) -> list[float]:
        """The last judged values of ``characteristic`` at ``station``, oldest first."""
        with self._cond:
            return [v for _, v in self._history.get((station, characteristic), ())]

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
