"""Inspection records: the drafts a station makes, before the journal seals them in blocks.

A record is a flat JSON object whose values are only strings, integers, booleans, nulls
and lists of strings (decimals travel as strings, in plain notation). The functions here
build a station's drafts as plain dicts; they carry ``site``, ``line`` and ``station`` for
the domain's use, and the journal (:mod:`collector.gateway.journal`) moves those into the
block it seals the records in, with ``gateway``, ``seq``, ``recorded_at`` and
``clock_synced`` (see ``docs/evidence-format.md`` and :mod:`collector.chain.blocks`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import time
from decimal import Decimal
from typing import Any

from collector.chain.blocks import GENESIS_HASH, parse_utc_us
from collector.inspection.models import Characteristic, Criticality, Verdict
from collector.inspection.tolerance import Judgement
from drivers.base import Reading

__all__ = ["GENESIS_HASH", "Record", "parse_utc_us"]

Record = dict[str, Any]

#: the bytes a text protocol's frame may hold and still travel as text: printable ASCII,
#: CR, LF and TAB (JSON escapes the last three; nothing else needs escaping or decoding)
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\r\n\t"


def raw_fields(raw: bytes, binary: bool) -> tuple[str, str]:
    """A device frame as a record carries it: (``raw``, ``raw_encoding``).

    Binary protocols (``drivers.base.Driver.binary``: Modbus registers) always travel as
    lower-case hex. A text protocol's frame travels as text when every byte is printable
    ASCII, CR, LF or TAB, and as hex otherwise (line noise, a stray 0x85): decoded as
    latin-1, such bytes put control characters like U+0085 into the JSON, which line-based
    tools take for line breaks.
    """
    if not binary and not raw.translate(None, _TEXT_BYTES):  # nothing left: every byte is text
        return raw.decode("ascii"), "text"
    return raw.hex(), "hex"


#: uniqueness, not secrecy, is what record ids need; os.urandom per id releases and retakes
#: the GIL in the hot path, so ids draw from a generator seeded once from the OS
_rng = random.Random(os.urandom(32))


def uuid7(unix_ms: int | None = None) -> str:
    """A time-ordered UUID (RFC 9562 version 7)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = _rng.getrandbits(80)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0x0FFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_last_second: tuple[int, str] = (-1, "")


def format_utc_us(epoch_us: int) -> str:
    """Microseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the canonical shape)."""
    global _last_second
    secs, us = divmod(epoch_us, 1_000_000)
    cached_secs, text = _last_second  # one tuple: safe to share between threads
    if cached_secs != secs:
        # records come in bursts within the same second: format the date part once per second
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _last_second = (secs, text)
    return f"{text}.{us:06d}Z"


#: the plain strings of the enums a measurement carries (an enum's ``.value`` is a slow property)
_TEXT: dict[Any, str] = {m: m.value for m in (*Criticality, *Verdict)}


def dec(v: Decimal | None) -> str | None:
    """A decimal in plain notation (never ``1E-7``), as the payload pattern requires."""
    return None if v is None else format(v, "f")


