"""Every InfluxQL statement that reads evidence back, built and quoted in one place.

Trace, verify, the part report, the gauge impact, the dashboard and the demo ask the store
through these functions; none of them writes InfluxQL of its own. The schema they read is
:mod:`collector.store.lineprotocol`'s (``docs/evidence-format.md``).

Quoting: identifiers go in double quotes, string literals in single quotes, each with its
backslashes and quotes escaped (:func:`quote_ident`, :func:`quote_literal`); numbers and
times are formatted from integers. Nothing from a user, a record or a row is ever pasted
into a statement otherwise.

Two things InfluxQL (1.x) does not do, and what is done instead:

- ``time = a OR time = b`` answers nothing at all (no error). Blocks at several exact times
  are read with one statement per block, many statements in one request (:func:`blocks_at`).
- A query over several measurements answers them one after another, not in time order.
  Records of a gateway in time order are merged from one stream per measurement
  (:func:`record_rows`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from collector.chain import blocks as chain_blocks
from collector.chain import checkpoints as chain_checkpoints
from collector.chain.blocks import Block
from collector.chain.checkpoints import Checkpoint
from collector.store.base import Row, Store, quote_ident, quote_literal
from collector.store.lineprotocol import (
    BLOCK_MEASUREMENT,
    CHECKPOINT_MEASUREMENT,
    LOOKUP_MEASUREMENT,
    PAYLOAD_FIELD,
    RECORD_MEASUREMENTS,
    bucket,
    decode_lookup,
    lookup_field,
    parse_lookup_field,
)

__all__ = [
    "BlockRef",
    "Unreadable",
    "all_lookup_rows",
    "any_of",
    "block_before",
    "block_from",
    "block_rows",
    "blocks_at",
    "checkpoint_rows",
    "count_records",
    "eq",
    "gateways_in_store",
    "gateways_of_stations",
    "lookup",
    "lookup_fields",
    "lookup_rows",
    "points_without_gateway",
    "quote_ident",
    "quote_literal",
    "read_block",
    "read_checkpoint",
    "record_refs",
    "record_rows",
    "select",
    "time_range",
]

#: conditions per OR group and statements per request: well below any server's limits
OR_BATCH = 100
STATEMENTS_PER_REQUEST = 200


# --- building statements ---------------------------------------------------------------------------


def eq(column: str, value: str) -> str:
    """``"column" = 'value'`` (a tag or a string field)."""
    return f"{quote_ident(column)} = {quote_literal(value)}"


def time_range(start_us: int | None = None, end_us: int | None = None) -> list[str]:
    """``time >= start`` and ``time < end`` (µs, start inclusive, end exclusive)."""
    out = []
    if start_us is not None:
        out.append(f"time >= {int(start_us)}u")
    if end_us is not None:
        out.append(f"time < {int(end_us)}u")
    return out


def any_of(column: str, values: Iterable[str], batch: int = OR_BATCH) -> Iterator[str]:
    """``("column" = 'a' OR "column" = 'b' ...)`` in groups of at most ``batch`` values."""
    ordered = sorted(set(values))
    for i in range(0, len(ordered), batch):
        yield "(" + " OR ".join(eq(column, v) for v in ordered[i : i + batch]) + ")"


def select(
    columns: Sequence[str] | str,
    measurements: Sequence[str] | str,
    where: Sequence[str] = (),
    *,
    limit: int | None = None,
    descending: bool = False,
) -> str:
    """One SELECT statement; ``columns`` ``"*"`` or names (quoted here), conditions ANDed."""
    if columns == "*":
        cols = "*"
    else:
        cols = ", ".join(quote_ident(c) for c in ([columns] if isinstance(columns, str) else columns))
    names = [measurements] if isinstance(measurements, str) else list(measurements)
    q = f"SELECT {cols} FROM {', '.join(quote_ident(m) for m in names)}"
    if where:
        q += " WHERE " + " AND ".join(where)
    if descending:
        q += " ORDER BY time DESC"
    if limit is not None:
        q += f" LIMIT {int(limit)}"
    return q


def _statements(store: Store, statements: Sequence[str]) -> Iterator[Row]:
    """Run many statements, several per request (rows in statement order)."""
    for i in range(0, len(statements), STATEMENTS_PER_REQUEST):
        yield from store.iter_query("; ".join(statements[i : i + STATEMENTS_PER_REQUEST]))


# --- decoding what comes back: in one place ----------------------------------------------------------


@dataclass(frozen=True, order=True)
class BlockRef:
    """Where a block point is: its gateway and its time (µs); the station, when known, narrows the read."""

    gateway: str
    time: int
    station: str = field(default="", compare=False)


@dataclass(frozen=True)
class Unreadable:
    """A stored point whose payload is not a readable block or checkpoint, and why."""

    where: str
    reason: str
    ref: BlockRef | None = None  # the point's gateway and time, when it has both

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def _where(row: Row) -> str:
    gateway = row.get("gateway")
    return f"{row.get('measurement')} point of gateway {gateway or '(none)'} at {row.get('time')} µs"


def _ref(row: Row) -> BlockRef | None:
    gateway, at = row.get("gateway"), row.get("time")
    if isinstance(gateway, str) and gateway and isinstance(at, int):
        return BlockRef(gateway, at)
    return None


def read_block(row: Row, *, strict: bool = True) -> Block | Unreadable:
    """The block in a ``block`` row's payload, or why it is not one.

    ``strict`` (the default) also requires the payload to be the canonical encoding of its
    content: a block is evidence only as the exact bytes its gateway hashed.
    """
    payload = row.get(PAYLOAD_FIELD)
    if not isinstance(payload, str):
        return Unreadable(_where(row), "no payload", _ref(row))
    try:
        return chain_blocks.read(payload, strict=strict)
    except chain_blocks.BlockError as exc:
        return Unreadable(_where(row), exc.reason, _ref(row))


def read_checkpoint(row: Row) -> Checkpoint | Unreadable:
    payload = row.get(PAYLOAD_FIELD)
    if not isinstance(payload, str):
        return Unreadable(_where(row), "no payload")
    try:
        return chain_checkpoints.read(payload)
    except chain_checkpoints.CheckpointError as exc:
        return Unreadable(_where(row), exc.reason)


# --- the index and the blocks --------------------------------------------------------------------------


def lookup(store: Store, key: str, values: Iterable[str]) -> dict[str, set[BlockRef]]:
    """value -> the blocks whose ``lookup`` entries name it (``key``: serial, lot, work_order, ref).

    The index is not evidence: a caller reads the blocks and takes only what they hold.
    An entry that is not a JSON list of strings is skipped here (verify reports it).
    """
    wanted = {v for v in values if v}
    by_bucket: dict[str, set[str]] = {}
    for v in wanted:
        by_bucket.setdefault(bucket(key, v), set()).add(v)
    found: dict[str, set[BlockRef]] = {v: set() for v in wanted}
    # most entries name none of the values: a plain value's JSON form is the value in quotes,
    # so those are passed over without decoding
    quoted = {b: [f'"{v}"' for v in names] if all(map(_plain, names)) else None for b, names in by_bucket.items()}
    columns: dict[str, tuple[str, str] | None] = {}
    statements = [select("*", LOOKUP_MEASUREMENT, [cond]) for cond in any_of("bucket", by_bucket)]
    for row in _statements(store, statements):
        b = str(row.get("bucket"))
        names, forms = by_bucket.get(b, set()), quoted.get(b)
        for column, text in row.items():
            if not isinstance(text, str):
                continue
            if column not in columns:
                columns[column] = parse_lookup_field(column)
            where = columns[column]
            if where is None or (forms is not None and not any(f in text for f in forms)):
                continue
            for v in decode_lookup(text) or ():
                if v in names:
                    found[v].add(BlockRef(where[0], int(row["time"]), where[1]))
    return found


def _plain(value: str) -> bool:
    """Whether ``value`` is written into JSON as it is (no quote, backslash or control character)."""
    return '"' not in value and "\\" not in value and value.isprintable()


#: refs of one station further apart than this are read by separate statements
CLUSTER_GAP_US = 3_600_000_000
#: blocks a range read may bring that were not asked for, between two that were
MAX_UNWANTED_RUN = 64


def blocks_at(store: Store, refs: Iterable[BlockRef]) -> Iterator[Row]:
    """The ``block`` rows at these places.

    Reading one block by its exact time costs InfluxDB about as much as reading the hundreds
    around it (the payload column is decompressed a TSM block at a time), so the blocks of
    one gateway's station that lie close together are read with one range statement each.
    Which blocks a range holds is listed first from a small column (``first_seq``): a range
    is split where more than :data:`MAX_UNWANTED_RUN` blocks nobody asked for lie between
    two that were, so a read never brings many more blocks than it was asked for. Rows
    come back for the asked places only.
    """
    wanted = set(refs)
    if not wanted:
        return
    clusters = _clusters(wanted)
    listing = [
        select(
            ["first_seq", "gateway", "station"],
            BLOCK_MEASUREMENT,
            [*_series(c[0]), f"time >= {c[0].time}u", f"time <= {c[-1].time}u"],
        )
        for c in clusters
        if len(c) > 1
    ]
    stored: dict[str, list[tuple[int, str]]] = {}  # gateway -> (time, station) of its blocks in the clusters
    for row in _statements(store, listing):
        stored.setdefault(str(row.get("gateway")), []).append((int(row["time"]), str(row.get("station") or "")))
    statements = []
    for c in clusters:
        asked = {r.time for r in c}
        station = c[0].station
        lo, hi = c[0].time, c[-1].time
        near = {t for t, s in stored.get(c[0].gateway, ()) if lo <= t <= hi and (not station or s == station)}
        for first, last in _windows(sorted(near | asked), asked):
            where = [f"time = {first}u"] if first == last else [f"time >= {first}u", f"time <= {last}u"]
            statements.append(select("*", BLOCK_MEASUREMENT, [*_series(c[0]), *where]))
    times_wanted = {(r.gateway, r.time) for r in wanted}
    for row in _statements(store, statements):
        if (str(row.get("gateway")), int(row["time"])) in times_wanted:
            yield row


def _series(ref: BlockRef) -> list[str]:
    return [eq("gateway", ref.gateway)] + ([eq("station", ref.station)] if ref.station else [])


def _clusters(refs: set[BlockRef]) -> list[list[BlockRef]]:
    """Refs grouped by gateway and station, split where they lie more than an hour apart."""
    by_series: dict[tuple[str, str], list[BlockRef]] = {}
    for r in refs:
        by_series.setdefault((r.gateway, r.station), []).append(r)
    out: list[list[BlockRef]] = []
    for series in by_series.values():
        series.sort()
        current = [series[0]]
        for r in series[1:]:
            if r.time - current[-1].time > CLUSTER_GAP_US:
                out.append(current)
                current = []
            current.append(r)
        out.append(current)
    return out


def _windows(times: list[int], asked: set[int]) -> list[tuple[int, int]]:
    """(first, last) time ranges covering the asked times, none with a long run of others inside."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    last_asked = 0
    unwanted = 0
    for t in times:
        if t in asked:
            if start is None:
                start = t
            elif unwanted > MAX_UNWANTED_RUN:
                out.append((start, last_asked))
                start = t
            last_asked, unwanted = t, 0
        elif start is not None:
            unwanted += 1
    if start is not None:
        out.append((start, last_asked))
    return out


