"""Checkpoints: a gateway's signed statement of how far its chain reached, and when.

Published retained on ``<prefix>/gateways/<id>/checkpoint`` at an interval, at start and at
stop; recorders store them. ``collector verify`` compares the stored chain with the newest
checkpoint: a chain that ends before ``head_seq`` lost its tail, a block at ``head_seq`` with
another hash was rewritten.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from collector.chain.blocks import SCHEMA_VERSION, format_utc_us, parse_utc_us
from collector.chain.canonical import canonical_text
from collector.chain.keys import Signer
from collector.errors import CollectorError

_SIGNATURE = re.compile(r',"signature":"([0-9a-f]{64}|[0-9a-f]{128})"\}$')
_KEYS = frozenset({"at", "gateway", "head_hash", "head_seq", "key_id", "schema_version", "type"})


class CheckpointError(CollectorError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Checkpoint:
    gateway: str
    head_seq: int
    head_hash: str
    at: str
    key_id: str | None
    signature: str | None
    digest: bytes  # sha256 of the canonical bytes: what the signature signs
    text: str

    @property
    def at_us(self) -> int:
        return parse_utc_us(self.at)


def make(gateway: str, head_seq: int, head_hash: str, at_us: int, signer: Signer | None) -> Checkpoint:
    body = {
        "at": format_utc_us(at_us),
        "gateway": gateway,
        "head_hash": head_hash,
        "head_seq": head_seq,
        "key_id": None if signer is None else signer.key_id,
        "schema_version": SCHEMA_VERSION,
        "type": "checkpoint",
    }
    canonical = canonical_text(body)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    signature = None if signer is None else signer.sign(digest)
    text = canonical if signature is None else f'{canonical[:-1]},"signature":"{signature}"}}'
    return Checkpoint(gateway, head_seq, head_hash, body["at"], body["key_id"], signature, digest, text)  # type: ignore[arg-type]


def read(text: str) -> Checkpoint:
    """Parse a checkpoint (its signature is checked with :meth:`KeyRing.verify` and ``digest``)."""
    m = _SIGNATURE.search(text)
    canonical = text if m is None else text[: m.start()] + "}"
    signature = None if m is None else m.group(1)
    try:
        data = json.loads(canonical)
    except ValueError as exc:
        raise CheckpointError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != _KEYS or data.get("type") != "checkpoint":
        raise CheckpointError("not a checkpoint (keys or type)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise CheckpointError(f"schema_version {data['schema_version']!r}")
    if type(data["head_seq"]) is not int or data["head_seq"] < 0:
        raise CheckpointError("head_seq: expected an integer >= 0")
    if not all(isinstance(data[k], str) for k in ("gateway", "head_hash", "at")):
        raise CheckpointError("gateway, head_hash, at: expected strings")
    if canonical_text(data) != canonical:
        raise CheckpointError("not canonical")
    if (data["key_id"] is None) != (signature is None):
        raise CheckpointError("key_id and signature: both or neither")
    try:
        parse_utc_us(data["at"])
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return Checkpoint(
        data["gateway"], data["head_seq"], data["head_hash"], data["at"], data["key_id"], signature, digest, text
    )
