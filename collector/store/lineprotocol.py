"""Blocks, records, index entries, checkpoints and alerts as InfluxDB line protocol.

The storage schema of ``docs/evidence-format.md`` (schema version 2), in one place:

``block``
    One point per block: the block line exactly as received in ``payload`` (the evidence
    copy), with ``first_seq``, ``last_seq``, ``hash``, ``prev_hash``, ``key_id`` beside it
    for queries. Tags ``gateway``, ``site``, ``line``, ``station``; time = the block's
    ``recorded_at``.
``inspection`` / ``part`` / ``event``
    One point per materialised record, at the record's ``recorded_at`` (block time + *i*
    µs), with the columns charts and filters need (:data:`TAG_KEYS`, :data:`STRING_FIELDS`,
    :data:`FLOAT_FIELDS`), ``seq`` and ``block_time`` (the block point that holds the
    record). No payload, hash or signature: the block holds them, and
    :func:`record_columns` says what each column must be, so an edited column is caught.
``lookup``
    The index a trace starts from: one point per (key, bucket, block). See :func:`bucket`.
``checkpoint``
    One point per checkpoint a gateway published.
``alert``
    One point per alert (a notice derived from records; not evidence itself).

Timestamps are microseconds since the epoch (``precision=u`` on the write).

Why the lookup has one field per gateway and station
    Points on one series with one timestamp are one point in InfluxDB: a second write
    replaces the fields the first one shares with it. Blocks of different gateways can
    carry the same ``recorded_at`` (each gateway's clock is its own), so lookup points of
    two gateways in one bucket at one microsecond would overwrite each other, and a trace
    would silently miss a block. A gateway's own block times never repeat, so each
    gateway's station writes its own field (``gw:<gateway>/<station>``) and two such points
    merge instead of replacing each other. The field holds the JSON list of the bucket's
    values in that block, so the point is at the block's own time. Naming the station lets a
    trace read the blocks of one station's series only (see ``collector.store.queries``).

Escaping follows the line protocol reference: measurement names escape commas and
spaces; tag keys, tag values and field keys escape commas, equals signs and spaces;
string field values escape backslashes and double quotes. InfluxDB 1.x keeps other
backslashes in tags literally but cannot represent a tag value that ends in a backslash
or has one directly before a comma, equals sign or space; such a value (and any line
break, which would end the line) is refused with a :class:`ValueError` naming the field.
A block's payload never holds a line break: canonical JSON escapes control characters.

Why one module of this size: it is the storage schema. What each point holds, how it is
written fast, and what :func:`record_columns` says it must be (which verify compares stored
points with) belong together; split, they would drift apart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from collector.chain.blocks import Block, parse_utc_us
from collector.chain.checkpoints import Checkpoint

#: record kind -> measurement name: values, part verdicts, and everything else that
#: happened (refusals, invalidations, nonconformances, dispositions, audit events, and any
#: kind added later: an unknown kind is still evidence and goes to ``event``)
MEASUREMENTS: dict[str, str] = {
    "measurement": "inspection",
    "part": "part",
    "refusal": "event",
    "invalidation": "event",
    "nonconformance": "event",
    "disposition": "event",
    "audit": "event",
}
DEFAULT_MEASUREMENT = "event"
RECORD_MEASUREMENTS: tuple[str, ...] = ("event", "inspection", "part")
BLOCK_MEASUREMENT = "block"
LOOKUP_MEASUREMENT = "lookup"
CHECKPOINT_MEASUREMENT = "checkpoint"

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
#: the tags a record takes from its block (the others come from the record itself)
BLOCK_TAG_KEYS: tuple[str, ...] = ("gateway", "line", "site", "station")
RECORD_TAG_KEYS: tuple[str, ...] = ("characteristic", "kind", "part_number", "verdict")
INTEGER_FIELDS: tuple[str, ...] = ("seq", "block_time")
#: identifiers and codes only; free text (reasons, comments, details) lives in the block,
#: so an operator's line break never makes a record unwritable
STRING_FIELDS: tuple[str, ...] = (
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
FLOAT_FIELDS: tuple[str, ...] = ("value", "judged_value", "deviation", "nominal", "lsl", "usl")
#: every field a record point may carry
RECORD_FIELDS: tuple[str, ...] = (*INTEGER_FIELDS, *STRING_FIELDS, *FLOAT_FIELDS)
#: the block point's fields (``payload`` is the evidence copy)
PAYLOAD_FIELD = "payload"
BLOCK_FIELDS: tuple[str, ...] = ("first_seq", "last_seq", "hash", "prev_hash", "key_id", PAYLOAD_FIELD)

#: lookup keys: record fields whose values a trace starts from, and the ids that later
#: records point at (``ref``: an invalidation's target, a disposition's nonconformance, a
#: re-measure's original, a nonconformance's measurement)
LOOKUP_FIELDS: dict[str, tuple[str, ...]] = {
    "serial": ("serial",),
    "lot": ("lot",),
    "work_order": ("work_order",),
    "ref": ("target", "nonconformance_id", "supersedes", "measurement_id"),
}
#: hex digits of sha256(value) in a bucket: 16**3 = 4,096 series per key, whatever is stored
BUCKET_DIGITS = 3
LOOKUP_FIELD_PREFIX = "gw:"

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
    try:
        f = float(value)
    except ValueError:
        raise ValueError(f"{name!r} must be a finite decimal, got {value!r}") from None
    if f - f != 0.0:  # inf and nan (inf - inf is nan); cheaper than math.isfinite's call
        raise ValueError(f"{name!r} is not a finite number: {value!r}")
    return f


def _text(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def measurement_of(record: Mapping[str, Any]) -> str:
    return MEASUREMENTS.get(str(record.get("kind")), DEFAULT_MEASUREMENT)


# --- what each point must hold (the reference; verify compares stored points with it) -------------


def record_columns(block: Block, index: int) -> tuple[str, dict[str, str], dict[str, object], int]:
    """(measurement, tags, fields, time µs) of the point for record ``index`` of ``block``.

    Fields are typed as InfluxDB's JSON returns them (integers, floats, strings); a
    missing or None value has no column. :func:`lines_for_block` writes exactly this.
    """
    entry = block.records[index]
    block_us = block.recorded_us
    tags = {"gateway": block.gateway, "line": block.line, "site": block.site, "station": block.station}
    for k in RECORD_TAG_KEYS:
        v = entry.get(k)
        if v is not None and v != "":
            tags[k] = str(v)
    fields: dict[str, object] = {"seq": block.first_seq + index, "block_time": block_us}
    for k in STRING_FIELDS:
        v = entry.get(k)
        if v is not None:
            fields[k] = _text(v)
    for k in FLOAT_FIELDS:
        v = entry.get(k)
        if v is not None:
            fields[k] = _float(k, v)
    return measurement_of(entry), tags, fields, block_us + index


def block_columns(block: Block) -> tuple[dict[str, str], dict[str, object], int]:
    """(tags, fields, time µs) of the block's point."""
    tags = {"gateway": block.gateway, "line": block.line, "site": block.site, "station": block.station}
    fields: dict[str, object] = {
        "first_seq": block.first_seq,
        "last_seq": block.last_seq,
        "hash": block.hash,
        "prev_hash": block.prev_hash,
        PAYLOAD_FIELD: block.text,
    }
    if block.key_id is not None:
        fields["key_id"] = block.key_id
    return tags, fields, block.recorded_us