def block_rows(
    store: Store,
    gateway: str,
    start_us: int | None = None,
    end_us: int | None = None,
    columns: Sequence[str] | str = "*",
) -> Iterator[Row]:
    """A gateway's block points in time order (which is chain order)."""
    return store.iter_query(select(columns, BLOCK_MEASUREMENT, [eq("gateway", gateway), *time_range(start_us, end_us)]))


def record_rows(store: Store, gateway: str, start_us: int | None = None, end_us: int | None = None) -> Iterator[Row]:
    """Every record point of one gateway, all measurements merged, in time order."""
    where = [eq("gateway", gateway), *time_range(start_us, end_us)]
    streams = [store.iter_query(select("*", m, where)) for m in RECORD_MEASUREMENTS]
    return heapq.merge(*streams, key=lambda row: int(row["time"]))


def points_without_gateway(store: Store, start_us: int | None = None, end_us: int | None = None) -> Iterator[Row]:
    """Record and block points that carry no ``gateway`` tag (InfluxQL: ``tag = ''``)."""
    for m in (*RECORD_MEASUREMENTS, BLOCK_MEASUREMENT):
        yield from store.iter_query(select("*", m, [eq("gateway", ""), *time_range(start_us, end_us)]))


def record_refs(
    store: Store,
    conditions: Sequence[str],
    measurements: Sequence[str] = RECORD_MEASUREMENTS,
    start_us: int | None = None,
    end_us: int | None = None,
) -> Iterator[tuple[BlockRef | None, Row]]:
    """(the block a record point names, the point) for the record points that match.

    ``conditions`` are built with :func:`eq` (tags and fields alike). A point without a
    gateway or a ``block_time`` names no block (None): it is not evidence.
    """
    where = [*conditions, *time_range(start_us, end_us)]
    for m in measurements:
        for row in store.iter_query(select(["block_time", "gateway", "station", "seq"], m, where)):
            gateway, block_time = row.get("gateway"), row.get("block_time")
            if isinstance(gateway, str) and gateway and type(block_time) is int:
                yield BlockRef(gateway, block_time, str(row.get("station") or "")), row
            else:
                yield None, row


