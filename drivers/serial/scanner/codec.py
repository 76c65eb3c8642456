"""Barcode content rules: GS1 element strings (with check digits and dates) and shop label formats.

Sources: GS1 General Specifications, section 3 "GS1 Application Identifier definitions"
(the AIs, their lengths and character sets, which carry a check digit, the YYMMDD dates
with DD 00 for the end of the month); the rules for AIs in data carriers (FNC1, sent by a
scanner as GS, after every variable-length field that is not last; the table of element
strings with predefined length; the symbology identifiers ]C1, ]d2, ]Q3, ]e0 that announce
GS1 data); section 7.9 "Check digit calculation" (mod 10, weights 3 and 1 from the right);
section 7.12 "Determination of century in dates" (the sliding window). The ISO/IEC 15434
envelope uses GS, RS and EOT, which a code may therefore contain.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

GS = "\x1d"  # FNC1 as transmitted by a scanner
CHANNEL = "code"
#: AIM symbology identifiers that announce GS1 data
GS1_SYMBOLOGIES = frozenset({"]C1", "]d2", "]Q3", "]e0"})
#: keys a shop label pattern may set (the station's part context)
LABEL_GROUPS = frozenset({"part_number", "serial", "lot", "work_order", "operator"})
DEFAULT_GS1_MAP: dict[str, str] = {"01": "gtin", "10": "lot", "21": "serial"}

_AIM_ID = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_ALLOWED_CONTROLS = frozenset("\x1d\x1e\x04")
#: GS1 character set 82, the characters an alphanumeric AI value may hold
_CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]+")
_HRI_AI = re.compile(r"\(([0-9]{2,4})\)")


class DecodeError(ValueError):
    """A scanned code that does not decode in the configured format."""


class GS1Error(DecodeError):
    """A code that is not a valid GS1 element string."""


# -- GS1 application identifiers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AISpec:
    code: str
    title: str
    min_length: int
    max_length: int
    numeric: bool = False
    check_digit: bool = False
    date: bool = False

    @property
    def fixed(self) -> bool:
        return self.min_length == self.max_length


def _ai_table() -> dict[str, AISpec]:
    specs = [
        AISpec("00", "SSCC", 18, 18, numeric=True, check_digit=True),
        AISpec("01", "GTIN", 14, 14, numeric=True, check_digit=True),
        AISpec("02", "CONTENT", 14, 14, numeric=True, check_digit=True),
        AISpec("10", "BATCH/LOT", 1, 20),
        AISpec("11", "PROD DATE", 6, 6, numeric=True, date=True),
        AISpec("12", "DUE DATE", 6, 6, numeric=True, date=True),
        AISpec("13", "PACK DATE", 6, 6, numeric=True, date=True),
        AISpec("15", "BEST BEFORE", 6, 6, numeric=True, date=True),
        AISpec("16", "SELL BY", 6, 6, numeric=True, date=True),
        AISpec("17", "USE BY OR EXPIRY", 6, 6, numeric=True, date=True),
        AISpec("20", "VARIANT", 2, 2, numeric=True),
        AISpec("21", "SERIAL", 1, 20),
        AISpec("22", "CPV", 1, 20),
        AISpec("240", "ADDITIONAL ID", 1, 30),
        AISpec("241", "CUST. PART No.", 1, 30),
        AISpec("250", "SECONDARY SERIAL", 1, 30),
        AISpec("30", "VAR. COUNT", 1, 8, numeric=True),
        AISpec("37", "COUNT", 1, 8, numeric=True),
        AISpec("400", "ORDER NUMBER", 1, 30),
        AISpec("401", "GINC", 1, 30),
        AISpec("402", "GSIN", 17, 17, numeric=True, check_digit=True),
        AISpec("420", "SHIP TO POST", 1, 20),
        AISpec("422", "ORIGIN", 3, 3, numeric=True),
        AISpec("7003", "EXPIRY TIME", 10, 10, numeric=True),
        AISpec("8004", "GIAI", 1, 30),
        AISpec("90", "INTERNAL", 1, 30),
    ]
    specs += [AISpec(f"41{d}", "GLN", 13, 13, numeric=True, check_digit=True) for d in range(8)]
    specs += [AISpec(str(n), "INTERNAL", 1, 90) for n in range(91, 100)]
    # trade and logistic measures 31nn..36nn: six digits, the last AI digit places the decimal point
    measures = {"31": range(7), "32": range(10), "33": range(8), "34": range(10), "35": range(8), "36": range(10)}
    for prefix, thirds in measures.items():
        specs += [AISpec(f"{prefix}{t}{n}", "MEASURE", 6, 6, numeric=True) for t in thirds for n in range(6)]
    return {s.code: s for s in specs}


#: the application identifiers this parser knows; a code with any other AI does not parse,
#: since in an element string the length of an unknown AI's value cannot be known
AIS: Mapping[str, AISpec] = _ai_table()


def gs1_check_digit(digits: str) -> str:
    """The GS1 mod-10 check digit for ``digits`` (the data digits, without the check digit)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def gs1_date(value: str, today: datetime.date | None = None) -> datetime.date:
    """A GS1 YYMMDD date. DD 00 means the last day of the month; the century follows the
    GS1 sliding window (up to 49 years ahead, 50 years back, from ``today``)."""
    if len(value) != 6 or not value.isascii() or not value.isdigit():
        raise GS1Error(f"date {value!r} is not YYMMDD")
    yy, mm, dd = int(value[:2]), int(value[2:4]), int(value[4:])
    today = today or datetime.date.today()
    century, current = divmod(today.year, 100)
    diff = yy - current
    if diff >= 51:
        century -= 1
    elif diff <= -50:
        century += 1
    year = century * 100 + yy
    if not 1 <= mm <= 12:
        raise GS1Error(f"date {value!r}: month {mm:02d} does not exist")
    last = calendar.monthrange(year, mm)[1]
    if dd > last:
        raise GS1Error(f"date {value!r}: day {dd:02d} does not exist in {year}-{mm:02d}")
    return datetime.date(year, mm, dd or last)


