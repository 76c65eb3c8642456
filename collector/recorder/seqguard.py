"""Step 5 of the recorder's checks: nothing stored is ever overwritten with something else.

A block may be written only if no stored block of its gateway holds any of its ``seq``
numbers with other content, and none of its points would land on a stored point of another
block (a record point is identified by its gateway and its time: a block that claims times
of stored records would overwrite them). The same block again (a redelivery, a resend) is
confirmed as stored and not written.

Keeping it cheap
    The guard remembers, per gateway, the stored block with the highest ``seq`` it knows of
    (its head: last seq, hash, time of its last record). A block that continues that head
    (``first_seq`` = head + 1, ``prev_hash`` = the head's hash, its time after the head's)
    is the normal case of an honest gateway and needs no query. Anything else (the first
    block after the recorder starts, a redelivery, a block whose predecessor another
    recorder stored, a resend, a fork) is checked against the store with two queries over
    small ranges, batched per gateway and per nearby blocks:

    - ``chain``, an index this recorder writes with every block: one point per block at
      time = ``first_seq`` µs (so a range of seq numbers is a time range: InfluxDB answers
      it from one series without scanning), fields ``last_seq``, ``hash``, ``block_time``;
    - ``block``, the block points themselves, over the new block's time range.

    A block holds at most :data:`MAX_BLOCK_RECORDS` records, so a stored block overlapping
    seq numbers ``a..b`` starts within ``a - MAX_BLOCK_RECORDS + 1 .. b`` (likewise in time).

Limits (said plainly)
    The head is per recorder process. With several recorders sharing a subscription, two
    *different* blocks that both continue the same stored head (a fork: a stolen key, or a
    gateway restored from an old journal copy) and reach two recorders within the same
    moment can both be written; ``collector verify`` then reports them as DUPLICATE. A
    single recorder, or the same block arriving twice, is never affected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from collector.recorder.checks import MAX_BLOCK_RECORDS, Checked
from collector.store.base import Store, quote_literal

CHAIN_MEASUREMENT = "chain"
#: blocks close enough in seq (and time) are checked with one pair of queries
_CLUSTER_SEQS = 50_000
_CLUSTER_US = 60_000_000


@dataclass(frozen=True, slots=True)
class Head:
    last_seq: int
    hash: str
    end_us: int


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored block as the store describes it."""

    first_seq: int
    last_seq: int
    hash: str
    time_us: int

    def end_us(self) -> int:
        return self.time_us + self.last_seq - self.first_seq


NEW = "new"  # write it
AGAIN = "again"  # stored already, identically: confirm, do not write


def chain_line(checked: Checked) -> str:
    """The ``chain`` index point of a block: time = first_seq µs."""
    b = checked.block
    gateway = b.gateway.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")
    return (
        f'{CHAIN_MEASUREMENT},gateway={gateway} last_seq={b.last_seq}i,hash="{b.hash}",'
        f"block_time={checked.recorded_us}i {b.first_seq}"
    )