def all_lookup_rows(store: Store, start_us: int | None = None, end_us: int | None = None) -> Iterator[Row]:
    return store.iter_query(select("*", LOOKUP_MEASUREMENT, time_range(start_us, end_us)))


def checkpoint_rows(
    store: Store, gateway: str | None = None, start_us: int | None = None, end_us: int | None = None
) -> Iterator[Row]:
    where = ([eq("gateway", gateway)] if gateway is not None else []) + time_range(start_us, end_us)
    return store.iter_query(select("*", CHECKPOINT_MEASUREMENT, where))


def gateways_in_store(store: Store) -> set[str]:
    """Every gateway id the store names: in block, record and checkpoint tags, and lookup fields."""
    found: set[str] = set()
    for m in (BLOCK_MEASUREMENT, *RECORD_MEASUREMENTS, CHECKPOINT_MEASUREMENT):
        for row in store.iter_query(f"SHOW TAG VALUES FROM {quote_ident(m)} WITH KEY = {quote_ident('gateway')}"):
            if row.get("value"):
                found.add(str(row["value"]))
    found |= {gateway for gateway, _ in lookup_fields(store)}
    return found


def lookup_fields(store: Store) -> list[tuple[str, str]]:
    """(gateway, station) of every lookup field the store has."""
    out = []
    for row in store.iter_query(f"SHOW FIELD KEYS FROM {quote_ident(LOOKUP_MEASUREMENT)}"):
        where = parse_lookup_field(str(row.get("fieldKey") or ""))
        if where is not None:
            out.append(where)
    return out


