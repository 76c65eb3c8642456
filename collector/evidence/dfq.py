"""Q-DAS AQDEF export (``.dfq``): measurement records as the statistics tools import them.

One file describes one part number at one plan revision: the part fields, one block of
characteristic fields per characteristic, then the values. Every line is ``Kxxxx value``
(file and part fields) or ``Kxxxx/n value`` (characteristic and value fields, ``n`` the
1-based characteristic index), so each value line names its characteristic and a reader
needs no positional bookkeeping. A value starts with its ``K0001/n`` line; the value
fields after it belong to it.

Field mapping (record field -> K-field):

=====================  =========  ===================================================
record                 K-field    notes
=====================  =========  ===================================================
(count)                K0100      number of characteristics in the file
part_number            K1001
plan description       K1002      not in the records: only when the caller passes it
plan_revision          K1004      amendment status
characteristic         K2001/n    n in first-seen order of the given records
characteristic_name    K2002/n
(always 0)             K2004/n    variable characteristic
criticality            K2005/n    critical 4, major 3, minor 2, incidental 1
decimals               K2022/n
nominal                K2101/n    left out when the specification has none
lsl                    K2110/n    left out for a one-sided specification
usl                    K2111/n    left out for a one-sided specification
unit                   K2142/n
value                  K0001/n    the exact value in the characteristic's unit
(see below)            K0002/n    0 valid, 129 invalidated or superseded, 255 placeholder
measured_at            K0004/n    ``DD.MM.YYYY/HH:MM:SS`` in the site's local time (below)
lot                    K0006/n    batch number
operator               K0008/n
station                K0010/n    machine
gauge                  K0012/n
serial                 K0014/n    part id
reason_for_test        K0015/n    ongoing 0, special 10, audit 20, first_piece 30,
                                  raw_material 40, pre_run 50, patrol 0
work_order             K0053/n    order (K0016, production number, is not used)
=====================  =========  ===================================================

Decisions, and why:

- K0001 carries ``value`` (exact, unrounded), not ``judged_value``: statistics need the
  resolution the gauge delivered, and K2022 tells the tool how many decimals to show.
  The digits are copied from the record as they are: decimal point, no exponent, no
  thousands separator, trailing zeros kept.
- K0002 = 129 ("shown but not used in statistics") for a value an invalidation record
  targets and for a value a later measurement supersedes: the value stays in the file,
  as it stays in the evidence, and statistics use only the latest value. Only the
  records passed in are consulted: an invalidation missing from them cannot mark its
  target.
- One value set per part: the statistics tools pair the i-th value of every
  characteristic into the i-th part, so each part's values form one set, one value per
  characteristic (a re-measure takes the place of the value it supersedes). A superseded
  value follows its part's set in a set of its own, marked 129, and a characteristic a set
  has no value for (a part left incomplete, the other characteristics of a superseded
  value's set) gets a placeholder (K0001 0 with K0002 = 255), so every characteristic has
  as many values as there are sets and the pairing never shifts. Values without a serial
  fill one set until a characteristic repeats.
- Only verified evidence is exported: a record a trace marks ``verified: false`` (its block
  failed a check, or was not checked against the key directory) makes the export fail,
  naming it, since nothing in a DFQ file could say that the value is not evidence.
- Patrol inspections are K0015 = 0: they are planned, routine in-process checks, and
  tools commonly take production statistics from the values with K0015 = 0; code 10
  would drop them from capability studies.
- K0004 is local time: qs-STAT and its peers show K0004 as written, as the site's wall
  clock, while records carry UTC. The exporter converts each time with the site's time zone
  (``zone``; by default the exporting machine's own), offset and daylight saving time
  included, so a value measured at 06:30 on the shop floor reads 06:30 in the tool.
- One specification per characteristic: the header can state one set of limits, so
  records of one part number and revision that disagree on a characteristic's
  specification are refused rather than exported under the wrong limits.
- Text is refused, never altered: a value with a line break or another control
  character (which would break or reinterpret a line) raises :class:`DfqError`, and
  :func:`encode_dfq` raises instead of replacing a character the encoding cannot carry.
  The default encoding, ISO-8859-1, gives bytes that tools reading ISO-8859-1 and tools
  reading Windows-1252 interpret alike (both read the printable 0xA0-0xFF range the
  same way, ``µ`` and ``°`` included); a site whose names need more passes
  ``encoding="utf-8"`` (without a byte order mark, which naive readers take for part
  of the first field) and imports the files as UTF-8.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.errors import CollectorError

if TYPE_CHECKING:
    pass

__all__ = [
    "CLASS_CODES",
    "DEFAULT_ENCODING",
    "REASON_CODES",
    "DfqError",
    "dfq_files",
    "encode_dfq",
    "group_key",
    "to_dfq",
    "value_sets",
    "write_dfq_files",
]


#: Criticality -> K2005 (AQDEF: 4 critical .. 0 unimportant; nothing of ours is unimportant)
CLASS_CODES: dict[str, int] = {"critical": 4, "major": 3, "minor": 2, "incidental": 1}
#: ReasonForTest -> K0015
REASON_CODES: dict[str, int] = {
    "ongoing": 0,
    "special": 10,
    "audit": 20,
    "first_piece": 30,
    "raw_material": 40,
    "pre_run": 50,
    "patrol": 0,
}
#: K0002 attribute values
VALID = 0
INVALID = 129
PLACEHOLDER = 255

DEFAULT_ENCODING = "iso-8859-1"
_ENCODINGS = {"iso8859-1", "cp1252", "utf-8"}  # codecs.lookup() names

#: characteristic fields that must agree across a characteristic's records
_SPEC_FIELDS = ("characteristic_name", "nominal", "lsl", "usl", "unit", "decimals", "criticality")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class DfqError(CollectorError):
    """The records cannot be written as a DFQ file without altering or misplacing evidence."""


def group_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """The (part number, plan revision) a measurement record's file is for."""
    return str(record.get("part_number")), str(record.get("plan_revision"))


