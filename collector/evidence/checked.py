"""Blocks read back from the store, each checked before anything in it is shown as evidence.

A record is evidence only as part of a block that

1. is the exact canonical text its hash covers (``collector.chain.blocks.read(strict=True)``),
2. sits in a block point whose tags, time and columns agree with it,
3. comes from a gateway in the register (the key directory), from a station the register
   binds to that gateway (when it binds stations), and
4. carries a signature that one of that gateway's keys verifies.

:func:`check_block` says which of these fail, with the finding each failure is (the names of
``docs/evidence-format.md``: ALTERED, FORGED, UNKNOWN). Without a key directory, 3 and 4
cannot be checked: such a block is *not verified*, whatever its hash says, because anyone
with write access to the store can write a block with a correct hash.

Trace, the part report and verify share this; verify adds what needs the whole chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from collector.chain.blocks import Block
from collector.chain.keys import KeyRing, SignatureInvalid
from collector.evidence.findings import ALTERED, FORGED, UNKNOWN
from collector.store import queries
from collector.store.base import Row, Store
from collector.store.lineprotocol import BLOCK_FIELDS, BLOCK_TAG_KEYS, block_columns, mismatches
from collector.store.queries import BlockRef, Unreadable

if TYPE_CHECKING:  # the records' types only: the trace path does not import the domain models
    from collector.inspection.record_types import Record

#: what a trace adds to each record it prints: the block's hash and whether it verified
ANNOTATIONS = ("block_hash", "verified", "verification")


@dataclass
class CheckedBlock:
    """A block as stored, and what checking it found."""

    block: Block
    at: BlockRef
    problems: list[tuple[str, str]] = field(default_factory=list)  # (finding, detail)
    signature: str = "not checked (no key directory)"

    @property
    def verified(self) -> bool:
        """Canonical, consistent with its point, registered and signed: evidence."""
        return not self.problems and self.signature.startswith("verified")

    @property
    def verification(self) -> str:
        if self.problems:
            return "NOT VERIFIED: " + "; ".join(f"{kind} {detail}" for kind, detail in self.problems)
        return self.signature

    def records(self) -> list[Record]:
        """The block's records, materialised and annotated with the verification."""
        out = self.block.materialise()
        for r in out:
            r["block_hash"] = self.block.hash
            r["verified"] = self.verified
            r["verification"] = self.verification
        return out


def check_block(block: Block, row: Row | None, keys: KeyRing | None) -> CheckedBlock:
    """Check ``block`` (read from ``row``, its stored point) against its point and the register."""
    at = BlockRef(
        str(row.get("gateway") if row else block.gateway), int(row["time"]) if row else block.recorded_us, block.station
    )
    checked = CheckedBlock(block, at)
    if row is not None:
        tags, fields, at_us = block_columns(block)
        bad = mismatches(tags, fields, at_us, row, columns=BLOCK_FIELDS, tag_keys=BLOCK_TAG_KEYS)
        if bad:
            cols = ", ".join(f"{c} stored {_short(row.get(c))}" for c in bad)
            checked.problems.append((ALTERED, f"the block point's columns differ from its block: {cols}"))
    if keys is None:
        return checked
    entry = keys.get(block.gateway)
    if entry is None:
        checked.problems.append((UNKNOWN, f"gateway {block.gateway!r} is not in the register {keys.source}"))
        return checked
    where = [
        (name, bound, actual)
        for name, bound, actual in (("site", entry.site, block.site), ("line", entry.line, block.line))
        if bound is not None and bound != actual
    ]
    if entry.stations is not None and block.station not in entry.stations:
        where.append(("station", ", ".join(sorted(entry.stations)), block.station))
    for name, bound, actual in where:
        checked.problems.append(
            (UNKNOWN, f"{name} {actual!r}: the register binds gateway {block.gateway!r} to {name} {bound}")
        )
    try:
        keys.verify(block.gateway, block.key_id, block.digest, block.signature)
    except SignatureInvalid as exc:
        checked.problems.append((FORGED, f"signature: {exc}"))
    else:
        checked.signature = f"verified: signed with key {block.key_id} of gateway {block.gateway}"
    return checked


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class Loaded:
    """Blocks read for a set of places: checked blocks, and points that are not blocks."""

    blocks: dict[BlockRef, CheckedBlock] = field(default_factory=dict)
    unreadable: list[Unreadable] = field(default_factory=list)
    missing: list[BlockRef] = field(default_factory=list)  # named (by the index or a point) but absent


def load_blocks(store: Store, refs: Iterable[BlockRef], keys: KeyRing | None) -> Loaded:
    """Read and check the blocks at ``refs``."""
    wanted = set(refs)
    loaded = Loaded()
    for row in queries.blocks_at(store, wanted):
        ref = BlockRef(str(row.get("gateway")), int(row["time"]), str(row.get("station") or ""))
        block = queries.read_block(row)
        if isinstance(block, Unreadable):
            loaded.unreadable.append(block)
            continue
        loaded.blocks[ref] = check_block(block, row, keys)
    loaded.missing = sorted(wanted - set(loaded.blocks) - {u.ref for u in loaded.unreadable if u.ref is not None})
    return loaded


def records_of(blocks: Iterable[CheckedBlock]) -> Iterator[Record]:
    for checked in blocks:
        yield from checked.records()