def count_records(store: Store, start_us: int | None = None, end_us: int | None = None) -> int:
    """How many records the store holds (record points, all kinds)."""
    where = time_range(start_us, end_us)
    q = f"SELECT count({quote_ident('seq')}) FROM " + ", ".join(quote_ident(m) for m in RECORD_MEASUREMENTS)
    if where:
        q += " WHERE " + " AND ".join(where)
    return sum(int(r.get("count") or 0) for r in store.iter_query(q))


def lookup_rows(store: Store, gateway: str, start_us: int | None = None, end_us: int | None = None) -> Iterator[Row]:
    """One gateway's lookup entries (its ``gw:<gateway>/<station>`` fields), in time order."""
    columns = [lookup_field(g, s) for g, s in lookup_fields(store) if g == gateway]
    if not columns:
        return iter(())
    return store.iter_query(select([*columns, "bucket"], LOOKUP_MEASUREMENT, time_range(start_us, end_us)))


def block_before(store: Store, gateway: str, before_us: int) -> Row | None:
    """The gateway's last block point before ``before_us``."""
    q = select("*", BLOCK_MEASUREMENT, [eq("gateway", gateway), f"time < {int(before_us)}u"], limit=1, descending=True)
    return next(iter(store.query(q)), None)


def block_from(store: Store, gateway: str, from_us: int) -> Row | None:
    """The gateway's first block point at or after ``from_us``."""
    return next(
        iter(
            store.query(select("*", BLOCK_MEASUREMENT, [eq("gateway", gateway), f"time >= {int(from_us)}u"], limit=1))
        ),
        None,
    )


def gateways_of_stations(store: Store, stations: Iterable[str]) -> set[str]:
    """The gateways whose blocks came from any of ``stations``."""
    found: set[str] = set()
    for cond in any_of("station", stations):
        q = f"SHOW TAG VALUES FROM {quote_ident(BLOCK_MEASUREMENT)} WITH KEY = {quote_ident('gateway')} WHERE {cond}"
        found |= {str(r["value"]) for r in store.iter_query(q) if r.get("value")}
    return found
