"""What makes a part report something an auditor signs: the process capability behind each
characteristic, who signed the release and the dispositions and what their signatures mean,
whether the gateway's clock was synchronised, and which items are really still open.

The part report (:mod:`collector.evidence.report`) lays these out; this module decides them.

- **Capability**: a single part has one value per characteristic, which says nothing about
  the process; the figures come from the values of the same part number, plan revision and
  characteristic over a window before the part (:func:`process_capability`: valid values
  only, superseded and invalidated ones left out). With fewer than ``MIN_VALUES`` values no
  figure is given; under ``RELIABLE_VALUES`` (AIAG's suggestion of at least 100
  individuals) the figures are marked as resting on few values.
- **Signatures**: records of signed acts carry ``signed_by``, ``signer_name``,
  ``signature_meaning`` and ``signature_method`` (21 CFR 11.50: who, when, what it means);
  an unsigned release or disposition is shown as not signed, never as signed.
- **Clock**: every block says whether its gateway's clock was synchronised when sealed
  (``clock_synced``); one unsynchronised record is enough to warn that its times may be off.
- **Open items**: a nonconformance is open until a disposition decides it, unless the
  value it was raised for was re-measured (a later value supersedes it: the re-measure
  carries the verdict now, and raises its own nonconformance if it fails too) or
  invalidated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.chain.keys import KeyRing
from collector.errors import CollectorError
from collector.evidence.trace import TraceFilter, trace
from collector.inspection import spc
from collector.store.base import Store

__all__ = [
    "MIN_VALUES",
    "RELIABLE_VALUES",
    "ClockState",
    "NcState",
    "Process",
    "Signature",
    "capability_of",
    "clock_state",
    "nonconformance_state",
    "process_capability",
    "signatures",
]

MIN_VALUES = 5  # fewer values give no capability figure at all
RELIABLE_VALUES = 100  # AIAG SPC manual: at least 100 individuals for a capability estimate
DEFAULT_WINDOW_DAYS = 30

Record = Mapping[str, Any]
#: a characteristic's capability, or why there is none
CapabilityFigure = spc.Capability | str


def _void(records: Sequence[Record]) -> set[str]:
    """Ids of values that are not the characteristic's value any more: superseded or invalidated."""
    out = {str(r["supersedes"]) for r in records if r.get("kind") == "measurement" and r.get("supersedes")}
    out |= {str(r["target"]) for r in records if r.get("kind") == "invalidation" and r.get("target")}
    return out


def valid_values(process: Sequence[Record], characteristic: str) -> list[Record]:
    """The measurement records of ``characteristic`` that are still its values (in order)."""
    void = _void(process)
    return [
        r
        for r in process
        if r.get("kind") == "measurement" and r.get("characteristic") == characteristic and str(r.get("id")) not in void
    ]


def capability_of(process: Sequence[Record], characteristics: Sequence[str]) -> dict[str, CapabilityFigure]:
    """Capability per characteristic from the measurement records ``process`` (all kinds may be
    given: re-measures and invalidations take their targets out)."""
    out: dict[str, CapabilityFigure] = {}
    for cid in characteristics:
        values = valid_values(process, cid)
        if len(values) < MIN_VALUES:
            out[cid] = f"too few values ({len(values)}; at least {MIN_VALUES})"
            continue
        spec = values[-1]
        specs = {(r.get("lsl"), r.get("usl")) for r in values}
        if len(specs) > 1:
            out[cid] = "the specification changed within the window: no single capability"
            continue
        try:
            out[cid] = spc.capability(
                [float(r["value"]) for r in values],
                lsl=_number(spec.get("lsl")),
                usl=_number(spec.get("usl")),
                target=_number(spec.get("nominal")),
            )
        except (ValueError, CollectorError) as exc:
            out[cid] = f"not computed: {exc}"
    return out


def _number(text: object) -> float | None:
    return None if text in (None, "") else float(str(text))


@dataclass(frozen=True)
class Process:
    """The process behind a part: capability per characteristic, the values, and their scope."""

    capability: dict[str, CapabilityFigure]
    scope: str
    #: the valid values of each characteristic in the window, oldest first (for the charts)
    values: dict[str, list[float]]