def _check_value(spec: AISpec, value: str) -> None:
    where = f"AI ({spec.code}) {spec.title}"
    if not spec.min_length <= len(value) <= spec.max_length:
        want = str(spec.max_length) if spec.fixed else f"1 to {spec.max_length}"
        raise GS1Error(f"{where}: expected {want} characters, got {len(value)} ({value!r})")
    if spec.numeric and not (value.isascii() and value.isdigit()):
        raise GS1Error(f"{where}: {value!r} is not all digits")
    if not _CSET82.fullmatch(value):
        raise GS1Error(f"{where}: {value!r} has characters outside the GS1 character set")
    if spec.check_digit and gs1_check_digit(value[:-1]) != value[-1]:
        raise GS1Error(f"{where}: check digit of {value} is wrong (expected {gs1_check_digit(value[:-1])})")
    if spec.date:
        # validity of the calendar day does not depend on the century between 1901 and 2099
        yy, mm, dd = int(value[:2]), int(value[2:4]), int(value[4:])
        if not 1 <= mm <= 12:
            raise GS1Error(f"{where}: month {mm:02d} does not exist in {value}")
        if dd > calendar.monthrange(2000 + yy, mm)[1]:
            raise GS1Error(f"{where}: day {dd:02d} does not exist in {value}")


def _add(out: dict[str, str], ai: str, value: str) -> None:
    _check_value(AIS[ai], value)
    if ai in out:
        # a label carries each AI once; twice is what two codes glued by a lost line end look like
        raise GS1Error(f"AI ({ai}) appears twice: {out[ai]!r} and {value!r}")
    out[ai] = value


def _find_ai(text: str, pos: int) -> str:
    # GS1 chose AIs so that none is a prefix of another: the first hit is the only one
    for length in (2, 3, 4):
        candidate = text[pos : pos + length]
        if candidate in AIS:
            return candidate
    raise GS1Error(f"unknown application identifier at {text[pos : pos + 4]!r}")


