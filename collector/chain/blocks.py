"""Blocks: the sealed, signed links of a gateway's chain (see ``docs/evidence-format.md``).

A gateway seals the records one journal transaction produced for one station into a block:
``hash = sha256(canonical bytes)``, the previous block's hash inside, the hash signed with the
gateway's key. On the wire and in storage a block is one line: its canonical JSON with
``,"hash":"...","signature":"..."`` before the closing brace, so that a reader finds the
hashed bytes without re-encoding anything.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collector.chain.canonical import NotCanonical, canonical_text
from collector.chain.keys import Signer
from collector.errors import CollectorError

SCHEMA_VERSION = 2
GENESIS_HASH = "0" * 64

#: the block's own keys, in canonical (sorted) order, "hash" and "signature" aside
HEADER_KEYS = (
    "clock_synced",
    "first_seq",
    "gateway",
    "key_id",
    "line",
    "prev_hash",
    "recorded_at",
    "records",
    "schema_version",
    "site",
    "station",
)
#: keys a record inside a block must not carry: the block holds them for all its records
MATERIALISED_KEYS = frozenset(
    {"schema_version", "gateway", "site", "line", "station", "seq", "recorded_at", "clock_synced"}
    | {"prev_hash", "hash", "signature", "key_id"}
)

_SEAL = re.compile(r',"hash":"([0-9a-f]{64})"(?:,"signature":"([0-9a-f]{64}|[0-9a-f]{128})")?\}$')
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_string = json.JSONEncoder(ensure_ascii=False).encode


class BlockError(CollectorError):
    """A line that is not a well-formed, self-consistent block. ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def format_utc_us(epoch_us: int) -> str:
    """Microseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    secs, us = divmod(epoch_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{us:06d}Z"


def parse_utc_us(text: str) -> int:
    """Inverse of :func:`format_utc_us`."""
    import calendar

    if not _TIMESTAMP.match(text):
        raise ValueError(f"not a UTC timestamp with microseconds: {text!r}")
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1_000_000 + int(text[20:26])


@dataclass(frozen=True, slots=True)
class Block:
    """A block as read back (or as just sealed). ``text`` is the line exactly as it travels."""

    gateway: str
    site: str
    line: str
    station: str
    first_seq: int
    recorded_at: str
    clock_synced: bool
    prev_hash: str
    key_id: str | None
    records: list[dict[str, Any]]
    hash: str
    signature: str | None
    text: str

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.records) - 1

    @property
    def digest(self) -> bytes:
        """What the signature signs: the hash's 32 bytes."""
        return bytes.fromhex(self.hash)

    @property
    def recorded_us(self) -> int:
        return parse_utc_us(self.recorded_at)

    def materialise(self) -> list[dict[str, Any]]:
        """Each record as readers see it: the block's keys, ``seq`` and ``recorded_at`` added."""
        base_us = self.recorded_us
        out: list[dict[str, Any]] = []
        for i, entry in enumerate(self.records):
            record = {
                "schema_version": SCHEMA_VERSION,
                "gateway": self.gateway,
                "site": self.site,
                "line": self.line,
                "station": self.station,
                "seq": self.first_seq + i,
                "recorded_at": format_utc_us(base_us + i),
                "clock_synced": self.clock_synced,
            }
            record.update(entry)
            out.append(record)
        return out


def header_text(
    *,
    gateway: str,
    site: str,
    line: str,
    station: str,
    first_seq: int,
    recorded_at: str,
    clock_synced: bool,
    prev_hash: str,
    key_id: str | None,
) -> tuple[str, str]:
    """The canonical text around the records: (before the first record, after the last).

    The block's keys sort as ``clock_synced, first_seq, gateway, key_id, line, prev_hash,
    recorded_at, records, schema_version, site, station``, so the records' array sits between
    two fixed pieces and a gateway can splice in records it encoded itself.
    """
    head = (
        f'{{"clock_synced":{"true" if clock_synced else "false"},"first_seq":{int(first_seq)},'
        f'"gateway":{_string(gateway)},"key_id":{"null" if key_id is None else _string(key_id)},'
        f'"line":{_string(line)},"prev_hash":"{prev_hash}","recorded_at":"{recorded_at}","records":['
    )
    tail = f'],"schema_version":{SCHEMA_VERSION},"site":{_string(site)},"station":{_string(station)}}}'
    return head, tail


def seal_text(canonical: str, signer: Signer | None) -> tuple[str, str, str | None]:
    """(line, hash, signature) of a block whose canonical text is ``canonical``."""
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    hexdigest = digest.hex()
    if signer is None:
        return f'{canonical[:-1]},"hash":"{hexdigest}"}}', hexdigest, None
    signature = signer.sign(digest)
    return f'{canonical[:-1]},"hash":"{hexdigest}","signature":"{signature}"}}', hexdigest, signature


