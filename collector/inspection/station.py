"""The station session: who measures which part, against which plan, with which gauge.

A reading becomes an inspection record only here. The session binds it to the part in
front of the station (part number, serial, lot, work order, operator), to the right
characteristic of the plan in force and to the gauge it came from, checks the gauge's
calibration, and judges it. Around that it keeps the inspection workflow:

- **part context**: set by a scanned label (a GS1 code or the shop's own format), or by
  the configuration (a fixed part number, a serial template ``SN-{n:05d}`` that numbers
  parts), or by a PLC (a serial read from registers starts a new part);
- **operator**: signed in by scanning a badge (and, with a user register, entering a PIN
  or password), signed out by command or after an idle timeout; every record carries the
  operator, and a person's command is signed (who, how authenticated, what it means);
- **competence gate**: with a user register, a person with no valid qualification for the
  plan is refused at sign-in, and readings while they are signed in are refused, recorded
  and alerted, as readings from an overdue gauge are;
- **guided sequence**: readings fill the plan's characteristics in order, unless a device
  is bound to characteristics by channel (automatic stations) or limited to some of them
  (a reading for another characteristic is refused as coming from the wrong gauge);
- **re-measure and invalidation**: the original is never overwritten; the new record
  points at it (``supersedes``) with a reason and the operator;
- **part verdict**: when every characteristic has a value, one part record with accept or
  reject, the records it rests on, and who released it; an abandoned part is recorded as
  incomplete;
- **quality rules**: the calibration gate, a nonconformance opened for every value out of
  tolerance, and SPC rules on each characteristic's judged values.

Every method returns an :class:`Outcome`: the draft records to journal (in order), and
what the gateway should do besides (alerts from SPC, the andon). The session itself does
no I/O; its state is saved with the records, in the same journal transaction.

Why one module of this size: everything here reads or changes the one state that is saved
with the records (the part, the position in the plan, the operator and how they signed in,
a pending re-measure); what does not (record drafts, the command vocabulary, SPC, the
tolerance rule) lives in its own module.

Why one module of this size: the station's workflow is one state machine whose state is saved
with the records; it stays whole, and everything that is not that state lives elsewhere (above).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from collector.config import CalibrationPolicy, DeviceSettings, PartContext, StationSettings
from collector.errors import CollectorError, SpecificationError
from collector.inspection import records as rec
from collector.inspection.commands import CommandError, CommandRefused
from collector.inspection.models import (
    Characteristic,
    Gauge,
    GaugeStatus,
    InspectionPlan,
    ReactionPlan,
    ReasonForTest,
    SpcSettings,
    Verdict,
)
from collector.inspection.records import Record
from collector.inspection.spc import ControlLimits, RuleChecker, RuleSet
from collector.inspection.station_state import SAVED_AS, SavedState
from collector.inspection.tolerance import judge
from collector.people.register import Signature, is_person_id
from drivers import registry
from drivers.base import Reading, ReadingStatus

__all__ = ["CommandError", "CommandRefused", "Outcome", "PeopleGate", "Refusal", "ScanError", "Station"]

CONTEXT_KEYS = ("part_number", "serial", "lot", "work_order", "operator")
_DISPOSED_KEPT = 5000  # nonconformances remembered as decided (the store holds them all)
_OUT_OF_CONTROL_KEPT = 1000  # rule-breaking values whose alarms need the reaction plan's choice


def _rules(spc: SpcSettings) -> RuleSet:
    return RuleSet.parse(spc.rules, run_length=spc.run_length)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: audit events made by a person's command -> what their signature on it means
_MEANINGS = {
    "sign_in": "signed_in",
    "sign_out": "signed_out",
    "abandon": "abandoned",
    "patrol": "patrol_requested",
    "alert_ack": "acknowledged",
    "andon_off": "andon_cleared",
}


class ScanError(CollectorError):
    """A scanned code that cannot be used (format, unknown part number)."""


class PeopleGate(Protocol):
    """What a station asks of the user register (the gateway provides it; None: no register)."""

    @property
    def badge_alone(self) -> bool:
        """A registered badge signs in without a PIN or password."""
        ...

    @property
    def signed_release(self) -> bool:
        """Each completed part waits for its release to be signed (the ``release`` command)."""
        ...

    def identify(self, badge: str) -> Signature | None:
        """The person a badge names (signed with the badge alone), or None."""
        ...

    def competence(self, user: str, part_number: str, today: dt.date) -> str | None:
        """Why ``user`` may not inspect ``part_number`` today, or None (or when the gate is off)."""
        ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reading that did not become a measurement, and why."""

    station: str
    device: str
    reason: str
    reason_code: str = "refused"


@dataclass
class Outcome:
    drafts: list[Record] = field(default_factory=list)
    refusal: Refusal | None = None
    #: draft id of a measurement -> the SPC rules its value tripped
    trends: dict[str, list[int]] = field(default_factory=dict)
    #: the andon should go on (True), off (False), or stay as it is (None)
    andon: bool | None = None
    #: what an operator screen shows about what just happened
    message: str = ""
    #: the command was refused; ``drafts`` hold the record of the refusal
    refused: str | None = None
    #: draft id -> (kind, severity, message): alerts about these records once journaled
    alerts: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def extend(self, other: Outcome) -> Outcome:
        self.drafts.extend(other.drafts)
        self.trends.update(other.trends)
        self.alerts.update(other.alerts)
        self.refused = other.refused or self.refused
        if other.andon is not None:
            self.andon = other.andon
        self.refusal = other.refusal or self.refusal
        self.message = other.message or self.message
        return self