def parse_gs1(code: str) -> dict[str, str]:
    """Parse a GS1 element string into ``{AI: value}`` in the order of the code.

    Accepts an optional GS1 symbology identifier (``]C1``, ``]d2``, ``]Q3``, ``]e0``), FNC1
    as GS (ASCII 29) between fields (and, tolerated, one at the start, after fixed-length
    fields or at the end), or the parenthesised form ``(01)...(10)...``. Verifies lengths,
    character sets, check digits (00, 01, 02, 402, 41x), dates (11-17, DD 00 allowed), that
    each AI appears once and that no two separators stand in a row; nothing is stripped.
    Raises :class:`GS1Error` naming what is wrong.
    """
    text = code  # nothing is stripped: a blank is in no GS1 value's character set
    if text.startswith("]"):
        symbology = text[:3]
        if symbology not in GS1_SYMBOLOGIES:
            raise GS1Error(f"symbology identifier {symbology!r} does not announce GS1 data")
        text = text[3:]
    if not text.strip(GS):
        raise GS1Error("empty code")
    if text.startswith("("):
        return _parse_hri(text)
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        if text[pos] == GS:
            if text[pos + 1 : pos + 2] == GS:
                # one separator carries no data; a second one is noise
                raise GS1Error("two separators (FNC1) in a row")
            pos += 1
            continue
        ai = _find_ai(text, pos)
        spec = AIS[ai]
        pos += len(ai)
        if spec.fixed:
            value = text[pos : pos + spec.max_length]
            if GS in value:
                value = value[: value.index(GS)]
            pos += len(value)
        else:
            end = text.find(GS, pos)
            end = len(text) if end < 0 else end
            value = text[pos:end]
            pos = end
        if not value:
            raise GS1Error(f"AI ({ai}) {spec.title} has no value")
        _add(out, ai, value)
    return out


def _parse_hri(text: str) -> dict[str, str]:
    matches = list(_HRI_AI.finditer(text))
    if not matches or matches[0].start() != 0:
        raise GS1Error("parenthesised form must start with (AI)")
    out: dict[str, str] = {}
    for m, following in zip(matches, [*matches[1:], None], strict=True):
        ai = m.group(1)
        if ai not in AIS:
            raise GS1Error(f"unknown application identifier ({ai})")
        end = following.start() if following is not None else len(text)
        value = text[m.end() : end]
        if not value:
            raise GS1Error(f"AI ({ai}) {AIS[ai].title} has no value")
        _add(out, ai, value)
    return out


# -- shop label formats --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelFormat:
    """A shop's own label: a regular expression over the whole code with named groups
    among part_number, serial, lot, work_order, operator."""

    pattern: re.Pattern[str]

    @classmethod
    def compile(cls, pattern: str) -> LabelFormat:
        """Raises ValueError for a bad expression or group names outside :data:`LABEL_GROUPS`."""
        return compile_label(pattern)

    def decode(self, code: str) -> dict[str, str]:
        """The named groups that matched (empty ones left out). Raises :class:`DecodeError`."""
        m = self.pattern.fullmatch(strip_symbology(code))
        if m is None:
            raise DecodeError(f"{code!r} does not match the label pattern")
        return {k: v for k, v in m.groupdict().items() if v}


@functools.lru_cache(maxsize=64)
def compile_label(pattern: str) -> LabelFormat:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    groups = set(rx.groupindex)
    if not groups:
        raise ValueError(f"needs at least one named group among {sorted(LABEL_GROUPS)}")
    unknown = groups - LABEL_GROUPS
    if unknown:
        raise ValueError(f"unknown named groups {sorted(unknown)}; allowed: {sorted(LABEL_GROUPS)}")
    return LabelFormat(rx)


def strip_symbology(code: str) -> str:
    """The code without a leading AIM symbology identifier (``]`` + letter + modifier)."""
    return code[3:] if _AIM_ID.match(code) else code


def check_text(frame: bytes) -> str:
    """The scanned code as text. Raises :class:`DecodeError` for bytes that are no label."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("not UTF-8 text") from None
    bad = next((c for c in text if (c < " " or c == "\x7f") and c not in _ALLOWED_CONTROLS), None)
    if bad is not None:
        raise DecodeError(f"control character {bad!r} in code")
    return text
