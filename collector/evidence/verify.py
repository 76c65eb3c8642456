"""Verifying the evidence: every gateway's chain, whole, against the register and its checkpoints.

For each gateway in the register (the key directory) and each gateway the store names, over
a time range (or everything), three streams are read in time order and walked together:
the gateway's ``block`` points, its record points, and its ``lookup`` entries. Then:

- every block is read strictly (its hash over exactly its text, canonical JSON), checked
  against its point's tags and columns, the register (gateway known, bound to the block's
  site, line and station) and its signature (:func:`collector.evidence.checked.check_block`);
- consecutive blocks must continue each other: the next ``first_seq`` follows the last
  ``seq`` (else a GAP, or a DUPLICATE when two blocks claim one number) and ``prev_hash``
  is the previous block's hash (else BROKEN); without a time range the chain starts at 1;
  with one, the blocks just before and after the range are read to check the links in and
  out of it;
- every record point must be the record of its block, column for column (ALTERED), and
  every record must have its point; a point that no block holds is an ORPHAN, and so is a
  point without a ``gateway`` tag;
- the lookup entries must be exactly the block's (a deleted entry would hide the block from
  a trace by serial);
- every checkpoint must be readable and signed; the block at its ``head_seq`` must have its
  ``head_hash`` (else REHASHED), and the stored chain must reach the newest ``head_seq``
  (else TRUNCATED);
- a registered gateway without blocks is MISSING, a gateway that is not registered UNKNOWN.

Records younger than the grace period may still be on their way (recorders share the work
and write in batches): a gap or a missing tail that young is reported IN FLIGHT, which is
not an error. Findings are bounded: past :data:`MAX_DETAILS` of one kind for one gateway,
the rest are counted.

Why one module of this size: the checks above run in one pass over each gateway's chain, and
each is a few lines of that pass; the findings themselves live in :mod:`collector.evidence.findings`.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator

from collector.chain.blocks import Block, format_utc_us
from collector.chain.checkpoints import Checkpoint
from collector.chain.keys import KeyRing, SignatureInvalid
from collector.evidence.checked import check_block
from collector.evidence.findings import (
    ALTERED,
    BROKEN,
    DEFAULT_GRACE_S,
    DUPLICATE,
    FORGED,
    GAP,
    IN_FLIGHT,
    KINDS,
    MAX_DETAILS,
    MISSING,
    NO_GATEWAY,
    ORPHAN,
    REHASHED,
    TRUNCATED,
    UNKNOWN,
    Finding,
    GatewayChain,
    Report,
    format_report,
)
from collector.evidence.trace import TraceFilter
from collector.store import queries
from collector.store.base import Row, Store
from collector.store.lineprotocol import (
    RECORD_FIELDS,
    decode_lookup,
    lookup_entries,
    lookup_field,
    mismatches,
    record_columns,
)
from collector.store.queries import Unreadable


class _Peek:
    """An iterator of rows with a look at the next one."""

    def __init__(self, rows: Iterator[Row]) -> None:
        self._rows = rows
        self._next: Row | None = None
        self._done = False

    def peek(self) -> Row | None:
        if self._next is None and not self._done:
            self._next = next(self._rows, None)
            self._done = self._next is None
        return self._next

    def pop(self) -> Row:
        row = self.peek()
        assert row is not None
        self._next = None
        return row

    def before(self, t: int) -> Iterator[Row]:
        """Rows with time < t."""
        while (row := self.peek()) is not None and int(row["time"]) < t:
            yield self.pop()

    def at(self, t: int) -> list[Row]:
        out = []
        while (row := self.peek()) is not None and int(row["time"]) == t:
            out.append(self.pop())
        return out


class _Walk:
    """One gateway's chain, walked block by block with its record points and lookup entries."""

    def __init__(
        self,
        store: Store,
        report: Report,
        chain: GatewayChain,
        keys: KeyRing | None,
        start_us: int | None,
        end_us: int | None,
        young_us: int,
    ) -> None:
        self.store, self.report, self.chain = store, report, chain
        self.gw = chain.gateway
        self.keys = keys if chain.registered else None  # an unknown gateway's signatures cannot be checked
        self.start_us, self.end_us, self.young_us = start_us, end_us, young_us
        self.prev: Block | None = None  # the previous readable block
        self.prev_last_seq: int | None = None  # the last seq the chain reached so far
        self.prev_end_us: int | None = None  # the time of the previous block's last record
        self.checkpoints: dict[int, list[Checkpoint]] = {}  # head_seq -> checkpoints naming it
        self.head_seqs: list[int] = []  # sorted
        self.after_last_seq = 0  # the last seq of the first block after the range
        self.records = _Peek(queries.record_rows(store, self.gw, start_us, end_us))
        self.lookups = _Peek(queries.lookup_rows(store, self.gw, start_us, end_us))

    def add(self, kind: str, seq: int | None, detail: str) -> None:
        self.report.add(Finding(self.gw, kind, seq, detail))

    # -- the walk ------------------------------------------------------------------------------------
    def run(self) -> None:
        self.load_checkpoints()
        if self.start_us is not None:
            before = queries.block_before(self.store, self.gw, self.start_us)
            if before is not None:
                self.block(before, context=True)
        for row in queries.block_rows(self.store, self.gw, self.start_us, self.end_us):
            self.block(row)
        for row in self.records.before(1 << 62):
            self.orphan_record(row)
        for row in self.lookups.before(1 << 62):
            self.orphan_lookup(row)
        if self.end_us is not None:
            after = queries.block_from(self.store, self.gw, self.end_us)
            if after is not None:
                self.link_out(after)
        self.check_heads()

    def block(self, row: Row, *, context: bool = False) -> None:
        """One block point; ``context``: the block just before the range (its links are not reported)."""
        t = int(row["time"])
        for r in self.records.before(t):
            self.orphan_record(r)
        for r in self.lookups.before(t):
            self.orphan_lookup(r)
        block = queries.read_block(row)
        if isinstance(block, Unreadable):
            self.unreadable(row, block, t)
            return
        n = len(block.records)
        if not context:
            checked = check_block(block, row, self.keys)
            for kind, detail in checked.problems:
                self.add(kind, block.first_seq, f"block {block.hash[:16]}… at {block.recorded_at}: {detail}")
            if checked.verified:
                self.chain.signatures_verified += 1
            self.link(block, t)
            self.summarise(block)
            self.heads(block)
        else:
            self.prev_last_seq = block.last_seq
        self.prev, self.prev_end_us = block, t + n - 1
        for i in range(n):
            if self.end_us is not None and t + i >= self.end_us:
                break
            if self.start_us is not None and t + i < self.start_us:
                continue  # the block just before the range: its points before the range are not read
            self.record_point(block, i, self.records.at(t + i))
        if not context:
            self.lookup_points(block, t, self.lookups.at(t))

    def unreadable(self, row: Row, u: Unreadable, t: int) -> None:
        first, last = row.get("first_seq"), row.get("last_seq")
        seq = first if type(first) is int else None
        self.add(ALTERED, seq, f"{u.reason} (block point at {format_utc_us(t)})")
        n = last - first + 1 if type(first) is int and type(last) is int and last >= first else 1
        for i in range(min(n, 1_000_000)):
            self.records.at(t + i)  # their block cannot be read: their columns cannot be compared
        self.lookups.at(t)
        # the chain cannot be followed through this block: the next link is not judged
        self.prev = None
        if type(last) is int:
            self.prev_last_seq = max(self.prev_last_seq or 0, last)
        self.prev_end_us = t + n - 1

    def link(self, block: Block, t: int) -> None:
        """Does ``block`` continue the chain?"""
        young = t >= self.young_us
        # nothing stored before (even before a time range): the chain must start at 1
        expected = 1 if self.prev_last_seq is None else self.prev_last_seq + 1
        if block.first_seq > expected:
            kind = IN_FLIGHT if young else GAP
            where = (
                "before it" if self.prev is None else f"after block {self.prev.hash[:16]}… ({self.prev.recorded_at})"
            )
            self.add(
                kind,
                expected,
                f"{_records(expected, block.first_seq - 1)} missing {where}; next block at {block.recorded_at}",
            )
        elif block.first_seq < expected:
            self.add(
                DUPLICATE,
                block.first_seq,
                f"block {block.hash[:16]}… at {block.recorded_at} claims seq {block.first_seq}..{block.last_seq}, "
                f"but the chain already reached {expected - 1}",
            )
        elif self.prev is not None and block.prev_hash != self.prev.hash:
            self.add(
                BROKEN,
                block.first_seq,
                f"prev_hash {block.prev_hash[:16]}… is not the hash of the block before ({self.prev.hash[:16]}…)",
            )
        elif self.prev is None and block.first_seq == 1 and block.prev_hash != "0" * 64:
            self.add(BROKEN, 1, "the first block's prev_hash is not 64 zeros")
        if self.prev_end_us is not None and t <= self.prev_end_us:
            self.add(
                BROKEN,
                block.first_seq,
                f"block at {block.recorded_at} does not start after the previous block's last record",
            )
        self.prev_last_seq = max(self.prev_last_seq or 0, block.last_seq)

    def link_out(self, row: Row) -> None:
        """The first block after the range must continue the last one in it."""
        block = queries.read_block(row)
        if isinstance(block, Unreadable) or self.prev_last_seq is None:
            return
        if block.first_seq > self.prev_last_seq + 1:
            kind = IN_FLIGHT if int(row["time"]) >= self.young_us else GAP
            self.add(
                kind,
                self.prev_last_seq + 1,
                f"{_records(self.prev_last_seq + 1, block.first_seq - 1)} missing before the block at "
                f"{block.recorded_at} (after the range)",
            )
        elif block.first_seq == self.prev_last_seq + 1 and self.prev is not None and block.prev_hash != self.prev.hash:
            self.add(BROKEN, block.first_seq, "the first block after the range does not link to the last one in it")
        self.after_last_seq = block.last_seq

    def summarise(self, block: Block) -> None:
        c = self.chain
        c.blocks += 1
        c.records += len(block.records)
        c.first_seq = block.first_seq if c.first_seq is None else min(c.first_seq, block.first_seq)
        c.last_seq = block.last_seq if c.last_seq is None else max(c.last_seq, block.last_seq)
        c.last_hash = block.hash
        c.first_at = c.first_at or block.recorded_at
        c.last_at = block.recorded_at
        c.stations[block.station] = c.stations.get(block.station, 0) + len(block.records)
        for entry in block.records:
            kind = str(entry.get("kind"))
            c.kinds[kind] = c.kinds.get(kind, 0) + 1

    # -- record points and lookup entries --------------------------------------------------------------
    def record_point(self, block: Block, i: int, rows: list[Row]) -> None:
        seq = block.first_seq + i
        try:
            name, tags, fields, at = record_columns(block, i)
        except ValueError as exc:  # a block whose record has no line-protocol form was never written whole
            self.add(ALTERED, seq, f"the record cannot have a point ({exc})")
            return
        match = [r for r in rows if r.get("measurement") == name]
        if not match:
            self.add(ALTERED, seq, f"record {block.records[i].get('id')}: its {name} point is missing (deleted)")
        for r in match[:1]:
            bad = mismatches(tags, fields, at, r, columns=RECORD_FIELDS)
            if bad:
                cols = ", ".join(f"{c} stored {_short(r.get(c))}" for c in bad)
                self.add(
                    ALTERED,
                    seq,
                    f"record {block.records[i].get('id')}: columns differ from the record in its block: {cols}",
                )
        for r in [r for r in rows if r not in match[:1]]:
            self.add(
                ORPHAN,
                seq,
                f"a second point at the record's time ({r.get('measurement')}, seq {r.get('seq')}) that no block holds",
            )

    def lookup_points(self, block: Block, t: int, rows: list[Row]) -> None:
        column = lookup_field(self.gw, block.station)
        stored: dict[str, object] = {str(r.get("bucket")): r.get(column) for r in rows if r.get(column) is not None}
        for b, values in lookup_entries(block).items():
            if b not in stored:
                self.add(
                    ALTERED,
                    block.first_seq,
                    f"block at {block.recorded_at}: lookup entry {b} is missing "
                    f"(a trace by {b.split(':')[0]} {values[0]!r} would not find it)",
                )
            elif decode_lookup(stored.pop(b)) != values:
                self.add(
                    ALTERED,
                    block.first_seq,
                    f"block at {block.recorded_at}: lookup entry {b} differs from the block's values",
                )
        for b in stored:
            self.add(
                ORPHAN, block.first_seq, f"lookup entry {b} at {block.recorded_at} names values the block does not hold"
            )

    def orphan_record(self, row: Row) -> None:
        seq = row.get("seq")
        self.add(
            ORPHAN,
            seq if type(seq) is int else None,
            f"{row.get('measurement')} point at {format_utc_us(int(row['time']))} that no block holds",
        )

    def orphan_lookup(self, row: Row) -> None:
        self.add(
            ORPHAN,
            None,
            f"lookup entry {row.get('bucket')} at {format_utc_us(int(row['time']))} names a block that is not stored",
        )

    # -- checkpoints ------------------------------------------------------------------------------------
    def load_checkpoints(self) -> None:
        for row in queries.checkpoint_rows(self.store, self.gw, self.start_us, self.end_us):
            cp = queries.read_checkpoint(row)
            if isinstance(cp, Unreadable):
                self.add(ALTERED, None, f"checkpoint at {row.get('time')} µs: {cp.reason}")
                continue
            self.chain.checkpoints += 1
            if cp.gateway != self.gw or cp.at_us != int(row["time"]):
                self.add(
                    ALTERED,
                    cp.head_seq,
                    f"checkpoint point at {format_utc_us(int(row['time']))} holds gateway {cp.gateway}'s "
                    f"checkpoint of {cp.at}",
                )
                continue
            if row.get("head_seq") != cp.head_seq or row.get("head_hash") != cp.head_hash:
                self.add(ALTERED, cp.head_seq, f"checkpoint of {cp.at}: its columns differ from its payload")
            if self.keys is not None:
                try:
                    self.keys.verify(self.gw, cp.key_id, cp.digest, cp.signature)
                except SignatureInvalid as exc:
                    self.add(FORGED, cp.head_seq, f"checkpoint of {cp.at}: {exc}")
                    continue
            self.checkpoints.setdefault(cp.head_seq, []).append(cp)
        self.head_seqs = sorted(self.checkpoints)
        if self.checkpoints:
            self.chain.newest_checkpoint_seq = self.head_seqs[-1]

    def heads(self, block: Block) -> None:
        """Checkpoints that name this block's last seq, or a seq inside it."""
        i = bisect.bisect_left(self.head_seqs, block.first_seq)
        while i < len(self.head_seqs) and self.head_seqs[i] <= block.last_seq:
            seq = self.head_seqs[i]
            i += 1
            for cp in self.checkpoints[seq]:
                if seq != block.last_seq:
                    self.add(
                        REHASHED,
                        seq,
                        f"checkpoint of {cp.at} names seq {seq} as a block's end, but the stored block runs "
                        f"{block.first_seq}..{block.last_seq}",
                    )
                elif cp.head_hash != block.hash:
                    self.add(
                        REHASHED,
                        seq,
                        f"checkpoint of {cp.at} says block {cp.head_hash[:16]}…; the stored block is "
                        f"{block.hash[:16]}… (rewritten and hashed again)",
                    )

    def check_heads(self) -> None:
        if not self.checkpoints or self.chain.blocks == 0:
            return  # no blocks at all: MISSING says it
        reached = max(self.prev_last_seq or 0, self.after_last_seq)
        beyond = [cp for seq, cps in self.checkpoints.items() if seq > reached for cp in cps]
        if beyond:
            newest = max(beyond, key=lambda cp: (cp.head_seq, cp.at))
            kind = IN_FLIGHT if newest.at_us >= self.young_us else TRUNCATED
            self.add(
                kind,
                reached + 1,
                f"the stored chain ends at seq {reached or '-'}, but the checkpoint of {newest.at} says it "
                f"reached {newest.head_seq} ({_records(reached + 1, newest.head_seq)} not stored)",
            )