def process_capability(
    store: Store,
    records: Sequence[Record],
    keys: KeyRing | None = None,
    *,
    days: int = DEFAULT_WINDOW_DAYS,
) -> Process:
    """The capability of each of the part's characteristics, its values, and the scope in words.

    The values of the part's part number and plan revision measured in the ``days`` before
    its last value, up to and including it (read with :func:`trace`, so only verified
    evidence counts when ``keys`` are given; unverified records are left out).
    """
    measured = [r for r in records if r.get("kind") == "measurement"]
    if not measured:
        return Process({}, "no values", {})
    last = max(str(r["measured_at"]) for r in measured)
    part_number, revision = str(measured[0].get("part_number")), str(measured[0].get("plan_revision"))
    end = dt.datetime.fromisoformat(last.replace("Z", "+00:00"))
    start = end - dt.timedelta(days=days)
    found = trace(
        store,
        TraceFilter(part_number=part_number, start=start.strftime("%Y-%m-%dT%H:%M:%SZ")),
        keys,
    )
    process = [
        r
        for r in found
        if r.get("verified") is not False
        and r.get("plan_revision") in (revision, None)
        and (r.get("kind") != "measurement" or str(r.get("measured_at")) <= last)
    ]
    order = list(dict.fromkeys(str(r.get("characteristic")) for r in measured))
    scope = (
        f"values of {part_number} rev {revision} measured from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC "
        f"({days} days up to this part's last value), re-measured and invalidated values left out"
    )
    values = {cid: [float(r["value"]) for r in valid_values(process, cid)] for cid in order}
    return Process(capability_of(process, order), scope, values)


@dataclass(frozen=True)
class Signature:
    """One signed act on the part's records, as the report shows it."""

    act: str  # "release", "disposition", "re-measure", "invalidation"
    record_id: str
    at: str
    signed_by: str | None
    signer_name: str | None
    meaning: str | None
    method: str | None
    detail: str

    @property
    def signed(self) -> bool:
        return bool(self.signed_by)


_ACTS = {"part": "release", "disposition": "disposition", "invalidation": "invalidation"}


def signatures(records: Sequence[Record]) -> list[Signature]:
    """The release (of the part verdict in force), every disposition, re-measure and invalidation.

    A release or disposition without signature fields is listed too, as not signed.
    """
    superseded_parts = {str(r["supersedes"]) for r in records if r.get("kind") == "part" and r.get("supersedes")}
    out: list[Signature] = []
    for r in records:
        kind = str(r.get("kind"))
        if kind == "part":
            if str(r.get("id")) in superseded_parts or r.get("verdict") == "incomplete":
                continue
            act, by = "release", r.get("released_by")
            detail = f"part {str(r.get('verdict')).upper()}" + ("" if by else ": not released")
        elif kind == "disposition":
            act, detail = "disposition", str(r.get("decision") or "").replace("_", " ")
        elif kind == "measurement" and r.get("supersedes") and r.get("signed_by"):
            act, detail = "re-measure", f"{r.get('characteristic')}: {r.get('reason') or ''}".rstrip(": ")
        elif kind == "invalidation":
            act, detail = "invalidation", f"{r.get('characteristic') or ''}: {r.get('reason') or ''}".strip(": ")
        else:
            continue
        out.append(
            Signature(
                act=act,
                record_id=str(r.get("id")),
                at=str(r.get("recorded_at") or ""),
                signed_by=_text(r.get("signed_by")),
                signer_name=_text(r.get("signer_name")),
                meaning=_text(r.get("signature_meaning")),
                method=_text(r.get("signature_method")),
                detail=detail,
            )
        )
    return out


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value)


@dataclass(frozen=True)
class ClockState:
    synced: bool
    text: str
    unsynced_ids: tuple[str, ...]


def clock_state(records: Sequence[Record]) -> ClockState:
    """Whether every record was sealed with its gateway's clock synchronised."""
    unknown = [r for r in records if not isinstance(r.get("clock_synced"), bool)]
    unsynced = [r for r in records if r.get("clock_synced") is False]
    if unsynced:
        return ClockState(
            False,
            f"NOT SYNCHRONISED for {len(unsynced)} of {len(records)} record(s): their times may be off",
            tuple(str(r.get("id")) for r in unsynced),
        )
    if unknown:
        return ClockState(False, f"unknown for {len(unknown)} of {len(records)} record(s)", ())
    return ClockState(True, f"synchronised for all {len(records)} record(s)", ())


@dataclass(frozen=True)
class NcState:
    open: bool
    text: str


def nonconformance_state(nc: Record, records: Sequence[Record]) -> NcState:
    """Whether a nonconformance is still open, and why not."""
    decided = [d for d in records if d.get("kind") == "disposition" and d.get("nonconformance_id") == nc.get("id")]
    if decided:
        return NcState(False, "decided")
    measurement = str(nc.get("measurement_id"))
    remeasured = [r for r in records if r.get("kind") == "measurement" and str(r.get("supersedes")) == measurement]
    if remeasured:
        latest = remeasured[-1]
        return NcState(
            False,
            f"closed: re-measured ({latest.get('judged_value')} {str(latest.get('verdict')).upper()})",
        )
    if any(r.get("kind") == "invalidation" and str(r.get("target")) == measurement for r in records):
        return NcState(False, "closed: the value was invalidated")
    return NcState(True, "OPEN: no disposition recorded")
