"""What a station keeps across restarts: one model, saved with its records.

The gateway writes a station's state into the journal in the same transaction as the
records it produced (:meth:`collector.gateway.journal.Journal.append`), so the position in
the plan, the part in front of the station and who signed in never disagree with the
evidence on disk. :class:`SavedState` is the one definition of that text: the station
builds it in :meth:`~collector.inspection.station.Station.state` and reads it back in
``_restore``, through the one mapping :data:`SAVED_AS` of keys to the station's attributes
(``tests/unit/test_station_state.py`` checks that every key is either mapped or converted).

Unknown keys (a newer version's) are ignored and missing ones take their defaults, so a
journal written by another version still restores.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SavedState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    number: int  # the part counter (serial templates number parts with it)
    next: int  # index of the next characteristic in the plan
    context: dict[str, str | None]  # part number, serial, lot, work order, operator ...
    plan: str | None = None  # part number of the plan in force (None: the configured plan)
    templated: bool | None = None  # None: as configured (a serial template or not)
    awaiting_label: bool = False
    labelled: bool = False
    badge_operator: bool = False
    operator_signature: dict[str, str | None] | None = None
    parts_seen: int = 0
    sampled: bool = True
    reason_for_test: str | None = None  # None: as configured
    current: dict[str, Any] | None = None  # the part in progress
    last: dict[str, Any] | None = None  # the part just finished
    pending: dict[str, Any] | None = None  # a requested re-measure
    andon: bool = False
    baselines: dict[str, list[float]] = Field(default_factory=dict)  # SPC baseline values per characteristic
    disposed: list[str] = Field(default_factory=list)  # nonconformances decided (one decision each)


#: saved key -> the station's attribute that holds it as it is (None in the saved text keeps
#: the attribute's configured value). The other keys are converted by the station: ``plan``,
#: ``context``, ``current``, ``last``, ``disposed``.
SAVED_AS: dict[str, str] = {
    "number": "number",
    "next": "next_index",
    "templated": "templated",
    "awaiting_label": "awaiting_label",
    "labelled": "labelled",
    "badge_operator": "badge_operator",
    "operator_signature": "operator_signature",
    "parts_seen": "parts_seen",
    "sampled": "sampled",
    "reason_for_test": "reason_for_test",
    "pending": "_pending",
    "andon": "_andon_on",
    "baselines": "_baselines",
}
#: the keys the station converts itself (see :data:`SAVED_AS`)
CONVERTED = frozenset({"plan", "context", "current", "last", "disposed"})