def _records(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def verify(
    store: Store,
    flt: TraceFilter | None = None,
    *,
    keys: KeyRing | None = None,
    only: list[str] | None = None,
    stations: list[str] | None = None,
    grace: float = DEFAULT_GRACE_S,
    now: float | None = None,
) -> Report:
    """Verify every gateway's chain (or ``only`` those, or those serving ``stations``).

    ``keys`` is the register (a key directory): without it signatures, unknown and missing
    gateways cannot be judged, and the report says so. ``grace`` seconds before ``now``
    (default: the clock) records may still be in flight. A chain is always verified whole
    within the time range: completeness cannot be judged from one station's records.
    """
    flt = flt or TraceFilter()
    start_us, end_us = flt.start_us(), flt.end_us()
    now_us = int((time.time() if now is None else now) * 1_000_000)
    young_us = now_us - int(grace * 1_000_000)
    report = Report(signatures_checked=keys is not None)
    report.scope = {
        "store": store.description,
        "from": flt.start,
        "to": flt.end,
        "gateways": only or "all",
        "stations": stations or "all",
        "register": keys.source if keys is not None else None,
        "grace_seconds": grace,
    }
    in_store = queries.gateways_in_store(store)
    registered = set(keys.gateways) if keys is not None else set()
    names = in_store | registered
    if only:
        for gw in sorted(set(only) - names):  # asked about, and nothing anywhere: say so, never "intact"
            report.add(Finding(gw, MISSING, None, "nothing is stored for this gateway and it is not in the register"))
        names &= set(only)
    if stations:
        serving = queries.gateways_of_stations(store, stations)
        if keys is not None:
            serving |= {g for g, e in keys.gateways.items() if e.stations and e.stations & set(stations)}
        names &= serving
    ranged = start_us is not None or end_us is not None
    for gw in sorted(names):
        entry = keys.get(gw) if keys is not None else None
        chain = GatewayChain(
            gw, registered=None if keys is None else entry is not None, retired=bool(entry and entry.retired)
        )
        report.chains.append(chain)
        _Walk(store, report, chain, keys, start_us, end_us, young_us).run()
        if keys is not None and entry is None and (chain.blocks or chain.checkpoints or gw in in_store):
            report.add(
                Finding(
                    gw, UNKNOWN, None, f"{chain.blocks} block(s) of a gateway that is not in the register {keys.source}"
                )
            )
        if entry is not None and chain.blocks == 0 and (chain.checkpoints or (not entry.retired and not ranged)):
            why = (
                f"{chain.checkpoints} checkpoint(s) say it recorded"
                if chain.checkpoints
                else "it is registered and not retired"
            )
            report.add(Finding(gw, MISSING, None, f"no blocks are stored, but {why}"))
    if not only and not stations:
        for row in queries.points_without_gateway(store, start_us, end_us):
            report.add(
                Finding(
                    NO_GATEWAY,
                    ORPHAN,
                    row.get("seq") if type(row.get("seq")) is int else None,
                    f"{row.get('measurement')} point at {format_utc_us(int(row['time']))} has no gateway tag",
                )
            )
    return report


__all__ = [
    "ALTERED",
    "BROKEN",
    "DEFAULT_GRACE_S",
    "DUPLICATE",
    "FORGED",
    "GAP",
    "IN_FLIGHT",
    "KINDS",
    "MAX_DETAILS",
    "MISSING",
    "NO_GATEWAY",
    "ORPHAN",
    "REHASHED",
    "TRUNCATED",
    "UNKNOWN",
    "Finding",
    "GatewayChain",
    "Report",
    "format_report",
    "verify",
]