def measurement_record(
    *,
    site: str,
    line: str,
    station: str,
    context: dict[str, str | None],
    plan_revision: str,
    characteristic: Characteristic,
    judgement: Judgement,
    reading: Reading,
    gauge: str | None,
    gauge_calibration_due: str | None,
    calibration_status: str | None = None,
    reason_for_test: str = "ongoing",
    supersedes: str | None = None,
    reason: str | None = None,
    binary: bool = False,
) -> Record:
    """A draft measurement record (``binary``: the device's protocol is binary, see :func:`raw_fields`)."""
    nominal, lsl, usl = characteristic.spec_texts
    raw, raw_encoding = raw_fields(reading.raw, binary)
    reading_value = dec(reading.value)
    # in the characteristic's own unit the converted value is the reading's, the same object
    value = reading_value if judgement.value is reading.value else dec(judgement.value)
    return {
        "kind": "measurement",
        "id": uuid7(reading.timestamp_ns // 1_000_000),
        "site": site,
        "line": line,
        "station": station,
        "operator": context.get("operator"),
        "part_number": context["part_number"],
        "plan_revision": plan_revision,
        "serial": context.get("serial"),
        "lot": context.get("lot"),
        "work_order": context.get("work_order"),
        "characteristic": characteristic.id,
        "characteristic_name": characteristic.name,
        "nominal": nominal,
        "lsl": lsl,
        "usl": usl,
        "unit": characteristic.unit,
        "decimals": characteristic.decimals,
        "criticality": _TEXT[characteristic.criticality],
        "gauge": gauge,
        "gauge_calibration_due": gauge_calibration_due,
        "calibration_status": calibration_status,
        "device": reading.device,
        "channel": reading.channel,
        "measured_at": format_utc_us(reading.timestamp_ns // 1000),
        "raw": raw,
        "raw_encoding": raw_encoding,
        "reading_value": reading_value,
        "reading_unit": reading.unit,
        "value": value,
        "judged_value": dec(judgement.judged_value),
        "deviation": dec(judgement.deviation),
        "verdict": _TEXT[judgement.verdict],
        "limit": judgement.limit,
        "reason_for_test": reason_for_test,
        "supersedes": supersedes,
        "reason": reason,
    }


#: a measurement entry's keys (a draft's, less ``site``, ``line``, ``station``, which the block
#: carries) that change from one reading to the next, and those that repeat for a
#: characteristic at a station (the journal encodes the repeating part once: see
#: :class:`collector.chain.canonical.TemplateEncoder`)
MEASUREMENT_VARIABLE = (
    "deviation",
    "id",
    "judged_value",
    "limit",
    "measured_at",
    "raw",
    "raw_encoding",
    "reading_unit",
    "reading_value",
    "serial",
    "value",
    "verdict",
)
MEASUREMENT_CONSTANT = (
    "kind",
    "operator",
    "part_number",
    "plan_revision",
    "lot",
    "work_order",
    "characteristic",
    "characteristic_name",
    "nominal",
    "lsl",
    "usl",
    "unit",
    "decimals",
    "criticality",
    "gauge",
    "gauge_calibration_due",
    "calibration_status",
    "device",
    "channel",
    "reason_for_test",
    "supersedes",
    "reason",
)

Context = dict[str, str | None]
_CONTEXT_KEYS = ("operator", "part_number", "serial", "lot", "work_order")


def _draft(kind: str, site: str, line: str, station: str, context: Context | None = None) -> Record:
    record: Record = {
        "kind": kind,
        "id": uuid7(),
        "site": site,
        "line": line,
        "station": station,
    }
    if context is not None:
        record.update({k: context.get(k) for k in _CONTEXT_KEYS})
    return record


def part_record(
    *,
    site: str,
    line: str,
    station: str,
    context: Context,
    plan_revision: str,
    verdict: str,
    records: list[str],
    failed: list[str],
    missing: list[str],
    released_by: str | None,
    reason: str | None = None,
    reason_for_test: str = "ongoing",
) -> Record:
    r = _draft("part", site, line, station, context)
    r.update(
        plan_revision=plan_revision,
        verdict=verdict,
        records=records,
        failed=failed,
        missing=missing,
        released_by=released_by,
        reason=reason,
        reason_for_test=reason_for_test,
    )
    return r


def refusal_record(
    *,
    site: str,
    line: str,
    station: str,
    context: Context,
    reason_code: str,
    reason: str,
    reading: Reading,
    gauge: str | None,
    gauge_calibration_due: str | None,
    characteristic: str | None,
    binary: bool = False,
) -> Record:
    r = _draft("refusal", site, line, station, context)
    raw, raw_encoding = raw_fields(reading.raw, binary)
    r.update(
        reason_code=reason_code,
        reason=reason,
        device=reading.device,
        channel=reading.channel,
        gauge=gauge,
        gauge_calibration_due=gauge_calibration_due,
        characteristic=characteristic,
        measured_at=format_utc_us(reading.timestamp_ns // 1000),
        raw=raw,
        raw_encoding=raw_encoding,
        reading_value=dec(reading.value),
        reading_unit=reading.unit,
    )
    return r


def invalidation_record(
    *,
    site: str,
    line: str,
    station: str,
    context: Context,
    target: str,
    characteristic: str | None,
    by: str,
    reason: str,
) -> Record:
    r = _draft("invalidation", site, line, station, context)
    r.update(target=target, characteristic=characteristic, by=by, reason=reason)
    return r


def nonconformance_record(measurement: Record) -> Record:
    """Opened for an out-of-tolerance measurement (sealed or draft: only its content is used)."""
    context = {k: measurement.get(k) for k in _CONTEXT_KEYS}
    r = _draft("nonconformance", measurement["site"], measurement["line"], measurement["station"], context)
    r.update(
        measurement_id=measurement["id"],
        characteristic=measurement["characteristic"],
        judged_value=measurement["judged_value"],
        lsl=measurement["lsl"],
        usl=measurement["usl"],
        unit=measurement["unit"],
        limit=measurement["limit"],
    )
    return r


def disposition_record(
    *,
    site: str,
    line: str,
    station: str,
    context: Context,
    nonconformance_id: str,
    decision: str,
    concession: str | None,
    by: str,
    comment: str | None,
) -> Record:
    r = _draft("disposition", site, line, station, context)
    r.update(nonconformance_id=nonconformance_id, decision=decision, concession=concession, by=by, comment=comment)
    return r


def audit_record(
    *, site: str, line: str, station: str, event: str, by: str | None, subject: str | None, detail: str
) -> Record:
    r = _draft("audit", site, line, station)
    r.update(event=event, by=by, subject=subject, detail=detail)
    return r


# -- schema version 1 (one hash per record) ------------------------------------------------
# Kept only for the evidence tools (collector/evidence) until they read schema-2 blocks;
# nothing on the write path uses them. Remove once nothing imports them.

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_bytes(record: Record) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash" and k != "signature"}
    return _dumps(body).encode("utf-8")


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def sign(key: bytes, record_hash: str) -> str:
    return hmac.new(key, bytes.fromhex(record_hash), hashlib.sha256).hexdigest()


def seal(record: Record, prev_hash: str, key: bytes | None = None) -> str:
    """Schema 1: set ``prev_hash``, ``hash`` (and ``signature``) on ``record``; return its text."""
    record["prev_hash"] = prev_hash
    record.pop("hash", None)
    record.pop("signature", None)
    text = _dumps(record)
    digest = hashlib.sha256(bytes.fromhex(prev_hash) + text.encode("utf-8")).hexdigest()
    record["hash"] = digest
    tail = f',"hash":"{digest}"'
    if key is not None:
        record["signature"] = sig = sign(key, digest)
        tail += f',"signature":"{sig}"'
    return text[:-1] + tail + "}"


def recompute_hash(record: Record) -> str:
    return chain_hash(str(record["prev_hash"]), canonical_bytes(record))