def _measurements(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("kind") == "measurement"]


def _void_ids(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of the values statistics must not use: invalidated or superseded."""
    void: set[str] = set()
    for r in records:
        if r.get("kind") == "invalidation" and r.get("target"):
            void.add(str(r["target"]))
        elif r.get("kind") == "measurement" and r.get("supersedes"):
            void.add(str(r["supersedes"]))
    return void


def _text(field: str, value: object, record: Mapping[str, Any]) -> str:
    text = str(value)
    bad = _CONTROL.search(text)
    if bad:
        raise DfqError(
            f"record {record.get('id')}: {field} {text!r} contains the control character "
            f"U+{ord(bad.group()):04X}, which a DFQ line cannot carry"
        )
    return text


def _required(record: Mapping[str, Any], field: str) -> Any:
    value = record.get(field)
    if value is None or value == "":
        raise DfqError(f"measurement record {record.get('id')} has no {field}")
    return value


def _date_time(measured_at: str, record: Mapping[str, Any], zone: dt.tzinfo | None) -> str:
    # "2026-11-21T10:15:30.123456Z": the canonical shape every record carries
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z", measured_at)
    if m is None:
        raise DfqError(f"record {record.get('id')}: measured_at {measured_at!r} is not a UTC timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    utc = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return utc.astimezone(zone).strftime("%d.%m.%Y/%H:%M:%S")


def _spec(record: Mapping[str, Any]) -> tuple[object, ...]:
    return tuple(record.get(f) for f in _SPEC_FIELDS)


def _refuse_unverified(records: list[Mapping[str, Any]]) -> None:
    """A DFQ file has no place to say a value is not evidence: such records are not exported.

    Records from a trace carry ``verified`` (their block's hash, canonical form, register and
    signature checked); a record with ``verified`` false is refused, naming it. Records
    without the mark (built by a caller, not read back) are taken as given.
    """
    bad = [r for r in records if r.get("verified") is False]
    if bad:
        shown = "; ".join(f"{r.get('gateway')} seq {r.get('seq')}: {r.get('verification')}" for r in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DfqError(f"{len(bad)} record(s) are not verified evidence and a DFQ file cannot mark them: {shown}{more}")


def to_dfq(
    records: Iterable[Mapping[str, Any]], *, description: str | None = None, zone: dt.tzinfo | None = None
) -> str:
    """The DFQ text (``\\n`` line ends) for the measurement records of ONE part number and revision.

    ``records`` is what :func:`collector.evidence.trace.trace` returns (all kinds; only measurements
    become values, invalidations mark their targets). Raises :class:`DfqError` when the
    measurements span several part numbers or revisions (use :func:`dfq_files`), when
    there are none, or when the text cannot be written faithfully. ``zone`` is the site's
    time zone for K0004 (None: the exporting machine's own).
    """
    records = list(records)
    _refuse_unverified(records)
    values = _measurements(records)
    if not values:
        raise DfqError("no measurement records to export")
    keys = sorted({group_key(r) for r in values})
    if len(keys) > 1:
        shown = ", ".join(f"{pn} rev {rev}" for pn, rev in keys)
        raise DfqError(f"one DFQ file holds one part number and revision; the records have {shown}")
    return _render(keys[0], values, _void_ids(records), description, zone)


def value_sets(values: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Mapping[str, Any]]]:
    """The measurements grouped into one set per part (characteristic id -> record), in order.

    A re-measure takes the place of the value it supersedes in its part's set; the superseded
    value follows that set in a set of its own. A serial's set is open until one of its
    characteristics comes again without superseding (the part inspected again).
    """
    sets: list[dict[str, Mapping[str, Any]]] = []
    displaced: dict[int, list[dict[str, Mapping[str, Any]]]] = {}
    where: dict[str, int] = {}  # record id -> index of its set
    open_set: dict[object, int] = {}  # serial (or None) -> index of its open set
    for r in values:
        cid = str(r["characteristic"])
        old = str(r.get("supersedes") or "")
        at = where.get(old)
        if at is not None and sets[at].get(cid) is not None and sets[at][cid].get("id") == old:
            displaced.setdefault(at, []).append({cid: sets[at][cid]})
            sets[at][cid] = r
            where[str(r.get("id"))] = at
            continue
        serial = r.get("serial") or None
        at = open_set.get(serial)
        if at is None or cid in sets[at]:
            sets.append({})
            at = open_set[serial] = len(sets) - 1
        sets[at][cid] = r
        where[str(r.get("id"))] = at
    for i, s in enumerate(sets):
        yield s
        yield from displaced.get(i, [])


def _render(
    key: tuple[str, str],
    values: list[Mapping[str, Any]],
    void: set[str],
    description: str | None,
    zone: dt.tzinfo | None,
) -> str:
    part_number, revision = key

    index: dict[str, int] = {}
    specs: dict[str, tuple[object, ...]] = {}
    first: dict[str, Mapping[str, Any]] = {}
    for r in values:
        cid = str(_required(r, "characteristic"))
        if cid not in index:
            index[cid] = len(index) + 1
            specs[cid] = _spec(r)
            first[cid] = r
        elif _spec(r) != specs[cid]:
            differ = [f for f, a, b in zip(_SPEC_FIELDS, specs[cid], _spec(r), strict=True) if a != b]
            raise DfqError(
                f"{part_number} rev {revision}: characteristic {cid} has two specifications "
                f"(records {first[cid].get('id')} and {r.get('id')} differ in {', '.join(differ)}); "
                "a DFQ header states one"
            )

    lines = [f"K0100 {len(index)}", f"K1001 {_text('part_number', part_number, values[0])}"]
    if description:
        lines.append(f"K1002 {_text('description', description, values[0])}")
    lines.append(f"K1004 {_text('plan_revision', revision, values[0])}")
    for cid, n in index.items():
        r = first[cid]
        criticality = str(_required(r, "criticality"))
        if criticality not in CLASS_CODES:
            raise DfqError(f"record {r.get('id')}: unknown criticality {criticality!r}")
        lines.append(f"K2001/{n} {_text('characteristic', cid, r)}")
        lines.append(f"K2002/{n} {_text('characteristic_name', _required(r, 'characteristic_name'), r)}")
        lines.append(f"K2004/{n} 0")
        lines.append(f"K2005/{n} {CLASS_CODES[criticality]}")
        lines.append(f"K2022/{n} {int(_required(r, 'decimals'))}")
        for code, field in (("K2101", "nominal"), ("K2110", "lsl"), ("K2111", "usl")):
            if r.get(field) is not None:
                lines.append(f"{code}/{n} {_number(field, r[field], r)}")
        lines.append(f"K2142/{n} {_text('unit', _required(r, 'unit'), r)}")

    for value_set in value_sets(values):
        for cid, n in index.items():
            value = value_set.get(cid)
            if value is None:
                lines += [f"K0001/{n} 0", f"K0002/{n} {PLACEHOLDER}"]
                continue
            lines += _value_lines(value, n, void, zone)
    return "\n".join(lines) + "\n"


def _value_lines(r: Mapping[str, Any], n: int, void: set[str], zone: dt.tzinfo | None) -> list[str]:
    lines = [
        f"K0001/{n} {_number('value', _required(r, 'value'), r)}",
        f"K0002/{n} {INVALID if str(r.get('id')) in void else VALID}",
        f"K0004/{n} {_date_time(str(_required(r, 'measured_at')), r, zone)}",
    ]
    for code, field in (("K0006", "lot"), ("K0008", "operator"), ("K0010", "station"), ("K0012", "gauge")):
        if r.get(field) not in (None, ""):
            lines.append(f"{code}/{n} {_text(field, r[field], r)}")
    if r.get("serial") not in (None, ""):
        lines.append(f"K0014/{n} {_text('serial', r['serial'], r)}")
    reason = str(r.get("reason_for_test") or "ongoing")
    if reason not in REASON_CODES:
        raise DfqError(f"record {r.get('id')}: unknown reason for test {reason!r}")
    lines.append(f"K0015/{n} {REASON_CODES[reason]}")
    if r.get("work_order") not in (None, ""):
        lines.append(f"K0053/{n} {_text('work_order', r['work_order'], r)}")
    return lines


def _number(field: str, value: object, record: Mapping[str, Any]) -> str:
    # the payload schema already guarantees this shape; checked again because a DFQ
    # reader would take "1E-7" or "1,5" for something else
    text = str(value)
    if not re.fullmatch(r"-?\d+(\.\d+)?", text):
        raise DfqError(f"record {record.get('id')}: {field} {text!r} is not a plain decimal number")
    return text


def _file_stem(part_number: str, revision: str) -> str:
    return _UNSAFE_NAME.sub("_", f"{part_number}_{revision}").strip("._") or "part"


def dfq_files(
    records: Iterable[Mapping[str, Any]],
    *,
    descriptions: Mapping[str, str] | None = None,
    zone: dt.tzinfo | None = None,
) -> dict[str, str]:
    """One DFQ text per (part number, plan revision): ``{file name: text}``, sorted by name.

    File names are ``<part number>_<revision>.dfq`` with anything but letters, digits,
    ``.``, ``_`` and ``-`` replaced by ``_`` (a part number may hold ``/``); names that
    collide after that get ``-2``, ``-3`` ... in the order of the sorted keys.
    ``descriptions`` maps part numbers to K1002 texts (the plans' descriptions); ``zone`` is
    the site's time zone for K0004 (None: the exporting machine's own).
    """
    records = list(records)
    _refuse_unverified(records)
    void = _void_ids(records)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in _measurements(records):
        groups.setdefault(group_key(r), []).append(r)
    out: dict[str, str] = {}
    for key in sorted(groups):
        stem = _file_stem(*key)
        name, k = f"{stem}.dfq", 1
        while name in out:
            k += 1
            name = f"{stem}-{k}.dfq"
        out[name] = _render(key, groups[key], void, (descriptions or {}).get(key[0]), zone)
    return dict(sorted(out.items()))


def encode_dfq(text: str, encoding: str = DEFAULT_ENCODING) -> bytes:
    """The file's bytes: CR LF line ends (what the Windows tools write and expect).

    Raises :class:`DfqError` naming the line and character when ``encoding`` cannot carry
    a character; nothing is replaced.
    """
    name = _encoding(encoding)
    for number, line in enumerate(text.split("\n"), start=1):
        try:
            line.encode(name)
        except UnicodeEncodeError as exc:
            ch = line[exc.start]
            raise DfqError(
                f"DFQ line {number} ({line.split(' ', 1)[0]}): the character {ch!r} (U+{ord(ch):04X}) "
                f"cannot be written in {encoding}; export with encoding utf-8 for a tool that reads UTF-8"
            ) from None
    return text.replace("\n", "\r\n").encode(name)


def _encoding(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        name = ""
    if name not in _ENCODINGS:
        raise DfqError(f"unsupported DFQ encoding {encoding!r}: use iso-8859-1, cp1252 or utf-8")
    return name


def write_dfq_files(files: Mapping[str, str], directory: Path, encoding: str = DEFAULT_ENCODING) -> list[Path]:
    """Write :func:`dfq_files` output into ``directory``; refuses to overwrite a file.

    Every text is encoded before anything is written, so an encoding error leaves no
    partial export behind.
    """
    encoded = {name: encode_dfq(text, encoding) for name, text in files.items()}
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in encoded.items():
        path = directory / name
        try:
            with open(path, "xb") as f:
                f.write(data)
        except FileExistsError:
            raise DfqError(f"{path} exists already; an export never overwrites a file") from None
        written.append(path)
    return written