class SeqGuard:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.heads: dict[str, Head] = {}
        self.queries = 0  # how often the store was asked (the normal path asks nothing)

    def classify(self, checked: list[Checked]) -> list[str]:
        """For each block (distinct, in any order): ``NEW``, ``AGAIN`` or the reason it is refused.

        Raises :class:`~collector.errors.StoreError` when the store cannot be asked (the
        caller retries the batch).
        """
        verdicts: list[str] = [""] * len(checked)
        by_gateway: dict[str, list[int]] = {}
        for i, c in enumerate(checked):
            by_gateway.setdefault(c.block.gateway, []).append(i)
        for gateway, indexes in by_gateway.items():
            indexes.sort(key=lambda i: checked[i].block.first_seq)
            head = self.heads.get(gateway)
            accepted: list[Checked] = []  # blocks of this batch found good so far
            unsure: list[int] = []
            for i in indexes:
                c = checked[i]
                b = c.block
                if (
                    head is not None
                    and b.first_seq == head.last_seq + 1
                    and b.prev_hash == head.hash
                    and c.recorded_us > head.end_us
                    and not unsure
                ):
                    verdicts[i] = NEW
                    accepted.append(c)
                    head = Head(b.last_seq, b.hash, c.end_us)
                else:
                    unsure.append(i)
            if unsure:
                self._query(gateway, [checked[i] for i in unsure], accepted, verdicts, unsure)
        return verdicts

    def _query(
        self, gateway: str, blocks: list[Checked], accepted: list[Checked], verdicts: list[str], where: list[int]
    ) -> None:
        stored: dict[int, Stored] = {}
        for cluster in _clusters(blocks):
            stored.update({s.first_seq: s for s in self._stored(gateway, cluster)})
        for i, c in zip(where, blocks, strict=True):
            verdicts[i] = _verdict(c, stored.values(), accepted)
            if verdicts[i] == NEW:
                accepted.append(c)
        # what the store holds of this gateway, as far as the queries saw, may move the head
        top = max(stored.values(), key=lambda s: s.last_seq, default=None)
        if top is not None:
            self._raise_head(gateway, Head(top.last_seq, top.hash, top.end_us()))

    def _stored(self, gateway: str, cluster: list[Checked]) -> list[Stored]:
        lo_seq = max(0, min(c.block.first_seq for c in cluster) - MAX_BLOCK_RECORDS + 1)
        hi_seq = max(c.block.last_seq for c in cluster)
        lo_us = min(c.recorded_us for c in cluster) - MAX_BLOCK_RECORDS + 1
        hi_us = max(c.end_us for c in cluster)
        gw = quote_literal(gateway)
        self.queries += 2
        out = [
            Stored(int(r["time"]), int(r["last_seq"]), str(r["hash"]), int(r["block_time"]))
            for r in self.store.query(
                f"SELECT last_seq, hash, block_time FROM {CHAIN_MEASUREMENT} WHERE gateway = {gw} "
                f"AND time >= {lo_seq}u AND time <= {hi_seq}u"
            )
            if r.get("last_seq") is not None
        ]
        out += [
            Stored(int(r["first_seq"]), int(r["last_seq"]), str(r["hash"]), int(r["time"]))
            for r in self.store.query(
                f"SELECT first_seq, last_seq, hash FROM block WHERE gateway = {gw} "
                f"AND time >= {lo_us}u AND time <= {hi_us}u"
            )
            if r.get("first_seq") is not None
        ]
        return out

    def stored(self, checked: Iterable[Checked]) -> None:
        """These blocks are now in the store: they may move their gateways' heads."""
        for c in checked:
            b = c.block
            self._raise_head(b.gateway, Head(b.last_seq, b.hash, c.end_us))

    def _raise_head(self, gateway: str, head: Head) -> None:
        current = self.heads.get(gateway)
        if current is None or head.last_seq > current.last_seq:
            self.heads[gateway] = head


def _clusters(blocks: list[Checked]) -> list[list[Checked]]:
    """Blocks (sorted by first_seq) in groups close enough in seq and time for one pair of queries."""
    out: list[list[Checked]] = []
    for c in blocks:
        if out:
            group = out[-1]
            first = group[0]
            if (
                c.block.last_seq - first.block.first_seq < _CLUSTER_SEQS
                and abs(c.recorded_us - first.recorded_us) < _CLUSTER_US
            ):
                group.append(c)
                continue
        out.append([c])
    return out


def _verdict(c: Checked, stored: Iterable[Stored], accepted: list[Checked]) -> str:
    b = c.block
    same = False
    for s in stored:
        seq_overlap = s.first_seq <= b.last_seq and b.first_seq <= s.last_seq
        time_overlap = s.time_us <= c.end_us and c.recorded_us <= s.end_us()
        if not (seq_overlap or time_overlap):
            continue
        if s.hash == b.hash and s.first_seq == b.first_seq and s.last_seq == b.last_seq:
            same = True
            continue
        if seq_overlap:
            return (
                f"seq {b.first_seq}..{b.last_seq} already stored as block {s.first_seq}..{s.last_seq} "
                f"with other content (hash {s.hash[:16]}…)"
            )
        return (
            f"its records' times overlap stored block {s.first_seq}..{s.last_seq} (hash {s.hash[:16]}…): "
            "it would overwrite them"
        )
    for a in accepted:
        o = a.block
        if o.hash == b.hash:
            continue
        if o.first_seq <= b.last_seq and b.first_seq <= o.last_seq:
            return f"seq {b.first_seq}..{b.last_seq} given twice in one batch, with other content"
        if a.recorded_us <= c.end_us and c.recorded_us <= a.end_us:
            return "its records' times overlap another block of the same batch"
    return AGAIN if same else NEW