_json_string = json.encoder.encode_basestring
_EPOCH_DAYS: dict[str, int] = {}
_EPOCH = dt.date(1970, 1, 1)


def utc_us(text: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in µs since the epoch, as :func:`parse_utc_us` but faster.

    A recorder turns every block into lines; strptime would cost more than the rest of a
    small block's lines. Timestamps have one fixed shape, so the digits are read directly
    and each day's offset is remembered.
    """
    if len(text) != 27 or text[10] != "T" or text[19] != "." or text[26] != "Z" or not text[:10].isascii():
        return parse_utc_us(text)
    day = text[:10]
    days = _EPOCH_DAYS.get(day)
    if days is None:
        try:
            days = (dt.date.fromisoformat(day) - _EPOCH).days
        except ValueError:
            return parse_utc_us(text)  # raises, naming the value
        if len(_EPOCH_DAYS) >= 4096:
            _EPOCH_DAYS.clear()
        _EPOCH_DAYS[day] = days
    try:
        secs = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
        return (days * 86400 + secs) * 1_000_000 + int(text[20:26])
    except ValueError:
        return parse_utc_us(text)


_BUCKETS: dict[str, str] = {}


def bucket(key: str, value: str) -> str:
    """The ``lookup`` series of a value: ``<key>:<first 3 hex digits of sha256(value)>``.

    Bounded: 4,096 buckets per key, however many parts are stored; a bucket holds about
    1/4,096 of a key's index entries, which is what a trace scans.
    """
    digest = _BUCKETS.get(value)
    if digest is None:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:BUCKET_DIGITS]
        if len(_BUCKETS) >= 65_536:  # serials repeat within a part, rarely after: keep it bounded
            _BUCKETS.clear()
        _BUCKETS[value] = digest
    return f"{key}:{digest}"


def lookup_entries(block: Block) -> dict[str, list[str]]:
    """bucket -> the values of that bucket in ``block``, in order of first appearance."""
    found: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for entry in block.records:
        for key, columns in LOOKUP_FIELDS.items():
            for column in columns:
                v = entry.get(column)
                if v is None or v == "":
                    continue
                v = v if type(v) is str else str(v)
                if (key, v) in seen:
                    continue
                seen.add((key, v))
                found.setdefault(bucket(key, v), []).append(v)
    return found


def lookup_field(gateway: str, station: str) -> str:
    """The lookup field of a gateway's station: ``gw:<gateway>/<station>``."""
    return f"{LOOKUP_FIELD_PREFIX}{gateway}/{station}"


def parse_lookup_field(key: str) -> tuple[str, str] | None:
    """(gateway, station) of a lookup field key; None for any other column.

    A gateway id has no ``/`` (letters, digits, ``_``, ``.``, ``-``), so the first ``/`` ends it.
    """
    if not key.startswith(LOOKUP_FIELD_PREFIX):
        return None
    gateway, sep, station = key[len(LOOKUP_FIELD_PREFIX) :].partition("/")
    return (gateway, station) if sep and gateway and station else None


def encode_lookup(values: list[str]) -> str:
    """``json.dumps(values, ensure_ascii=False, separators=(",", ":"))``, without its overhead."""
    return "[" + ",".join(map(_json_string, values)) + "]"


def decode_lookup(text: object) -> list[str] | None:
    """The values of a stored lookup field; None when it is not a JSON list of strings."""
    if not isinstance(text, str):
        return None
    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return values


# --- lines ------------------------------------------------------------------------------------------

#: (gateway, site, line, station, kind, part_number, characteristic, verdict) -> the
#: line's measurement and tags; few distinct values (the plans name them all), bounded anyway
_HEADS: dict[tuple[object, ...], str] = {}
_HEADS_MAX = 16_384


def _head(block: Block, entry: Mapping[str, Any]) -> str:
    kind, part_number, characteristic, verdict = (
        entry.get("kind"),
        entry.get("part_number"),
        entry.get("characteristic"),
        entry.get("verdict"),
    )
    key = (block.gateway, block.site, block.line, block.station, kind, part_number, characteristic, verdict)
    head = _HEADS.get(key)
    if head is not None:
        return head
    values = {
        "characteristic": characteristic,
        "gateway": block.gateway,
        "kind": kind,
        "line": block.line,
        "part_number": part_number,
        "site": block.site,
        "station": block.station,
        "verdict": verdict,
    }
    parts = [escape_measurement(measurement_of(entry))]
    for k in TAG_KEYS:
        v = values[k]
        if v is None or v == "":
            continue
        parts.append(f",{k}={escape_tag(k, str(v))}")
    head = "".join(parts)
    if len(_HEADS) >= _HEADS_MAX:
        _HEADS.clear()
    _HEADS[key] = head
    return head


def _block_tags(block: Block) -> str:
    return (
        f"gateway={escape_tag('gateway', block.gateway)},line={escape_tag('line', block.line)},"
        f"site={escape_tag('site', block.site)},station={escape_tag('station', block.station)}"
    )


def block_line(block: Block, block_us: int | None = None) -> str:
    """The ``block`` point: the block line exactly as received, and its seq range and hashes."""
    block_us = utc_us(block.recorded_at) if block_us is None else block_us
    key_id = "" if block.key_id is None else f",key_id={escape_string_field('key_id', block.key_id)}"
    return (
        f"{BLOCK_MEASUREMENT},{_block_tags(block)} first_seq={block.first_seq}i,last_seq={block.last_seq}i,"
        f'hash="{block.hash}",prev_hash="{block.prev_hash}"{key_id},'
        f"{PAYLOAD_FIELD}={escape_string_field(PAYLOAD_FIELD, block.text)} {block_us}"
    )


#: characters of a decimal in plain notation: such a decimal that Python's float() reads is
#: also a line-protocol float literal of the same value (InfluxDB parses it the same way)
_DECIMAL_CHARS = "0123456789.-"


def _plain_decimals(numbers: list[tuple[str, Any]]) -> bool:
    """Whether every value can be written as it is: a string that is a finite decimal."""
    for _, v in numbers:
        if type(v) is not str:
            return False
        try:
            f = float(v)
        except ValueError:
            return False
        if f - f != 0.0:  # inf and nan (inf - inf is nan); cheaper than math.isfinite's call
            return False
    return not "".join([v for _, v in numbers]).strip(_DECIMAL_CHARS)


def _record_lines(block: Block, block_us: int) -> Iterator[str]:
    # The recorder calls this for every record (50,000 a second is the target): the common
    # case (identifiers without quotes or backslashes, decimals in plain notation) is
    # written as it is, anything else takes the checked path that names the field.
    first_seq = block.first_seq
    string_fields, float_fields = STRING_FIELDS, FLOAT_FIELDS
    special = _STRING_SPECIAL.search
    for i, entry in enumerate(block.records):
        get = entry.get
        texts = [(k, v) for k in string_fields if (v := get(k)) is not None]
        try:
            clean = special("".join([v for _, v in texts])) is None
        except TypeError:  # a value that is not a string
            clean = False
        if clean:
            strings = "".join([f',{k}="{v}"' for k, v in texts])
        else:
            strings = "".join([f",{k}={escape_string_field(k, _text(v))}" for k, v in texts])
        numbers = [(k, v) for k in float_fields if (v := get(k)) is not None]
        if not numbers:
            floats = ""
        elif _plain_decimals(numbers):
            floats = "".join([f",{k}={v}" for k, v in numbers])
        else:
            floats = "".join([f",{k}={_float(k, v)!r}" for k, v in numbers])
        yield f"{_head(block, entry)} seq={first_seq + i}i,block_time={block_us}i{strings}{floats} {block_us + i}"


def lookup_lines(block: Block, block_us: int | None = None) -> list[str]:
    field = escape_tag("station", lookup_field(block.gateway, block.station))
    at = utc_us(block.recorded_at) if block_us is None else block_us
    return [
        f"{LOOKUP_MEASUREMENT},bucket={escape_tag('bucket', b)} "
        f"{field}={escape_string_field('lookup', encode_lookup(values))} {at}"
        for b, values in lookup_entries(block).items()
    ]


def lines_for_block(block: Block) -> list[str]:
    """Every point a block makes: the block, one per record, its lookup entries.

    The same block always gives the same lines (same series, same times), so a redelivery
    overwrites its points with the same values. Raises :class:`ValueError` naming the field
    when a value cannot be carried by line protocol (a line break in an identifier, a tag
    ending in a backslash, a decimal that is not a finite number).
    """
    block_us = utc_us(block.recorded_at)
    lines = [block_line(block, block_us)]
    lines.extend(_record_lines(block, block_us))
    lines.extend(lookup_lines(block, block_us))
    return lines


def checkpoint_line(cp: Checkpoint) -> str:
    """A gateway's checkpoint, as published (``payload``) with its head for queries."""
    key_id = "" if cp.key_id is None else f",key_id={escape_string_field('key_id', cp.key_id)}"
    return (
        f"{CHECKPOINT_MEASUREMENT},gateway={escape_tag('gateway', cp.gateway)} head_seq={cp.head_seq}i,"
        f"head_hash={escape_string_field('head_hash', cp.head_hash)}{key_id},"
        f"{PAYLOAD_FIELD}={escape_string_field(PAYLOAD_FIELD, cp.text)} {cp.at_us}"
    )


# --- comparing stored points with what they must be ----------------------------------------------


def same_value(expected: object, stored: object) -> bool:
    """Whether a stored column holds ``expected`` (as InfluxDB's JSON returns it)."""
    if isinstance(expected, float):
        # An integral float comes back from InfluxDB as a JSON integer.
        return isinstance(stored, int | float) and not isinstance(stored, bool) and float(stored) == expected
    if isinstance(expected, int):
        return isinstance(stored, int) and not isinstance(stored, bool) and stored == expected
    return stored == expected


def mismatches(
    tags: Mapping[str, str],
    fields: Mapping[str, object],
    at_us: int,
    row: Mapping[str, Any],
    columns: tuple[str, ...] = RECORD_FIELDS,
    tag_keys: tuple[str, ...] = TAG_KEYS,
) -> list[str]:
    """Names of the tags, fields and time in a stored ``row`` that differ from what they must be.

    ``row`` is what :meth:`Store.iter_query` yields for ``SELECT *``: columns the point lacks
    are None there, and a column the point must not have has to be None as well (otherwise
    it was added after the fact).
    """
    bad = [k for k in tag_keys if row.get(k) != tags.get(k)]
    for k in columns:
        expected, stored = fields.get(k), row.get(k)
        if expected is None:
            if stored is not None:
                bad.append(k)
        elif not same_value(expected, stored):
            bad.append(k)
    if row.get("time") != at_us:
        bad.append("time")
    return bad


# --- alerts -----------------------------------------------------------------------------------------

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
    seq = alert.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError(f"'seq' must be an integer, got {seq!r}")
    parts.append(f" seq={seq}i")
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
