"""The station session: which part is being inspected, and which characteristic is next.

A reading becomes an inspection record only here: the session binds it to the part in
front of the station (part number, serial, lot, work order, operator), to the next
characteristic of the plan in force and to the gauge it came from, and judges it.

This is the minimal form of the workflow: readings fill the plan's characteristics in
order; when the plan is complete the next reading starts the next part. A serial template
(``SN-{n:05d}``) numbers parts; a scanned label sets the context instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from collector.config import DeviceSettings, PartContext, StationSettings
from collector.errors import CollectorError, SpecificationError
from collector.models import Gauge, InspectionPlan
from collector.records import Record, measurement_record
from collector.tolerance import judge
from drivers.base import Reading, ReadingStatus

CONTEXT_KEYS = ("part_number", "serial", "lot", "work_order", "operator")


class ScanError(CollectorError):
    """A scanned code that does not match the station's label format."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reading that did not become a record, and why (logged and counted by the gateway)."""

    station: str
    device: str
    reason: str


class Station:
    def __init__(
        self,
        settings: StationSettings,
        plan: InspectionPlan,
        gauges: dict[str, Gauge],
        *,
        site: str,
        line: str,
        saved_state: str | None = None,
    ) -> None:
        self.settings = settings
        self.id = settings.id
        self.plan = plan
        self.site = site
        self.line = line
        self._gauges = gauges
        self._devices: dict[str, DeviceSettings] = {d.id: d for d in settings.devices}
        self._scan = re.compile(settings.scan_pattern) if settings.scan_pattern else None
        part = settings.part or PartContext(part_number=plan.part_number)
        self._serial_template = part.serial if part.serial and "{" in part.serial else None
        #: the station numbers parts itself (until a scanned label names the serial)
        self.templated = self._serial_template is not None
        #: the last part's serial came from a label and that part is complete: the next part
        #: needs its own label before any reading counts (two parts never share a serial)
        self.awaiting_label = False
        self.labelled = False  # the current serial came from a scanned label
        self.number = part.first_number
        self.next_index = 0
        self.context: dict[str, str | None] = {k: getattr(part, k) for k in CONTEXT_KEYS}
        if saved_state:
            self._restore(saved_state)
        self._apply_template()

    # -- state that survives a restart -------------------------------------------------------
    def state(self) -> str:
        return json.dumps(
            {
                "number": self.number,
                "next": self.next_index,
                "context": self.context,
                "templated": self.templated,
                "awaiting_label": self.awaiting_label,
                "labelled": self.labelled,
            }
        )

    def _restore(self, text: str) -> None:
        saved = json.loads(text)
        self.number = int(saved["number"])
        self.next_index = int(saved["next"]) % len(self.plan.characteristics)
        self.context.update({k: saved["context"].get(k) for k in CONTEXT_KEYS})
        self.templated = bool(saved.get("templated", self._serial_template is not None))
        self.awaiting_label = bool(saved.get("awaiting_label", False))
        self.labelled = bool(saved.get("labelled", False))

    def _apply_template(self) -> None:
        if self.templated and self._serial_template is not None:
            self.context["serial"] = self._serial_template.format(n=self.number)

    # -- part context ------------------------------------------------------------------------
    def scan(self, code: str) -> dict[str, str]:
        """Apply a scanned label: its named groups replace the part context; a new part starts."""
        if self._scan is None:
            raise ScanError(f"station {self.id}: no scan pattern configured")
        m = self._scan.fullmatch(code.strip())
        if m is None:
            raise ScanError(f"station {self.id}: {code!r} does not match the label format")
        return self.apply_label({k: v for k, v in m.groupdict().items() if v is not None})

    def apply_label(self, fields: dict[str, str]) -> dict[str, str]:
        """Set the part context from a decoded label (scanner driver or scan pattern)."""
        found = {k: v for k, v in fields.items() if k in CONTEXT_KEYS and v}
        if not found:
            raise ScanError(f"station {self.id}: the label carries none of {', '.join(CONTEXT_KEYS)}")
        if "part_number" in found and found["part_number"] != self.plan.part_number:
            raise ScanError(
                f"station {self.id}: part number {found['part_number']!r} has no plan here "
                f"(this station inspects {self.plan.part_number!r})"
            )
        self.context.update(found)
        if "serial" in found:
            self.templated = False
            self.awaiting_label = False
            self.labelled = True
        self.next_index = 0
        return found

    @property
    def next_characteristic(self) -> str:
        return self.plan.characteristics[self.next_index].id

    # -- readings ----------------------------------------------------------------------------
    def accept(self, reading: Reading) -> Record | Refusal:
        """Judge a reading against the next characteristic; return the draft record or a refusal."""
        device = self._devices.get(reading.device)
        if device is None:
            return Refusal(self.id, reading.device, "device is not bound to this station")
        if reading.status is not ReadingStatus.OK or reading.value is None:
            return Refusal(self.id, reading.device, f"reading is {reading.status.value}: {reading.error or ''}")
        if reading.unit is None:
            return Refusal(self.id, reading.device, "reading has no unit")
        if self.awaiting_label:
            return Refusal(self.id, reading.device, "the last part is complete: scan the next part's label first")
        characteristic = self.plan.characteristics[self.next_index]
        try:
            judgement = judge(characteristic, reading.value, reading.unit)
        except SpecificationError as exc:
            return Refusal(self.id, reading.device, str(exc))
        gauge = self._gauges.get(device.gauge) if device.gauge else None
        draft = measurement_record(
            site=self.site,
            line=self.line,
            station=self.id,
            context=self.context,
            plan_revision=self.plan.revision,
            characteristic=characteristic,
            judgement=judgement,
            reading=reading,
            gauge=device.gauge,
            gauge_calibration_due=gauge.calibration_due.isoformat() if gauge else None,
        )
        self._advance()
        return draft

    def _advance(self) -> None:
        self.next_index += 1
        if self.next_index >= len(self.plan.characteristics):
            self.next_index = 0
            self.number += 1
            if self.templated:
                self._apply_template()
            elif self.labelled and self.context.get("serial"):
                self.context["serial"] = None
                self.awaiting_label = True