def seal(
    records: Sequence[dict[str, Any]],
    *,
    gateway: str,
    site: str,
    line: str,
    station: str,
    first_seq: int,
    recorded_at: str,
    clock_synced: bool,
    prev_hash: str,
    signer: Signer | None,
    encoded: Sequence[str] | None = None,
) -> Block:
    """Seal ``records`` into a block.

    ``encoded``, when given, are the records' canonical texts, made by a faster encoder of the
    caller's (they must be byte for byte what :func:`canonical_text` gives: the caller's tests
    prove it). Otherwise each record is encoded here, with the checks.
    """
    if not records:
        raise BlockError("a block holds at least one record")
    texts = list(encoded) if encoded is not None else [canonical_text(r) for r in records]
    key_id = signer.key_id if signer is not None else None
    head, tail = header_text(
        gateway=gateway,
        site=site,
        line=line,
        station=station,
        first_seq=first_seq,
        recorded_at=recorded_at,
        clock_synced=clock_synced,
        prev_hash=prev_hash,
        key_id=key_id,
    )
    text, digest, signature = seal_text(head + ",".join(texts) + tail, signer)
    return Block(
        gateway=gateway,
        site=site,
        line=line,
        station=station,
        first_seq=first_seq,
        recorded_at=recorded_at,
        clock_synced=clock_synced,
        prev_hash=prev_hash,
        key_id=key_id,
        records=list(records),
        hash=digest,
        signature=signature,
        text=text,
    )


def read(text: str, *, strict: bool = False) -> Block:  # noqa: C901 - one check per rule of the block format, in its order
    """Parse one block line and check that it hashes to its ``hash``.

    The signature is not checked here (that needs the register: :meth:`KeyRing.verify` with
    :attr:`Block.digest`). ``strict`` also re-encodes the parsed block and requires the very
    same bytes (``collector verify`` does; the recorder's hash check already binds the bytes).
    Raises :class:`BlockError` with the reason.
    """
    m = _SEAL.search(text)
    if m is None:
        raise BlockError("no hash at the end of the line (not a sealed block)")
    canonical = text[: m.start()] + "}"
    claimed, signature = m.group(1), m.group(2)
    if hashlib.sha256(canonical.encode("utf-8")).hexdigest() != claimed:
        raise BlockError("hash does not match the block's content")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BlockError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BlockError("not a JSON object")
    body = {k: v for k, v in data.items() if k not in ("hash", "signature")}
    if set(body) != set(HEADER_KEYS):
        missing, extra = set(HEADER_KEYS) - set(body), set(body) - set(HEADER_KEYS)
        problems = [f"missing {sorted(missing)}"] if missing else []
        problems += [f"unexpected {sorted(extra)}"] if extra else []
        raise BlockError("block keys: " + "; ".join(problems))
    if body["schema_version"] != SCHEMA_VERSION:
        raise BlockError(f"schema_version {body['schema_version']!r}: this recorder reads version {SCHEMA_VERSION}")
    for key in ("gateway", "site", "line", "station"):
        if not isinstance(body[key], str) or not body[key]:
            raise BlockError(f"{key}: expected a non-empty string")
    first = body["first_seq"]
    if type(first) is not int or first < 1:
        raise BlockError("first_seq: expected an integer >= 1")
    if not isinstance(body["recorded_at"], str) or not _TIMESTAMP.match(body["recorded_at"]):
        raise BlockError("recorded_at: expected YYYY-MM-DDTHH:MM:SS.ffffffZ")
    if type(body["clock_synced"]) is not bool:
        raise BlockError("clock_synced: expected true or false")
    if not isinstance(body["prev_hash"], str) or not _HEX64.match(body["prev_hash"]):
        raise BlockError("prev_hash: expected 64 lower-case hex digits")
    key_id = body["key_id"]
    if key_id is not None and (not isinstance(key_id, str) or not key_id):
        raise BlockError("key_id: expected a string or null")
    if (key_id is None) != (signature is None):
        raise BlockError("key_id and signature: both or neither")
    records = body["records"]
    if not isinstance(records, list) or not records:
        raise BlockError("records: expected a non-empty list")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BlockError(f"records[{i}]: expected an object")
        clash = MATERIALISED_KEYS.intersection(record)
        if clash:
            raise BlockError(f"records[{i}]: {sorted(clash)} belong to the block, not to a record")
    if strict:
        try:
            again = canonical_text(body)
        except NotCanonical as exc:
            raise BlockError(f"not canonical: {exc}") from None
        if again != canonical:
            raise BlockError("not canonical: the text is not the canonical encoding of its content")
    return Block(
        gateway=body["gateway"],
        site=body["site"],
        line=body["line"],
        station=body["station"],
        first_seq=first,
        recorded_at=body["recorded_at"],
        clock_synced=body["clock_synced"],
        prev_hash=body["prev_hash"],
        key_id=key_id,
        records=records,
        hash=claimed,
        signature=signature,
        text=text,
    )
