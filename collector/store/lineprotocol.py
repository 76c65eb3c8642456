"""Inspection records as InfluxDB line protocol: the storage schema.

One record is one point, timestamped with its ``recorded_at`` in microseconds
(``precision=u`` on the write).

Measurement
    ``inspection`` for ``kind == "measurement"``. :data:`MEASUREMENTS` maps each record
    kind to its measurement, so later kinds (invalidations, overrides, ...) get their own
    without touching the writer.

Tags (indexed; every distinct combination is a series)
    ``gateway``, ``site``, ``line``, ``station``, ``part_number``, ``characteristic``,
    ``verdict``: what reports filter and group by, each with a bounded number of values
    (the configuration and the inspection plans name them all). A tag whose value is
    empty or missing is left out, since line protocol has no empty tag values.

Fields (not indexed)
    ``seq`` (integer), ``id``, ``hash``, ``prev_hash``, ``serial``, ``lot``,
    ``work_order``, ``operator``, ``gauge``, ``device``, ``plan_revision``, ``unit``,
    ``supersedes`` (strings), ``value``, ``judged_value``, ``deviation``, ``nominal``,
    ``lsl``, ``usl`` (floats, converted from the record's decimal strings; the exact
    decimals stay in the payload), and ``payload``: the record's JSON text exactly as
    journaled and hashed. The payload is the evidence copy: verification re-hashes it,
    and :func:`expected_fields` / :func:`mismatches` tell whether the other fields of a
    stored point still agree with it (a field edited in InfluxDB shows up there).
    A field whose value is None is left out: InfluxDB has no null.

Why the serial number is a field, not a tag
    Every part has a new serial. As a tag it would start a new series for every part and
    the series index (held in memory by the default index) would grow without bound until
    ``max-series-per-database`` refuses writes. As a field it costs one string per point;
    tracing a serial is ``WHERE serial = '...'`` over a time range, which scans that
    range's ``serial`` column only.

Idempotency
    A redelivered record produces the same line: same series and timestamp, so InfluxDB
    overwrites the point with identical values instead of adding one. The flip side: two
    *different* records on the same series with the same ``recorded_at`` would collapse
    into one point. Since ``gateway`` is a tag, the journal must give each gateway's
    records strictly increasing ``recorded_at`` values (a gap in ``seq`` would expose a
    violation).

Escaping follows the line protocol reference: measurement names escape commas and
spaces; tag keys, tag values and field keys escape commas, equals signs and spaces;
string field values escape backslashes and double quotes. InfluxDB 1.x keeps other
backslashes in tags literally but cannot represent a tag value that ends in a backslash
or has one directly before a comma, equals sign or space; such a value (and any line
break, which would end the line) is refused with a :class:`ValueError` naming the field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from collector.chain.blocks import Block
from collector.chain.checkpoints import Checkpoint
from collector.inspection.records import parse_utc_us

#: record kind -> measurement name: values, part verdicts, and everything else that
#: happened (refusals, invalidations, nonconformances, dispositions, audit events)
MEASUREMENTS: dict[str, str] = {
    "measurement": "inspection",
    "part": "part",
    "refusal": "event",
    "invalidation": "event",
    "nonconformance": "event",
    "disposition": "event",
    "audit": "event",
}

#: in sorted order: InfluxDB sorts tags by key anyway, and pre-sorted lines skip that work
TAG_KEYS: tuple[str, ...] = (
    "characteristic",
    "gateway",
    "kind",
    "line",
    "part_number",
    "site",
    "station",
    "verdict",
)
INTEGER_FIELDS: tuple[str, ...] = ("seq",)
#: identifiers and codes only; free text (reasons, comments, details) lives in the payload,
#: so an operator's line break never makes a record unwritable
STRING_FIELDS: tuple[str, ...] = (
    "id",
    "hash",
    "prev_hash",
    "serial",
    "lot",
    "work_order",
    "operator",
    "gauge",
    "device",
    "plan_revision",
    "unit",
    "supersedes",
    "reason_for_test",
    "calibration_status",
    "reason_code",
    "released_by",
    "target",
    "by",
    "event",
    "subject",
    "decision",
    "measurement_id",
    "nonconformance_id",
    "records",
    "failed",
    "missing",
)
FLOAT_FIELDS: tuple[str, ...] = ("value", "judged_value", "deviation", "nominal", "lsl", "usl")
PAYLOAD_FIELD = "payload"
#: every field a record line may carry, in the order it is written
FIELD_COLUMNS: tuple[str, ...] = (*INTEGER_FIELDS, *STRING_FIELDS, *FLOAT_FIELDS, PAYLOAD_FIELD)

_KEY_SPECIAL = re.compile(r"[,= \\\n\r]")
_STRING_SPECIAL = re.compile(r'[\\"\n\r]')
_MEASUREMENT_SPECIAL = re.compile(r"[, \n\r]")
# A backslash that InfluxDB would read as escaping the next character (or the separator).
_TAG_BAD_BACKSLASH = re.compile(r"\\(?:[,= ]|$)")
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})


def _no_line_break(name: str, text: str) -> None:
    if "\n" in text or "\r" in text:
        raise ValueError(f"{name!r} contains a line break, which line protocol cannot carry: {text!r}")


def escape_measurement(name: str) -> str:
    if not _MEASUREMENT_SPECIAL.search(name):
        return name
    _no_line_break("measurement", name)
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_tag(name: str, value: str) -> str:
    """A tag key or tag value (or a field key); ``name`` is used in error messages."""
    if not _KEY_SPECIAL.search(value):
        return value
    _no_line_break(name, value)
    if _TAG_BAD_BACKSLASH.search(value):
        raise ValueError(
            f"{name!r} has a backslash at its end or before a comma, '=' or space, which "
            f"InfluxDB line protocol cannot represent in a tag: {value!r}"
        )
    return value.translate(_TAG_ESCAPES)


def escape_string_field(name: str, value: str) -> str:
    """A string field value, with its surrounding double quotes."""
    _no_line_break(name, value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name!r} must be a decimal string, got {value!r}")
    f = float(value)
    if f - f != 0.0:  # inf and nan (inf - inf is nan); cheaper than math.isfinite's call
        raise ValueError(f"{name!r} is not a finite number: {value!r}")
    return f


def _text(value: object) -> str:
    """A string field's text: lists (a part's record ids) as comma-separated values."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _seq(record: Mapping[str, Any]) -> int:
    seq = record["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError(f"'seq' must be an integer, got {seq!r}")
    return seq


_EPOCH_DAYS: dict[str, int] = {}


def _utc_us(text: str) -> int:
    # The recorder turns every record into a line: strptime (in parse_utc_us) would cost
    # a third of record_line. Timestamps have one fixed shape (the payload schema's), so
    # parse the digits directly and remember the day's offset.
    if len(text) != 27 or text[10] != "T" or text[19] != "." or text[26] != "Z":
        return parse_utc_us(text)
    day = text[:10]
    days = _EPOCH_DAYS.get(day)
    if days is None:
        days = (dt.date.fromisoformat(day) - _EPOCH).days
        if len(_EPOCH_DAYS) < 4096:
            _EPOCH_DAYS[day] = days
    secs = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
    return (days * 86400 + secs) * 1_000_000 + int(text[20:26])


_EPOCH = dt.date(1970, 1, 1)


def measurement_of(record: Mapping[str, Any]) -> str:
    kind = record.get("kind")
    try:
        return MEASUREMENTS[str(kind)]
    except KeyError:
        raise ValueError(f"no measurement is defined for record kind {kind!r}") from None


def timestamp_us(record: Mapping[str, Any]) -> int:
    """The point's timestamp: ``recorded_at`` in µs since the epoch."""
    return _utc_us(str(record["recorded_at"]))


def expected_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The tags :func:`record_line` writes for ``record`` (empty and None left out)."""
    return {k: str(v) for k in TAG_KEYS if (v := record.get(k)) is not None and v != ""}


def expected_fields(record: Mapping[str, Any], payload: str | None = None) -> dict[str, object]:
    """The fields :func:`record_line` writes, typed as InfluxDB's JSON returns them.

    ``seq`` is an int, the decimal columns floats, the rest strings; fields whose value is
    None are absent. ``payload`` is included only when given (a verifier normally parses
    the stored payload into ``record`` and checks its hash separately). Note that InfluxDB
    prints a float with an integral value without a fraction (``12``), which JSON parsers
    read as an int: compare with :func:`mismatches`, not with ``==`` on the types.
    """
    fields: dict[str, object] = {"seq": _seq(record)}
    for k in STRING_FIELDS:
        v = record.get(k)
        if v is not None:
            fields[k] = _text(v)
    for k in FLOAT_FIELDS:
        v = record.get(k)
        if v is not None:
            fields[k] = _float(k, v)
    if payload is not None:
        fields[PAYLOAD_FIELD] = payload
    return fields


def record_line(record: Mapping[str, Any], payload: str) -> str:
    """One sealed inspection record (and its journaled JSON text) as one line."""
    # The recorder calls this for every record (50,000/s is the target), hence the fast
    # paths for values that need no escaping.
    get = record.get
    parts = [escape_measurement(measurement_of(record))]
    for k in TAG_KEYS:
        v = get(k)
        if v is None or v == "":
            continue
        v = str(v)
        parts.append(f",{k}={v if _KEY_SPECIAL.search(v) is None else escape_tag(k, v)}")
    parts.append(f" seq={_seq(record)}i")
    for k in STRING_FIELDS:
        v = get(k)
        if v is not None:
            v = v if type(v) is str else _text(v)
            parts.append(f',{k}="{v}"' if _STRING_SPECIAL.search(v) is None else f",{k}={escape_string_field(k, v)}")
    for k in FLOAT_FIELDS:
        v = get(k)
        if v is not None:
            try:
                f = float(v) if type(v) is str else _float(k, v)
            except ValueError:
                raise ValueError(f"{k!r} must be a finite decimal, got {v!r}") from None
            if f - f != 0.0:
                _float(k, v)  # raises, naming the field
            parts.append(f",{k}={f!r}")
    parts.append(f",{PAYLOAD_FIELD}={escape_string_field(PAYLOAD_FIELD, payload)}")
    parts.append(f" {timestamp_us(record)}")
    return "".join(parts)


def _same(expected: object, stored: object) -> bool:
    if isinstance(expected, float):
        # An integral float comes back from InfluxDB as a JSON integer.
        return isinstance(stored, int | float) and not isinstance(stored, bool) and float(stored) == expected
    if isinstance(expected, int):
        return isinstance(stored, int) and not isinstance(stored, bool) and stored == expected
    return stored == expected


def mismatches(record: Mapping[str, Any], row: Mapping[str, Any], payload: str | None = None) -> list[str]:
    """Names of the tags and fields in a stored ``row`` that disagree with ``record``.

    ``row`` is what :meth:`Store.iter_query` yields for ``SELECT * FROM inspection``:
    columns the point lacks are None there. A column the record does not write must be
    None in the row too; otherwise it was added after the fact.
    """
    bad: list[str] = []
    tags = expected_tags(record)
    for k in TAG_KEYS:
        if row.get(k) != tags.get(k):
            bad.append(k)
    fields = expected_fields(record, payload)
    for k in FIELD_COLUMNS:
        if k == PAYLOAD_FIELD and payload is None:
            continue
        expected = fields.get(k)
        stored = row.get(k)
        if expected is None:
            if stored is not None:
                bad.append(k)
        elif not _same(expected, stored):
            bad.append(k)
    if row.get("time") is not None and row.get("time") != timestamp_us(record):
        bad.append("time")
    return bad


#: alerts are notices derived from records (not evidence themselves): kept for history,
#: one point per alert, on its record's time, so a redelivered alert overwrites itself
ALERT_MEASUREMENT = "alert"
ALERT_TAGS: tuple[str, ...] = ("gateway", "kind", "line", "severity", "site", "station")
ALERT_STRINGS: tuple[str, ...] = ("record_id", "part_number", "serial", "characteristic", "unit", "limit")


def alert_line(alert: Mapping[str, Any], payload: str) -> str:
    """One alert as one line in the ``alert`` measurement (precision microseconds)."""
    parts = [ALERT_MEASUREMENT]
    for k in ALERT_TAGS:
        v = alert.get(k)
        if v is not None and v != "":
            parts.append(f",{k}={escape_tag(k, str(v))}")
    parts.append(f" seq={_seq(alert)}i")
    for k in ALERT_STRINGS:
        v = alert.get(k)
        if v is not None:
            parts.append(f",{k}={escape_string_field(k, str(v))}")
    for k in ("judged_value", "lsl", "usl"):
        v = alert.get(k)
        if v is not None:
            parts.append(f",{k}={_float(k, v)!r}")
    if alert.get("rules"):
        parts.append(f",rules={escape_string_field('rules', _text(alert['rules']))}")
    parts.append(f",{PAYLOAD_FIELD}={escape_string_field(PAYLOAD_FIELD, payload)}")
    parts.append(f" {parse_utc_us(str(alert['at']))}")
    return "".join(parts)


# -- schema version 2: blocks, their records, the lookup index, checkpoints -----------------
# (The wire helper's minimal version of the InfluxDB table in docs/evidence-format.md, so
# that the recorder can be written and tested against these two signatures; the evidence
# tools' version replaces it.)

BLOCK_MEASUREMENT = "block"
LOOKUP_MEASUREMENT = "lookup"
CHECKPOINT_MEASUREMENT = "checkpoint"
#: the string fields of a record point (the exact decimals and free text stay in the block)
RECORD_STRING_FIELDS: tuple[str, ...] = (
    "id",
    "serial",
    "lot",
    "work_order",
    "operator",
    "gauge",
    "device",
    "plan_revision",
    "unit",
    "supersedes",
    "reason_for_test",
    "calibration_status",
    "reason_code",
    "released_by",
    "target",
    "by",
    "event",
    "subject",
    "decision",
    "measurement_id",
    "nonconformance_id",
)
#: lookup key -> the record keys whose values it indexes
LOOKUP_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("serial", ("serial",)),
    ("lot", ("lot",)),
    ("work_order", ("work_order",)),
    ("ref", ("target", "nonconformance_id", "supersedes", "measurement_id")),
)


def _string_fields(get: Any, keys: tuple[str, ...]) -> list[str]:
    parts = []
    for k in keys:
        v = get(k)
        if v is not None:
            v = v if type(v) is str else _text(v)
            parts.append(f',{k}="{v}"' if _STRING_SPECIAL.search(v) is None else f",{k}={escape_string_field(k, v)}")
    return parts


def lines_for_block(block: Block) -> list[str]:
    """A block as points: one ``block`` point, one point per record, the lookup points."""
    base_us = block.recorded_us
    where = {"gateway": block.gateway, "site": block.site, "line": block.line, "station": block.station}
    common = "".join(f",{k}={escape_tag(k, where[k])}" for k in ("gateway", "line", "site", "station"))
    key_id = "" if block.key_id is None else f",key_id={escape_string_field('key_id', block.key_id)}"
    lines = [
        f"{BLOCK_MEASUREMENT}{common} first_seq={block.first_seq}i,last_seq={block.last_seq}i,"
        f'hash="{block.hash}",prev_hash="{block.prev_hash}"{key_id},'
        f"{PAYLOAD_FIELD}={escape_string_field(PAYLOAD_FIELD, block.text)} {base_us}"
    ]
    seen: set[tuple[str, str]] = set()
    lookups: list[str] = []
    for i, record in enumerate(block.records):
        get = record.get
        materialised = {**where, "kind": get("kind"), "part_number": get("part_number")}
        materialised.update(characteristic=get("characteristic"), verdict=get("verdict"))
        parts = [escape_measurement(measurement_of(record))]
        for k in TAG_KEYS:
            v = materialised.get(k)
            if v is None or v == "":
                continue
            v = str(v)
            parts.append(f",{k}={v if _KEY_SPECIAL.search(v) is None else escape_tag(k, v)}")
        parts.append(f" seq={block.first_seq + i}i")
        parts += _string_fields(get, RECORD_STRING_FIELDS)
        for k in FLOAT_FIELDS:
            v = get(k)
            if v is not None:
                parts.append(f",{k}={_float(k, v)!r}")
        parts.append(f" {base_us + i}")
        lines.append("".join(parts))
        for key, sources in LOOKUP_KEYS:
            for source in sources:
                value = get(source)
                if not isinstance(value, str) or not value or (key, value) in seen:
                    continue
                seen.add((key, value))
                bucket = f"{key}:{hashlib.sha256(value.encode('utf-8')).hexdigest()[:3]}"
                lookups.append(
                    f"{LOOKUP_MEASUREMENT},bucket={bucket} value={escape_string_field('value', value)},"
                    f"gateway={escape_string_field('gateway', block.gateway)},"
                    f"station={escape_string_field('station', block.station)},block_time={base_us}i {base_us + i}"
                )
    return lines + lookups


def checkpoint_line(cp: Checkpoint) -> str:
    """A gateway's checkpoint as one point of ``checkpoint``, at its ``at``."""
    key_id = "" if cp.key_id is None else f",key_id={escape_string_field('key_id', cp.key_id)}"
    return (
        f"{CHECKPOINT_MEASUREMENT},gateway={escape_tag('gateway', cp.gateway)} head_seq={cp.head_seq}i,"
        f"head_hash={escape_string_field('head_hash', cp.head_hash)}{key_id},"
        f"{PAYLOAD_FIELD}={escape_string_field(PAYLOAD_FIELD, cp.text)} {cp.at_us}"
    )
