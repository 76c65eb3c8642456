"""Alarm episodes: one alarm from the first point that breaks a rule to the first that no longer does.

A drifting process breaks a run rule on point after point; an alert per point buries the
supervisor in cards (one in five values on a drifting automatic station). An episode is keyed
by station, characteristic and kind: the first alerting value *opens* it (its record id is
the episode's id, and the alarm to acknowledge), every further alerting value *updates* it,
and the first value of that characteristic that alerts no more *closes* it. The alert
messages carry ``episode`` and ``state``; every point stays in the chain as it was.

Episodes live in the gateway's memory: after a restart an episode that was open is closed
by its next good value only if it alerts again first (the next alert opens a new one).
Bounded: past ``limit`` open episodes the oldest is forgotten (counted).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

State = Literal["opened", "updated", "closed"]


class Episodes:
    def __init__(self, limit: int = 10_000) -> None:
        self._open: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self.limit = limit
        self.forgotten = 0

    def step(self, key: tuple[str, str, str], alerting: bool, record_id: str) -> tuple[str, State] | None:
        """The episode and what this value does to it; None when there is nothing to say."""
        episode = self._open.get(key)
        if alerting:
            if episode is not None:
                return episode, "updated"
            self._open[key] = record_id
            while len(self._open) > self.limit:
                self._open.popitem(last=False)
                self.forgotten += 1
            return record_id, "opened"
        if episode is None:
            return None
        del self._open[key]
        return episode, "closed"

    def __len__(self) -> int:
        return len(self._open)