@dataclass
class _Part:
    """The part being inspected (or the one just completed, until the next one starts)."""

    context: dict[str, str | None]
    plan: InspectionPlan
    reason_for_test: str
    results: dict[str, tuple[str, str]] = field(default_factory=dict)  # characteristic -> (record id, verdict)
    history: dict[str, str] = field(default_factory=dict)  # every measurement id of the part -> characteristic
    record_id: str | None = None  # the part record, once written
    released: bool = False  # its verdict is signed (or needs no signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "part_number": self.plan.part_number,
            "reason_for_test": self.reason_for_test,
            "results": self.results,
            "history": self.history,
            "record_id": self.record_id,
            "released": self.released,
        }


def _implausible(characteristic: Characteristic, value: Decimal) -> str | None:
    """Why ``value`` (in the characteristic's unit) cannot be a value of it, or None."""
    low, high = characteristic.plausible_min, characteristic.plausible_max
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"{'' if low is None else low} … {'' if high is None else high}".strip()
        return f"implausible: {value} {characteristic.unit} for {characteristic.id} is outside {shown}; not judged"
    return None


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class Station:
    def __init__(
        self,
        settings: StationSettings,
        plan: InspectionPlan | dict[str, InspectionPlan],
        gauges: dict[str, Gauge],
        *,
        site: str,
        line: str,
        saved_state: str | None = None,
        calibration: CalibrationPolicy | None = None,
        today: Callable[[], dt.date] = _utc_today,
        monotonic: Callable[[], float] = time.monotonic,
        people: PeopleGate | None = None,
    ) -> None:
        self.settings = settings
        self.people = people
        self.id = settings.id
        self.plans = plan if isinstance(plan, dict) else {plan.part_number: plan}
        self.plan = self.plans[settings.plan]
        #: id(plan) -> (plan, characteristic id -> characteristic): a reading finds its own in O(1)
        self._by_id: dict[int, tuple[InspectionPlan, dict[str, Characteristic]]] = {}
        self.site = site
        self.line = line
        self.calibration = calibration or CalibrationPolicy()
        self._today = today
        self._monotonic = monotonic
        self._gauges = gauges
        self._devices: dict[str, DeviceSettings] = {d.id: d for d in settings.devices}
        #: device -> the characteristics it may measure (empty: any), as a set: O(1) per reading
        self._may_measure = {d.id: frozenset(d.characteristics) for d in settings.devices}
        #: devices whose protocol is binary: their frames travel as hex in records
        self._binary = {d.id: registry.get(d.driver_config.driver).binary for d in settings.devices}
        self._scan = re.compile(settings.scan_pattern) if settings.scan_pattern else None
        has_scanner = any(d.driver_config.driver == "scanner" for d in settings.devices)
        part = settings.part or PartContext(part_number=self.plan.part_number)
        self._serial_template = part.serial if part.serial and "{" in part.serial else None
        #: the station numbers parts itself (until a scanned label names the serial)
        self.templated = self._serial_template is not None
        #: no part context yet, or the last part's serial came from a label and that part
        #: is complete: the next part needs its own label (two parts never share a serial)
        self.awaiting_label = settings.part is None and (self._scan is not None or has_scanner)
        self.labelled = False  # the current serial came from a scanned label
        self.number = part.first_number
        self.next_index = 0
        self.context: dict[str, str | None] = {k: getattr(part, k) for k in CONTEXT_KEYS}
        self.badge_operator = False  # the operator signed in with a badge (idle timeout applies)
        #: how the operator signed in (user, name, method), when authenticated: releases are
        #: signed with it, within the sign-in session
        self.operator_signature: dict[str, str | None] | None = None
        self.pending_badge: str | None = None  # a badge scanned, waiting for its PIN
        self.parts_seen = 0  # parts started by a label or a PLC serial (for the sample plan)
        self.sampled = True  # the part in front of the station is to be inspected
        self.reason_for_test = ReasonForTest.FIRST_PIECE.value if settings.first_piece else "ongoing"
        self._patrol_next = False
        self._current: _Part | None = None
        self._last: _Part | None = None
        self._pending: dict[str, Any] | None = None  # a requested re-measure
        self._andon_on = False
        self._last_activity = monotonic()
        self._checkers: dict[str, RuleChecker] = {}
        self._device_error: dict[str, str | None] = {}
        self._baselines: dict[str, list[float]] = {}
        #: how many values the limits in force rest on, per characteristic (None: a study's limits)
        self._limits_basis: dict[str, int | None] = {}
        #: the nonconformances decided here (a second disposition is refused); bounded, oldest forgotten
        self._disposed: dict[str, None] = {}
        #: values that broke a run rule: acknowledging their alarm needs the reaction plan's choice
        #: (in memory, the last _OUT_OF_CONTROL_KEPT: after a restart only failed values need it)
        self._out_of_control: dict[str, None] = {}
        if saved_state:
            self._restore(saved_state)
        self._apply_template()

    # -- state that survives a restart -------------------------------------------------------
    def state(self) -> str:
        """The station's :class:`SavedState` as JSON (saved with its records; see ``station_state``)."""
        saved = SavedState.model_construct(  # our own attributes: nothing to validate on the way out
            **{key: getattr(self, attr) for key, attr in SAVED_AS.items()},
            context=self.context,
            plan=self.plan.part_number,
            current=self._current.to_json() if self._current else None,
            last=self._last.to_json() if self._last else None,
            disposed=list(self._disposed),
        )
        return saved.model_dump_json()

    def _restore(self, text: str) -> None:
        saved = SavedState.model_validate_json(text)
        if saved.plan in self.plans:
            self.plan = self.plans[saved.plan]
        for key, attr in SAVED_AS.items():
            value = getattr(saved, key)
            if value is not None:  # None keeps what the station was configured with
                setattr(self, attr, value)
        self.next_index %= len(self.plan.characteristics)
        self.context.update({k: saved.context.get(k) for k in CONTEXT_KEYS})
        self._current = self._part_from(saved.current)
        self._last = self._part_from(saved.last)
        self._disposed = dict.fromkeys(saved.disposed)

    def _part_from(self, data: dict[str, Any] | None) -> _Part | None:
        if not data or data.get("part_number") not in self.plans:
            return None
        return _Part(
            context=dict(data["context"]),
            plan=self.plans[data["part_number"]],
            reason_for_test=str(data.get("reason_for_test", "ongoing")),
            results={k: (v[0], v[1]) for k, v in data.get("results", {}).items()},
            history=dict(data.get("history", {})),
            record_id=data.get("record_id"),
            released=bool(data.get("released", True)),
        )

    def _apply_template(self) -> None:
        if self.templated and self._serial_template is not None:
            self.context["serial"] = self._serial_template.format(n=self.number)

    # -- what the operator screen shows -------------------------------------------------------
    @property
    def next_characteristic(self) -> str:
        return self._next_characteristic().id

    def _next_characteristic(self) -> Characteristic:
        if self._pending is not None:
            return self._characteristic(str(self._pending["characteristic"]))
        return self.plan.characteristics[self.next_index]

    def _characteristic(self, cid: str) -> Characteristic:
        plan = self.plan
        found = self._by_id.get(id(plan))
        if found is None or found[0] is not plan:  # (whatever plan is in force, indexed once)
            found = self._by_id[id(plan)] = (plan, {c.id: c for c in plan.characteristics})
        c = found[1].get(cid)
        if c is not None:
            return c
        raise CommandError(f"station {self.id}: characteristic {cid!r} is not in plan {self.plan.part_number}")

    def view(self) -> dict[str, Any]:
        """The station's state as an operator screen shows it."""
        nxt = self._next_characteristic()
        # the part just finished stays on the screen until the next part's label (or a
        # re-measure of it); a new part starts blank
        part = self._current
        remeasuring_last = self._pending is not None and self._last_has(str(self._pending["supersedes"]))
        if part is None and (self.awaiting_label or remeasuring_last):
            part = self._last
        return {
            "station": self.id,
            "operator": self.context.get("operator"),
            "operator_name": (self.operator_signature or {}).get("name"),
            "pending_sign_in": self.pending_badge,
            "awaiting_release": self.awaiting_release,
            "part_number": self.plan.part_number,
            "plan_revision": self.plan.revision,
            "serial": self.context.get("serial"),
            "lot": self.context.get("lot"),
            "work_order": self.context.get("work_order"),
            "awaiting_label": self.awaiting_label,
            "sampled": self.sampled,
            "reason_for_test": self.reason_for_test,
            "next": {
                "characteristic": nxt.id,
                "name": nxt.name,
                "nominal": rec.dec(nxt.nominal),
                "lsl": rec.dec(nxt.lower_limit),
                "usl": rec.dec(nxt.upper_limit),
                "unit": nxt.unit,
                "remeasure": self._pending is not None,
            },
            "plan": [
                {
                    "characteristic": c.id,
                    "name": c.name,
                    "verdict": (part.results.get(c.id, (None, None))[1] if part else None),
                }
                for c in self.plan.characteristics
            ],
        }

    # -- labels: parts and badges --------------------------------------------------------------
    def scan(self, code: str, *, trusted: bool = True) -> Outcome:
        """A scanned code: a part label or an operator badge, by the station's label pattern.

        ``trusted``: from a scanner at the station (or a signed-in person's screen); an
        untrusted code may be a badge only (a part label needs someone signed in).
        """
        if self._scan is None:
            raise ScanError(f"station {self.id}: no scan pattern configured")
        m = self._scan.fullmatch(code.strip())
        if m is None:
            raise ScanError(f"station {self.id}: the code does not match the label format")
        return self.apply_label({k: v for k, v in m.groupdict().items() if v is not None}, trusted=trusted)

    def apply_label(self, fields: dict[str, str], *, trusted: bool = True) -> Outcome:
        """Set the part context (or sign an operator in) from a decoded label."""
        found = {k: v.strip() for k, v in fields.items() if k in CONTEXT_KEYS and v and v.strip()}
        if not found:
            raise ScanError(f"station {self.id}: the label carries none of {', '.join(CONTEXT_KEYS)}")
        bad = [k for k, v in found.items() if _CONTROL.search(v)]
        if bad:
            raise ScanError(f"station {self.id}: control characters in the label's {', '.join(bad)}")
        if not trusted and set(found) - {"operator"}:
            raise CommandRefused(
                f"station {self.id}: sign in first (badge and PIN), then scan the part label", "unauthenticated"
            )
        part_number = found.get("part_number")
        if part_number is not None and part_number not in self.plans:
            raise ScanError(f"station {self.id}: no inspection plan for part number {part_number!r}: not inspected")
        out = Outcome()
        operator = found.pop("operator", None)
        if operator is not None and operator != self.context.get("operator"):
            out.extend(self._badge(operator))
        if not found:
            return out
        out.extend(self._close_part("abandoned: another part's label was scanned"))
        if part_number is not None and part_number != self.plan.part_number:
            self.plan = self.plans[part_number]
            self._checkers.clear()
        changes_lot = any(k in found and found[k] != self.context.get(k) for k in ("lot", "work_order"))
        self.context.update(found)
        if "serial" in found:
            self.templated = False
            self.labelled = True
        self.awaiting_label = False
        self.next_index = 0
        self._pending = None
        first_piece = changes_lot and self.settings.first_piece
        if first_piece:
            self.reason_for_test = ReasonForTest.FIRST_PIECE.value
        sampling = self.settings.sampling
        if sampling is not None and "serial" in found:
            # a new part: the sample plan says whether it is inspected (n of every m); a first
            # piece always is
            self.parts_seen += 1
            self.sampled = first_piece or (self.parts_seen - 1) % sampling.every < sampling.inspect
            if not self.sampled:
                detail = f"not in the sample: {sampling.inspect} of every {sampling.every} parts are inspected"
                out.drafts.append(self._audit("not_sampled", "system", found["serial"], detail))
                out.message = f"part {found['serial']}: {detail}"
                return out
        out.message = ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
        return out

    def _badge(self, badge: str) -> Outcome:
        """A badge was scanned: sign in, or wait for the PIN (with a user register)."""
        if self.people is None:
            if not is_person_id(badge):
                raise ScanError(f"station {self.id}: the badge is not a valid operator id")
            return self.sign_in(badge)
        if self.people.badge_alone:
            signature = self.people.identify(badge)
            if signature is None:
                return self._refused_sign_in(None, "unknown badge: not in the user register", alert=False)
            return self.sign_in(signature.user, signature)
        self.pending_badge = badge
        return Outcome(message="badge scanned: enter the PIN or password to sign in")

    def sign_in(self, operator: str, signature: Signature | None = None) -> Outcome:
        """``operator`` signs in (``signature``: how they were authenticated, with a register)."""
        self.pending_badge = None
        problem = None
        if self.people is not None:
            problem = self.people.competence(operator, self.plan.part_number, self._today())
        if problem is not None:
            return self._refused_sign_in(operator, problem, alert=True)
        out = Outcome()
        if self.context.get("operator") and self.badge_operator:
            out.extend(self.sign_out(by=self.context["operator"], event="sign_out", reason="another badge scanned"))
        self.context["operator"] = operator
        self.badge_operator = True
        self.operator_signature = (
            {"user": signature.user, "name": signature.name, "method": signature.method} if signature else None
        )
        self._last_activity = self._monotonic()
        audit = self._audit("sign_in", operator, operator, f"operator {operator} signed in", signature)
        out.drafts.append(audit)
        out.message = f"operator {operator} signed in"
        return out

    def _refused_sign_in(self, user: str | None, reason: str, *, alert: bool) -> Outcome:
        """A refused sign-in: an audit record, and (competence) an alert, like an overdue gauge's."""
        draft = self._audit("sign_in_refused", user, user, f"sign-in refused: {reason}")
        out = Outcome(drafts=[draft], refused=f"station {self.id}: sign-in refused: {reason}", message=reason)
        if alert:
            out.alerts[draft["id"]] = ("refused", "warning", f"sign-in refused: {reason}")
        return out

    def sign_out(
        self,
        by: str | None = None,
        *,
        event: str = "sign_out",
        reason: str = "signed out",
        signature: Signature | None = None,
    ) -> Outcome:
        out = Outcome()
        operator = self.context.get("operator")
        if operator is None:
            raise CommandError(f"station {self.id}: nobody is signed in")
        out.extend(self._close_part(f"incomplete: operator {reason}"))
        by = signature.user if signature is not None else by
        out.drafts.append(self._audit(event, by or operator, operator, f"operator {operator} {reason}", signature))
        self.context["operator"] = None
        self.badge_operator = False
        self.operator_signature = None
        out.message = f"operator {operator} {reason}"
        return out

    def check_idle(self) -> Outcome:
        """Sign out a badge operator who has been idle too long (the gateway calls this)."""
        limit = self.settings.operator_idle_timeout
        if limit is None or not self.badge_operator or not self.context.get("operator"):
            return Outcome()
        if self._monotonic() - self._last_activity < limit:
            return Outcome()
        return self.sign_out(by="system", event="idle_timeout", reason=f"idle for more than {limit:g} s")

    # -- readings ----------------------------------------------------------------------------
    def handle(self, reading: Reading) -> Outcome:
        """A reading from one of this station's devices: a label, a measurement or a refusal."""
        self._last_activity = self._monotonic()
        device = self._devices.get(reading.device)
        serial_channel = device.serial_channel if device is not None else None
        if reading.text is not None and reading.value is None and reading.channel == serial_channel:
            return self.apply_label({"serial": reading.text})
        if reading.status is ReadingStatus.UNSTABLE:
            # a balance streams values while it settles: not a measurement, not worth a record
            return Outcome(message="unstable", refusal=Refusal(self.id, reading.device, "unstable", "unstable"))
        if reading.status is ReadingStatus.ERROR:
            if self._device_error.get(reading.device) == reading.error:
                return Outcome(refusal=Refusal(self.id, reading.device, "repeated device error", "repeated"))
            self._device_error[reading.device] = reading.error
        else:
            self._device_error.pop(reading.device, None)
        result = self.accept(reading)
        if isinstance(result, Refusal):
            if result.reason_code in ("not_sampled", "no_load"):
                # the part's not_sampled audit record is the evidence; its readings are not;
                # an empty balance answering the gateway's poll is no reading of a part
                return Outcome(refusal=result, message=result.reason)
            return Outcome(drafts=[self._refusal_record(result, reading)], refusal=result, message=result.reason)
        out = Outcome(
            drafts=[result], message=f"{result['characteristic']} {result['judged_value']} {result['verdict']}"
        )
        if result["verdict"] == Verdict.FAIL:
            nc = rec.nonconformance_record(result)
            out.drafts.append(nc)
            out.andon = True
            self._andon_on = True
        rules, limits = self._spc(result)
        if rules:
            out.trends[result["id"]] = rules
        if limits:
            out.drafts.extend(limits)
        after = self._after_measurement(result, automatic=bool(device and device.channels))
        if after is not None:
            out.extend(after)
        andon = self.settings.andon
        if (
            self._andon_on
            and andon is not None
            and andon.clear == "on_pass"
            and any(d["kind"] == "part" and d["verdict"] == "accept" for d in out.drafts)
        ):
            out.andon = False  # a good part again: the light goes out
            self._andon_on = False
        return out

    def accept(self, reading: Reading) -> Record | Refusal:  # noqa: C901 - the refusal reasons in the order they apply; the hot path
        """Judge a reading against the characteristic it is for; the draft record or a refusal."""
        device = self._devices.get(reading.device)
        if device is None:
            return Refusal(self.id, reading.device, "device is not bound to this station", "unknown_device")
        if reading.status is not ReadingStatus.OK or reading.value is None:
            return Refusal(
                self.id, reading.device, f"reading is {reading.status.value}: {reading.error or ''}".strip(), "not_ok"
            )
        if reading.unit is None:
            return Refusal(self.id, reading.device, "reading has no unit", "no_unit")
        remeasuring_last = self._pending is not None and self._last_has(str(self._pending["supersedes"]))
        if self.awaiting_label and not remeasuring_last:
            return Refusal(self.id, reading.device, "no part: scan the part's label first", "no_part")
        if not self.sampled:
            return Refusal(self.id, reading.device, "this part is not in the sample: no inspection", "not_sampled")
        if self.settings.require_operator and not self.context.get("operator"):
            return Refusal(self.id, reading.device, "no operator signed in: scan a badge first", "no_operator")
        operator = self.context.get("operator")
        if self.people is not None and operator:
            plan = self._last.plan if remeasuring_last and self._last is not None else self.plan
            problem = self.people.competence(operator, plan.part_number, self._today())
            if problem is not None:
                return Refusal(self.id, reading.device, f"operator not qualified: {problem}", "not_qualified")
        try:
            characteristic = self._target(device, reading)
        except CommandError as exc:
            return Refusal(self.id, reading.device, str(exc), "unbound_channel")
        allowed = self._may_measure[device.id]
        if allowed and characteristic.id not in allowed:
            return Refusal(
                self.id,
                reading.device,
                f"wrong gauge: {reading.device} may not measure {characteristic.id} (next is {characteristic.name})",
                "wrong_gauge",
            )
        gauge = self._gauges.get(device.gauge) if device.gauge else None
        if characteristic.gauge_types and (gauge is None or gauge.type not in characteristic.gauge_types):
            return Refusal(
                self.id,
                reading.device,
                f"wrong gauge: {characteristic.id} needs a {' or '.join(characteristic.gauge_types)}",
                "wrong_gauge",
            )
        calibration = self._calibration(device, gauge)
        if isinstance(calibration, Refusal):
            return calibration
        try:
            judgement = judge(characteristic, reading.value, reading.unit)
        except SpecificationError as exc:
            return Refusal(self.id, reading.device, str(exc), "specification")
        if device.min_load is not None and judgement.value < device.min_load:
            return Refusal(
                self.id, reading.device, f"no load: place the part ({judgement.value} {characteristic.unit})", "no_load"
            )
        if characteristic.plausible_min is not None or characteristic.plausible_max is not None:
            implausible = _implausible(characteristic, judgement.value)
            if implausible is not None:
                return Refusal(self.id, reading.device, implausible, "implausible")
        pending = self._pending if self._pending and self._pending["characteristic"] == characteristic.id else None
        context, revision = self.context, self.plan.revision
        if pending is not None and self._last is not None and self._last_has(str(pending["supersedes"])):
            context, revision = self._last.context, self._last.plan.revision  # the part just completed
        draft = rec.measurement_record(
            site=self.site,
            line=self.line,
            station=self.id,
            context=context,
            plan_revision=revision,
            characteristic=characteristic,
            judgement=judgement,
            reading=reading,
            gauge=device.gauge,
            gauge_calibration_due=gauge.calibration_due.isoformat() if gauge else None,
            calibration_status=calibration,
            reason_for_test=self.reason_for_test,
            supersedes=pending["supersedes"] if pending else None,
            reason=pending["reason"] if pending else None,
            binary=self._binary.get(reading.device, False),
        )
        if pending is not None:
            if pending.get("by"):
                draft["operator"] = pending["by"]
            if pending.get("signature"):
                draft.update(pending["signature"])
            self._pending = None
        elif not device.channels:
            self.next_index = (self.next_index + 1) % len(self.plan.characteristics)
        return draft

    def _target(self, device: DeviceSettings, reading: Reading) -> Characteristic:
        if device.channels:
            cid = device.channels.get(reading.channel)
            if cid is None:
                raise CommandError(f"channel {reading.channel!r} of {reading.device} is bound to no characteristic")
            return self._characteristic(cid)
        return self._next_characteristic()

    def _calibration(self, device: DeviceSettings, gauge: Gauge | None) -> str | Refusal | None:
        policy = self.calibration
        if gauge is None:
            if device.gauge is None and policy.require_registered_gauge and policy.policy == "block":
                return Refusal(self.id, device.id, f"{device.id} is not a registered gauge", "gauge_unknown")
            return None
        if gauge.status is not GaugeStatus.ACTIVE:
            return Refusal(self.id, device.id, f"gauge {gauge.id} is {gauge.status.value}", "gauge_locked")
        today = self._today()
        overdue_days = (today - gauge.calibration_due).days
        if overdue_days > 0:
            if policy.policy == "block" and overdue_days > policy.grace_days:
                return Refusal(
                    self.id,
                    device.id,
                    f"gauge {gauge.id} calibration was due {gauge.calibration_due.isoformat()}",
                    "gauge_overdue",
                )
            return "overdue"
        if -overdue_days <= policy.warn_days:
            return "due_soon"
        return "valid"

    def _refusal_record(self, refusal: Refusal, reading: Reading) -> Record:
        device = self._devices.get(reading.device)
        gauge = self._gauges.get(device.gauge) if device and device.gauge else None
        try:
            characteristic: str | None = self._next_characteristic().id
        except CommandError:
            characteristic = None
        return rec.refusal_record(
            site=self.site,
            line=self.line,
            station=self.id,
            context=self.context,
            reason_code=refusal.reason_code,
            reason=refusal.reason,
            reading=reading,
            gauge=device.gauge if device else None,
            gauge_calibration_due=gauge.calibration_due.isoformat() if gauge else None,
            characteristic=characteristic,
            binary=self._binary.get(reading.device, False),
        )

    # -- parts ---------------------------------------------------------------------------------
    def _after_measurement(self, record: Record, *, automatic: bool) -> Outcome | None:
        """The part's verdict when this measurement completes (or re-measures) it; else None."""
        cid = str(record["characteristic"])
        superseding = record.get("supersedes")
        part = self._current
        if superseding and self._last is not None and self._last_has(str(superseding)):
            part = self._last  # a re-measure of the part just completed
        elif part is None:
            part = self._current = _Part(dict(self.context), self.plan, self.reason_for_test)
        part.results[cid] = (str(record["id"]), str(record["verdict"]))
        part.history[str(record["id"])] = cid
        if part is self._last:
            return self._release(part, record.get("operator"), automatic=False, supersedes=part.record_id)
        if self._complete_part(part, self.plan):
            out = self._release(part, record.get("operator"), automatic=automatic)
            self._complete()
            return out
        return None

    def _release(self, part: _Part, operator: Any, *, automatic: bool, supersedes: str | None = None) -> Outcome:
        """The verdict of a complete part, released by the operator (signed within the session),
        automatically, or, where releases are signed one by one, waiting for the release."""
        if automatic:
            part.released = True
            return self._verdict(part, released_by="auto", supersedes=supersedes)
        if self.people is not None and self.people.signed_release:
            part.released = False
            return self._verdict(part, released_by=None, supersedes=supersedes)
        part.released = True
        signed = self.operator_signature
        signature = None
        if signed is not None and signed.get("user") == operator:
            signature = Signature(str(signed["user"]), signed.get("name"), "session")
        return self._verdict(part, released_by=operator, supersedes=supersedes, signature=signature)

    @property
    def awaiting_release(self) -> bool:
        """The part just completed waits for its release to be signed."""
        part = self._last
        return part is not None and part.record_id is not None and not part.released and self._complete_part(part)

    def _complete_part(self, part: _Part, plan: InspectionPlan | None = None) -> bool:
        """Every characteristic of ``plan`` (default: the part's) has a value.

        Counted first, so that the check per reading is O(1): the full comparison runs once
        the part holds as many results as the plan has characteristics.
        """
        chars = (plan or part.plan).characteristics
        return len(part.results) >= len(chars) and all(c.id in part.results for c in chars)

    def release(self, signature: Signature) -> Outcome:
        """The signer releases the part just completed (where releases are signed one by one)."""
        part = self._last
        if part is None or part.record_id is None or not self._complete_part(part):
            raise CommandError(f"station {self.id}: no completed part to release")
        if part.released:
            raise CommandError(f"station {self.id}: part {part.context.get('serial') or ''} is released already")
        part.released = True
        return self._verdict(part, released_by=signature.user, supersedes=part.record_id, signature=signature)

    def _last_has(self, record_id: str) -> bool:
        return self._last is not None and any(rid == record_id for rid, _ in self._last.results.values())

    def _verdict(
        self,
        part: _Part,
        *,
        released_by: str | None,
        reason: str | None = None,
        supersedes: str | None = None,
        signature: Signature | None = None,
    ) -> Outcome:
        ids = [part.results[c.id][0] for c in part.plan.characteristics if c.id in part.results]
        failed = [c.id for c in part.plan.characteristics if c.id in part.results and part.results[c.id][1] == "fail"]
        missing = [c.id for c in part.plan.characteristics if c.id not in part.results]
        verdict = "incomplete" if missing else ("reject" if failed else "accept")
        draft = rec.part_record(
            site=self.site,
            line=self.line,
            station=self.id,
            context=part.context,
            plan_revision=part.plan.revision,
            verdict=verdict,
            records=ids,
            failed=failed,
            missing=missing,
            released_by=released_by if not missing else None,
            reason=reason,
            reason_for_test=part.reason_for_test,
        )
        draft["supersedes"] = supersedes
        if signature is not None and released_by is not None and not missing:
            draft.update(signature.fields("rejected" if failed else "released"))
        part.record_id = draft["id"]
        return Outcome(drafts=[draft], message=f"part {part.context.get('serial') or ''} {verdict}".strip())

    def _complete(self) -> None:
        """The part in front of the station is done; get ready for the next."""
        self._last, self._current = self._current, None
        self.next_index = 0
        self.number += 1
        if self._patrol_next:
            self.reason_for_test, self._patrol_next = ReasonForTest.PATROL.value, False
        else:
            self.reason_for_test = ReasonForTest.ONGOING.value
        if self.templated:
            self._apply_template()
        elif self.labelled and self.context.get("serial"):
            self.context["serial"] = None
            self.awaiting_label = True

    def _close_part(self, reason: str) -> Outcome:
        """Record the part in progress as incomplete (abandoned, signed out, timed out)."""
        part = self._current
        if part is None or not part.results:
            self._current = None
            return Outcome()
        out = self._verdict(part, released_by=None, reason=reason)
        self._last, self._current = part, None
        self.number += 1
        self.next_index = 0
        self._pending = None
        self._apply_template()
        return out

    def abandon(self, by: str | None, reason: str = "abandoned", signature: Signature | None = None) -> Outcome:
        if self._current is None or not self._current.results:
            raise CommandError(f"station {self.id}: no part in progress")
        out = self._close_part(f"incomplete: {reason}")
        out.drafts.append(self._audit("abandon", by, self._current_serial(out), reason, signature))
        return out

    def _current_serial(self, out: Outcome) -> str | None:
        return next((str(d.get("serial")) for d in out.drafts if d.get("serial")), None)

    # -- operator commands -------------------------------------------------------------------
    def remeasure(
        self, characteristic: str | None, reason: str, by: str | None, signature: Signature | None = None
    ) -> Outcome:
        """The next reading re-measures ``characteristic`` (default: the last one measured)."""
        part = self._current if self._current and self._current.results else self._last
        if part is None or not part.results:
            raise CommandError(f"station {self.id}: nothing measured yet to re-measure")
        cid = characteristic or list(part.results)[-1]
        if cid not in part.results:
            raise CommandError(f"station {self.id}: {cid} has no value yet on this part")
        if not reason:
            raise CommandError("a re-measure needs a reason")
        self._pending = {
            "characteristic": cid,
            "supersedes": part.results[cid][0],
            "reason": reason,
            "by": signature.user if signature is not None else by,
            "signature": signature.fields("remeasured") if signature is not None else None,
        }
        return Outcome(message=f"re-measure {cid}: {reason}")

    def own(self, record: Record | None, record_id: str, *, kinds: tuple[str, ...] = ()) -> Record:
        """``record`` (found by ``record_id`` in the gateway's journal) when it is this station's.

        A station acts on its own records only: another station's record, one this gateway
        does not hold, or one of the wrong kind is refused.
        """
        if record is None:
            raise CommandRefused(f"station {self.id}: no record {record_id} in this gateway's journal", "not_found")
        if record.get("station") != self.id:
            raise CommandRefused(
                f"station {self.id}: record {record_id} is not this station's: a station acts on its own records only",
                "forbidden",
            )
        if kinds and record.get("kind") not in kinds:
            raise CommandRefused(f"station {self.id}: record {record_id} is not a {' or '.join(kinds)}")
        return record

    def invalidate(self, target: Record, reason: str, signature: Signature) -> Outcome:
        """Declare a value void. It stays; an invalidation record points at it; it is re-measured."""
        if not reason:
            raise CommandError("an invalidation needs a reason")
        record_id = str(self.own(target, str(target.get("id")), kinds=("measurement",))["id"])
        cid = str(target.get("characteristic")) if target.get("characteristic") else None
        context: dict[str, str | None] = {k: target.get(k) for k in CONTEXT_KEYS}
        current = False  # the invalidated value is the one its characteristic stands on
        for part in (self._current, self._last):
            if part is not None and record_id in part.history:
                current = part.results.get(part.history[record_id], ("", ""))[0] == record_id
        draft = rec.invalidation_record(
            site=self.site,
            line=self.line,
            station=self.id,
            context=context,
            target=record_id,
            characteristic=cid,
            by=signature.user,
            reason=reason,
        )
        draft["operator"] = signature.user
        draft.update(signature.fields("invalidated"))
        if cid is not None and current:
            self._pending = {
                "characteristic": cid,
                "supersedes": record_id,
                "reason": f"invalidated: {reason}",
                "by": signature.user,
                "signature": None,  # the invalidation record carries the signature
            }
        return Outcome(drafts=[draft], message=f"record {record_id} invalidated")

    def dispose(
        self,
        nonconformance: Record,
        decision: str,
        signature: Signature,
        concession: str | None,
        comment: str | None,
    ) -> Outcome:
        """The decision on a nonconformance (scrap, rework, use as is under a concession ...)."""
        nc = self.own(nonconformance, str(nonconformance.get("id")), kinds=("nonconformance",))
        if decision == "use_as_is" and not concession:
            raise CommandError("use as is needs a concession (deviation permit) reference")
        if str(nc["id"]) in self._disposed:
            raise CommandError(f"nonconformance {nc['id']} is decided already: a decision is not taken twice")
        self._disposed[str(nc["id"])] = None
        while len(self._disposed) > _DISPOSED_KEPT:
            del self._disposed[next(iter(self._disposed))]
        draft = rec.disposition_record(
            site=self.site,
            line=self.line,
            station=self.id,
            context={k: nc.get(k) for k in CONTEXT_KEYS},
            nonconformance_id=str(nc["id"]),
            decision=decision,
            concession=concession,
            by=signature.user,
            comment=comment,
        )
        draft["operator"] = signature.user
        draft.update(signature.fields("dispositioned"))
        return Outcome(drafts=[draft], message=f"nonconformance {nc['id']}: {decision}")

    def patrol(self, by: str | None, signature: Signature | None = None) -> Outcome:
        """The next part is a patrol inspection (recorded as the reason for test)."""
        if self._current is None or not self._current.results:
            self.reason_for_test = ReasonForTest.PATROL.value
        else:
            self._patrol_next = True
        return Outcome(
            drafts=[self._audit("patrol", by, None, "patrol inspection requested", signature)],
            message="patrol inspection: the next part is recorded as a patrol",
        )

    def ack_alert(
        self,
        target: Record,
        signature: Signature,
        comment: str | None,
        cause: str | None = None,
        action: str | None = None,
    ) -> Outcome:
        """A supervisor acknowledged the alert about ``target``, a record of this station.

        When ``target`` is out of tolerance or broke a run rule and its characteristic (or its
        plan) has a reaction plan, the assignable cause and the corrective action must be chosen
        from it; both go into the audit record's detail.
        """
        record_id = str(self.own(target, str(target.get("id")))["id"])
        alarmed = target.get("verdict") == "fail" or record_id in self._out_of_control
        plan = self._reaction_plan(target) if alarmed else None
        chosen = ""
        if plan is not None:
            if cause not in plan.causes:
                raise CommandError(f"choose the cause from the reaction plan ({', '.join(plan.causes)})")
            if action not in plan.actions:
                raise CommandError(f"choose the action from the reaction plan ({', '.join(plan.actions)})")
            chosen = f" (cause: {cause}; action: {action})"
        detail = f"alert acknowledged{chosen}{': ' + comment if comment else ''}"
        draft = self._audit("alert_ack", signature.user, record_id, detail, signature)
        return Outcome(drafts=[draft], message=detail)

    def andon_off(self, by: str | None, signature: Signature | None = None) -> Outcome:
        self._andon_on = False
        return Outcome(drafts=[self._audit("andon_off", by, None, "andon switched off", signature)], andon=False)

    def refused_command(self, command: str, by: str | None, reason: str) -> Outcome:
        """The record of a command refused (unauthenticated, wrong role, another's record)."""
        draft = self._audit("command_refused", by, command, f"{command} refused: {reason}"[:500])
        return Outcome(drafts=[draft], refused=reason, message=reason)

    def _audit(
        self, event: str, by: str | None, subject: str | None, detail: str, signature: Signature | None = None
    ) -> Record:
        draft = rec.audit_record(
            site=self.site, line=self.line, station=self.id, event=event, by=by, subject=subject, detail=detail
        )
        if signature is not None:
            meaning = _MEANINGS.get(event)
            if meaning is not None:
                draft["by"] = signature.user
                draft.update(signature.fields(meaning))
        return draft

    # -- SPC ---------------------------------------------------------------------------------
    def _reaction_plan(self, target: Record) -> ReactionPlan | None:
        if target.get("kind") != "measurement" or not target.get("characteristic"):
            return None
        plan = self.plans.get(str(target.get("part_number")), self.plan)
        return plan.reaction_plan_for(str(target["characteristic"]))

    def _remember_out_of_control(self, record_id: str) -> None:
        self._out_of_control[record_id] = None
        if len(self._out_of_control) > _OUT_OF_CONTROL_KEPT:
            del self._out_of_control[next(iter(self._out_of_control))]

    def spc_basis(self, cid: str) -> tuple[int, bool] | None:
        """How many values the control limits in force for ``cid`` rest on, and whether that is
        below the minimum (None: a study's limits, or none yet)."""
        n = self._limits_basis.get(cid)
        spc = next((c.spc for c in self.plan.characteristics if c.id == cid), None)
        if n is None or spc is None:
            return None
        return n, n < spc.minimum

    def _spc(self, record: Record) -> tuple[list[int], list[Record]]:
        """The rules the value breaks, and the audit record of new limits when they were (re)computed.

        Without a study's limits the first ``baseline`` values set provisional limits; the
        values keep being collected until ``minimum`` exist (AIAG: 100 individuals), then the
        limits are computed again from all of them and frozen. Each set of limits is put on
        record (``spc_limits``), so the chain shows which limits judged which values.
        """
        cid = str(record["characteristic"])
        characteristic = self._characteristic(cid)
        spc = characteristic.spc
        if spc is None or record.get("supersedes"):
            return [], []
        value = float(Decimal(str(record["judged_value"])))
        checker = self._checkers.get(cid)
        if spc.centre is not None and spc.sigma is not None:
            if checker is None:
                study = ControlLimits(float(spc.centre), float(spc.sigma))
                checker = self._checkers[cid] = RuleChecker(study, _rules(spc))
            broken = sorted({v.rule for v in checker.update(value)})
            if broken:
                self._remember_out_of_control(str(record["id"]))
            return broken, []
        baseline = self._baselines.setdefault(cid, [])
        if checker is None and len(baseline) >= spc.baseline:
            # after a restart: the same limits again, from the same saved values (on record already)
            with contextlib.suppress(ValueError):
                checker = self._checkers[cid] = RuleChecker(ControlLimits.from_baseline(baseline), _rules(spc))
                self._limits_basis[cid] = len(baseline)
        broken = sorted({v.rule for v in checker.update(value)}) if checker is not None else []
        if broken:
            self._remember_out_of_control(str(record["id"]))
        minimum = spc.minimum
        if len(baseline) >= minimum:
            return broken, []
        baseline.append(value)
        if not (len(baseline) == minimum or (checker is None and len(baseline) >= spc.baseline)):
            return broken, []
        try:
            limits = ControlLimits.from_baseline(baseline)
        except ValueError:
            if checker is None:
                baseline.pop(0)  # no spread yet: keep collecting
            return broken, []
        self._checkers[cid] = RuleChecker(limits, _rules(spc))
        self._limits_basis[cid] = len(baseline)
        summary = {
            "characteristic": cid,
            "centre": limits.centre,
            "sigma": limits.sigma,
            "ucl": limits.ucl,
            "lcl": limits.lcl,
            "n": len(baseline),
            "minimum": minimum,
            "provisional": len(baseline) < minimum,
            "from_record": record["id"],
        }
        return broken, [self._audit("spc_limits", "system", cid, json.dumps(summary, sort_keys=True))]
