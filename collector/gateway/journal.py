"""The gateway's journal: every record is durable here, sealed in a signed block, before anything is published.

SQLite in WAL mode, one file per gateway (format 2). One journal transaction seals the
records it stores into blocks (``docs/evidence-format.md``): one block per station, in
``seq`` order, at most ``max_block_records`` records and ``max_block_bytes`` bytes each,
hashed, chained to the gateway's previous block and signed, so the chain on disk never has
a gap or a fork, whatever kills the process.

Tables
    ``blocks``: one narrow row per block (seq range, station, time, hash, compressed size)
    with its delivery state; ``payloads``: the block's line, zlib-compressed (level 1: about
    90 bytes per value for a 200-value poll cycle, a tenth of the text); ``refusals``: what
    recorders said about blocks they refused; ``finds``: the blocks holding nonconformances
    (a disposition looks them up by id); ``meta``: the chain's head, station states, the
    format. Delivery marks change only the narrow rows: marking a block delivered or
    stored never rewrites its payload.

States of a block
    ``new`` (to be sent) -> ``sent`` (the broker acknowledged the message: PUBACK) ->
    ``stored`` (a recorder confirmed InfluxDB holds it) or ``refused`` (a recorder will
    never store it; the whole block is in its dead-letter file). ``damaged``: the gateway's
    own check before publishing found that the row no longer matches its hash, signature or
    chain link (the file was edited or corrupted): it is never published, and alarmed.
    A broker can acknowledge a message and still lose it (Mosquitto 2.0.11 forgets shared
    subscriptions when it restarts; a broker killed hard loses what it acknowledged since
    its last snapshot), so ``sent`` is not the end: see :meth:`Journal.requeue_unconfirmed`.

Durability and the SD card
    Appends commit with ``synchronous=FULL``: one fsync of the write-ahead log per journal
    transaction, i.e. per batch of readings (the gateway journals whatever queued while the
    previous commit was being made, so the fsync rate falls as the load rises). A block is
    published only after that fsync: a published block can never be lost by a power cut
    and then re-issued with other content under the same numbers, which recorders would
    rightly refuse. Delivery and storage marks commit with ``synchronous=NORMAL``: no fsync
    of their own, they become durable with the next append's; a mark lost to a power cut
    only makes the gateway send a block again, which the recorder confirms without storing
    it twice. Pages freed by pruning are reused, so the file stops growing at its budget.

Budget
    ``budget_bytes`` caps the database (SQLite's ``max_page_count``). Settled blocks leave
    first: from ``alarm_ratio`` of the budget upwards the oldest settled blocks are pruned
    whatever their age, and when that is not enough (the recorders have not confirmed what
    fills it) :attr:`Journal.budget_alarm` is raised. At the budget an append fails with
    :class:`JournalFull`: the readings are lost, and the gateway counts and alarms them.

The journal streams: the publisher asks for the next blocks after a cursor, never for "all
of them", so a backlog of millions of records does not grow memory.

Why one module of this size: every SQL statement on the journal file lives here (status queries
included), around one transaction discipline; no other module touches its tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from collector.chain import blocks
from collector.chain.blocks import GENESIS_HASH, Block, BlockError
from collector.chain.canonical import TemplateEncoder
from collector.chain.keys import Ed25519Signer, Signer
from collector.errors import JournalError, JournalFull
from collector.inspection.records import MEASUREMENT_CONSTANT, MEASUREMENT_VARIABLE, Record, format_utc_us

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "2"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    station TEXT NOT NULL,
    recorded_us INTEGER NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    marked_us INTEGER,
    sends INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS blocks_new ON blocks(first_seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS blocks_sent ON blocks(first_seq) WHERE state = 1;
CREATE INDEX IF NOT EXISTS blocks_time ON blocks(recorded_us);
CREATE TABLE IF NOT EXISTS payloads (first_seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS refusals (
    first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, at_us INTEGER NOT NULL,
    recorder TEXT, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS finds (id TEXT PRIMARY KEY, first_seq INTEGER NOT NULL) WITHOUT ROWID;
"""

NEW, SENT, STORED, REFUSED, DAMAGED = 0, 1, 2, 3, 4
STATE_NAMES = {NEW: "new", SENT: "sent", STORED: "stored", REFUSED: "refused", DAMAGED: "damaged"}
#: final states: nothing more happens to these blocks, they may be pruned
_SETTLED = (STORED, REFUSED, DAMAGED)
#: record kinds indexed by id (a disposition names its nonconformance); any other record is
#: found from the time in its UUIDv7 id (see :meth:`Journal.find`), which costs no row per record
_FINDABLE = frozenset({"nonconformance"})
#: how far from the time in a record's id :meth:`Journal.find` looks (µs, widening), and how
#: many blocks it opens at most: a record is journaled within seconds of its id's time
_FIND_WINDOWS_US = (5_000_000, 300_000_000, 6 * 3_600_000_000)
_FIND_MAX_BLOCKS = 20_000
#: keys of a station's draft that the block carries for all its records
_DRAFT_ONLY = frozenset({"site", "line", "station"})


def _entry(draft: Record) -> Record:
    """The draft as the block holds it: without the keys the block carries for all records."""
    entry = draft.copy()
    for key in _DRAFT_ONLY:  # every draft has them: the journal groups drafts by them
        del entry[key]
    return entry


DEFAULT_BUDGET = 8 * 1024**3  # a third of a 32 GB SD card, leaving room for the system and logs
DEFAULT_MAX_BLOCK_RECORDS = 1000
DEFAULT_MAX_BLOCK_BYTES = 256 * 1024

_HEADER = re.compile(
    r'\{"clock_synced":(?:true|false),"first_seq":(\d+),"gateway":"(?:[^"\\]|\\.)*",'
    r'"key_id":(?:null|"([^"\\]*)"),"line":"(?:[^"\\]|\\.)*","prev_hash":"([0-9a-f]{64})",'
)
_SIGNATURE_TAIL = re.compile(r'^,"signature":"([0-9a-f]+)"\}$')
_string = json.JSONEncoder(ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Sealed:
    """A block as committed, with its first record's time (µs) for the alerting."""

    block: Block
    recorded_us: int

    def recorded_at(self, index: int) -> str:
        """The materialised ``recorded_at`` of record ``index`` of the block."""
        return format_utc_us(self.recorded_us + index)


@dataclass(frozen=True, slots=True)
class Pending:
    """A block to publish, checked against its row (see :meth:`Journal.pending`)."""

    first_seq: int
    last_seq: int
    station: str
    text: str

    @property
    def records(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class Damaged:
    """A row that failed the gateway's own check: never published."""

    first_seq: int
    last_seq: int
    reason: str


@dataclass
class _Counts:
    """Records and bytes per state, kept in step with every change (no table scans)."""

    records: dict[int, int] = field(default_factory=lambda: dict.fromkeys(STATE_NAMES, 0))


def _now_us() -> int:
    return time.time_ns() // 1000


class Journal:
    """Blocks of records with their delivery state. Thread-safe (one connection, one lock)."""

    def __init__(
        self,
        path: str | Path,
        gateway_id: str,
        *,
        signer: Signer | None = None,
        budget_bytes: int = DEFAULT_BUDGET,
        alarm_ratio: float = 0.8,
        max_block_records: int = DEFAULT_MAX_BLOCK_RECORDS,
        max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
        synchronous: str = "FULL",
        clock_us: Callable[[], int] = _now_us,
    ) -> None:
        self.path = Path(path)
        self.gateway_id = gateway_id
        self.signer = signer
        self.budget_bytes = budget_bytes
        self.alarm_ratio = alarm_ratio
        self.max_block_records = max_block_records
        self.max_block_bytes = max_block_bytes
        self._encoder = TemplateEncoder(MEASUREMENT_CONSTANT, MEASUREMENT_VARIABLE)
        self._clock_us = clock_us
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._db = self._open()
        self._check_format()
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        # SQLite itself refuses to grow past the budget (SQLITE_FULL -> JournalFull)
        self._db.execute(f"PRAGMA max_page_count = {max(16, budget_bytes // self._page_size)}")
        self._seq, self._hash, self._last_us = self._head()
        self._counts = self._count()
        row = self._db.execute(f"SELECT max(last_seq) FROM blocks WHERE state IN {_SETTLED[:2]}").fetchone()
        # the highest answered sequence number, so the resend check needs no table scan
        self._answered_top: int = int(row[0]) if row and row[0] is not None else 0
        self.used_bytes = 0
        #: transactions committed: appends (each an fsync with synchronous=FULL) and marks (none)
        self.commits = {"append": 0, "marks": 0}
        #: the journal holds more than ``alarm_ratio`` of its budget in blocks not yet settled
        self.budget_alarm = False
        self._measure()
        self.start_damaged: list[Damaged] = self._check_head()

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives power loss, not only a killed process (gateways lose power)
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            # the write-ahead log is truncated back to this size after a checkpoint
            db.execute("PRAGMA journal_size_limit = 16777216")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None
        except OSError as exc:  # e.g. the journal's directory is a regular file
            raise JournalError(f"cannot open journal {self.path}: {exc.strerror or exc}") from None
        return db

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _check_format(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        fmt = self._meta("format")
        if "records" in tables or (fmt is not None and fmt != JOURNAL_FORMAT):
            self._db.close()
            raise JournalError(
                f"journal {self.path} is in format {fmt or '1'} (an earlier version, one hash per record); "
                f"this version writes format {JOURNAL_FORMAT} (signed blocks) and does not convert it. "
                "Stop the gateway, move the file away (keep it: it holds that chain's records) and start "
                "again: the gateway opens a new journal, whose chain starts at seq 1"
            )
        owner = self._meta("gateway")
        if owner is None:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('gateway', ?)", (self.gateway_id,))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (JOURNAL_FORMAT,))
            self._db.execute("COMMIT")
        elif owner != self.gateway_id:
            self._db.close()
            raise JournalError(
                f"journal {self.path} belongs to gateway {owner!r}, not {self.gateway_id!r}: "
                "one journal per gateway, so that each chain stays whole"
            )

    def _head(self) -> tuple[int, str, int]:
        head = self._meta("head")
        if head is None:
            return 0, GENESIS_HASH, 0
        seq, digest, last_us = head.split(":")
        return int(seq), digest, int(last_us)

    def _count(self) -> _Counts:
        counts = _Counts()
        for state, records in self._db.execute(
            "SELECT state, coalesce(sum(last_seq - first_seq + 1), 0) FROM blocks GROUP BY state"
        ):
            counts.records[int(state)] = int(records)
        return counts

    def _check_head(self) -> list[Damaged]:
        """On start: the newest block must be whole (full parse, hash, signature, link)."""
        row = self._db.execute(
            "SELECT first_seq, last_seq, station, hash, state FROM blocks ORDER BY first_seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return []
        first, last, station, digest, state = row
        problem = None
        if (last, digest) != (self._seq, self._hash):
            problem = f"the newest block ({first}..{last}) is not the chain's head ({self._seq})"
        else:
            text = self._text(first)
            try:
                block = blocks.read(text or "", strict=True)
            except BlockError as exc:
                problem = exc.reason
            else:
                problem = self._mismatch(block.text, first, station, digest, self._prev_hash(first))
        if problem is None or state in _SETTLED:
            return []
        with self._lock:
            self._set_state([(first, last)], DAMAGED, (NEW, SENT))
        return [Damaged(first, last, problem)]

    # -- writing -------------------------------------------------------------------------
    def append(
        self, drafts: Sequence[Record], state: dict[str, str] | None = None, *, synced: bool = True
    ) -> list[Sealed]:
        """Seal ``drafts`` into blocks and store them in one transaction; return the blocks.

        Records are grouped per station (in the order of their first draft) and sealed in
        that order, at most ``max_block_records`` and ``max_block_bytes`` per block; ``seq``
        numbers follow each other without a gap. ``state`` (key -> text) is saved in the
        same transaction: a station's position in its plan never disagrees with the records
        on disk. Raises :class:`JournalFull` (disk or budget full) or :class:`JournalError`;
        then nothing of it is stored.
        """
        if not drafts and not state:
            return []
        groups: dict[tuple[str, str, str], list[Record]] = {}
        for d in drafts:
            groups.setdefault((str(d["site"]), str(d["line"]), str(d["station"])), []).append(d)
        with self._lock:
            try:
                sealed, rows = self._seal(groups, synced)
            except (ValueError, TypeError) as exc:  # a draft with a value JSON cannot carry exactly
                raise JournalError(f"journal {self.path}: cannot seal the records: {exc}") from None
            try:
                self._commit_append(sealed, rows, state)
            except JournalFull:
                if not self._make_room():
                    raise
                self._commit_append(sealed, rows, state)  # pruning settled blocks made room
            last = sealed[-1] if sealed else None
            if last is not None:
                self._seq, self._hash = last.block.last_seq, last.block.hash
                self._last_us = last.recorded_us + len(last.block.records) - 1
                self._counts.records[NEW] += sum(len(s.block.records) for s in sealed)
            self._measure()
            return sealed

    def _seal(
        self, groups: dict[tuple[str, str, str], list[Record]], synced: bool
    ) -> tuple[list[Sealed], list[tuple[Any, ...]]]:
        seq, prev, last_us = self._seq, self._hash, self._last_us
        sealed: list[Sealed] = []
        rows: list[tuple[Any, ...]] = []
        for (site, line, station), group in groups.items():
            entries = [_entry(d) for d in group]
            # the canonical encoder without its checks (the drafts are ours), by template for
            # measurements: byte for byte the same text, proved per template
            encode = self._encoder.encode
            texts = [encode(e) for e in entries]
            start = 0
            while start < len(entries):
                end, size = start, 0
                while end < len(entries) and end - start < self.max_block_records:
                    if end > start and size + len(texts[end]) + 1 > self.max_block_bytes:
                        break
                    size += len(texts[end]) + 1
                    end += 1
                now = self._clock_us()
                # strictly increasing per gateway: (gateway, time) identifies a record in InfluxDB
                at_us = now if now > last_us else last_us + 1
                block = blocks.seal(
                    entries[start:end],
                    gateway=self.gateway_id,
                    site=site,
                    line=line,
                    station=station,
                    first_seq=seq + 1,
                    recorded_at=format_utc_us(at_us),
                    clock_synced=synced,
                    prev_hash=prev,
                    signer=self.signer,
                    encoded=texts[start:end],
                )
                body = zlib.compress(block.text.encode("utf-8"), 1)
                rows.append((block.first_seq, block.last_seq, station, at_us, block.hash, len(body), body))
                sealed.append(Sealed(block, at_us))
                seq, prev, last_us = block.last_seq, block.hash, at_us + end - start - 1
                start = end
        return sealed, rows

    def _commit_append(self, sealed: list[Sealed], rows: list[tuple[Any, ...]], state: dict[str, str] | None) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO blocks (first_seq, last_seq, station, recorded_us, hash, size) VALUES (?, ?, ?, ?, ?, ?)",
                [r[:6] for r in rows],
            )
            self._db.executemany("INSERT INTO payloads VALUES (?, ?)", [(r[0], r[6]) for r in rows])
            finds = [
                (rec["id"], s.block.first_seq)
                for s in sealed
                for rec in s.block.records
                if rec.get("kind") in _FINDABLE
            ]
            if finds:
                self._db.executemany("INSERT OR REPLACE INTO finds VALUES (?, ?)", finds)
            if sealed:
                b, at = sealed[-1].block, sealed[-1].recorded_us + len(sealed[-1].block.records) - 1
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (f"{b.last_seq}:{b.hash}:{at}",))
            for key, value in (state or {}).items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"state:{key}", value))
            self._db.execute("COMMIT")
            self.commits["append"] += 1
        except sqlite3.Error as exc:
            self._rollback()
            n = sum(len(s.block.records) for s in sealed)
            if _is_full(exc):
                raise JournalFull(
                    f"journal {self.path}: disk or journal budget full, {n} record(s) not stored "
                    f"({self.used_bytes / 1e6:.0f} of {self.budget_bytes / 1e6:.0f} MB in use)"
                ) from None
            raise JournalError(f"journal {self.path}: {exc}") from None

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            self._db.execute("ROLLBACK")

    # -- delivery marks (no fsync of their own: see the module's docs) ----------------------
    def _set_state(
        self, ranges: Iterable[tuple[int, int]], state: int, from_states: tuple[int, ...], *, count_send: bool = False
    ) -> list[tuple[int, int, int]]:
        """Move the blocks inside ``ranges`` from ``from_states`` to ``state``; returns (first, last, old state)."""
        now = _now_us()
        sends = ", sends = sends + 1" if count_send else ""
        placeholders = ",".join("?" * len(from_states))
        changed: list[tuple[int, int, int]] = []
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if self._synchronous != 'OFF' else 'OFF'}")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for a, b in ranges:
                rows = self._db.execute(
                    f"SELECT first_seq, last_seq, state FROM blocks WHERE first_seq BETWEEN ? AND ? "
                    f"AND last_seq <= ? AND state IN ({placeholders})",
                    (a, b, b, *from_states),
                ).fetchall()
                if rows:
                    self._db.execute(
                        f"UPDATE blocks SET state = ?, marked_us = ?{sends} WHERE first_seq BETWEEN ? AND ? "
                        f"AND last_seq <= ? AND state IN ({placeholders})",
                        (state, now, a, b, b, *from_states),
                    )
                    changed += rows
            self._db.execute("COMMIT")
            self.commits["marks"] += 1
        except sqlite3.Error as exc:
            self._rollback()
            # not fatal: the blocks keep their state and are sent again (the recorder is idempotent)
            raise JournalError(f"journal {self.path}: cannot mark blocks {STATE_NAMES[state]}: {exc}") from None
        finally:
            self._db.execute(f"PRAGMA synchronous={self._synchronous}")
        for first, last, old in changed:
            n = last - first + 1
            self._counts.records[int(old)] -= n
            self._counts.records[state] += n
        return [(int(a), int(b), int(c)) for a, b, c in changed]

    def mark_delivered(self, ranges: Iterable[tuple[int, int]]) -> int:
        """The broker acknowledged the blocks inside these (first, last) ranges; returns records changed."""
        ranges = list(ranges)
        if not ranges:
            return 0
        with self._lock:
            return sum(b - a + 1 for a, b, _ in self._set_state(ranges, SENT, (NEW,), count_send=True))

    def mark_stored(self, ranges: Iterable[tuple[int, int]]) -> int:
        """A recorder confirmed InfluxDB holds these blocks; returns how many records changed."""
        ranges = list(ranges)
        if not ranges:
            return 0
        with self._lock:
            changed = self._set_state(ranges, STORED, (NEW, SENT, REFUSED))
            self._answered_top = max(self._answered_top, *(b for _, b in ranges))
            return sum(b - a + 1 for a, b, _ in changed)

    def mark_refused(
        self, refused: Iterable[tuple[int, int, str]], recorder: str | None = None
    ) -> list[tuple[int, int]]:
        """A recorder will never store these blocks (the reason is kept); returns the ranges that changed."""
        refused = list(refused)
        if not refused:
            return []
        now = _now_us()
        with self._lock:
            changed = self._set_state([(a, b) for a, b, _ in refused], REFUSED, (NEW, SENT))
            self._answered_top = max(self._answered_top, *(b for _, b, _ in refused))
            reasons = {(a, b): reason for a, b, reason in refused}
            rows = []
            for first, last, _ in changed:
                reason = next((r for (a, b), r in reasons.items() if a <= first and last <= b), "refused")
                rows.append((first, last, now, recorder, reason))
            with contextlib.suppress(sqlite3.Error):  # the reason is for people; the state is what counts
                self._db.executemany("INSERT OR REPLACE INTO refusals VALUES (?, ?, ?, ?, ?)", rows)
            return [(a, b) for a, b, _ in changed]

    def requeue_unconfirmed(
        self, delivered_before_us: int, max_sends: int = 0
    ) -> tuple[int, int, list[tuple[int, int]]]:
        """Send again what the broker acknowledged but no recorder answered; returns (resent, probes, given up).

        A hole below the highest answered sequence number, older than the grace period,
        means the broker lost those blocks: they are all sent again. Blocks beyond the
        highest answered one may simply be queued in the broker for recorders that are
        away, so only the newest of them is sent again, as a probe: once a recorder
        answers it, everything below it is a hole and follows. That finds a lost tail (an
        idle station after a broker restart) at the cost of one message per grace period.
        A hole sent ``max_sends`` times (0: no limit) without an answer is not sent again
        (a recorder that refuses it without saying so, e.g. because its key directory lacks
        this gateway's key): its ranges are returned, to be alarmed.
        """
        with self._lock:
            top = self._answered_top
            rows = self._db.execute(
                "SELECT first_seq, last_seq, sends FROM blocks WHERE state = 1 AND marked_us < ? AND first_seq < ?",
                (delivered_before_us, top),
            ).fetchall()
            again = [(a, b) for a, b, n in rows if not max_sends or n < max_sends]
            given_up = [(a, b) for a, b, n in rows if max_sends and n == max_sends]
            if given_up:  # counted past the limit: alarmed once
                self._db.executemany(
                    "UPDATE blocks SET sends = sends + 1 WHERE first_seq = ?", [(a,) for a, _ in given_up]
                )
            if again:
                return sum(b - a + 1 for a, b, _ in self._set_state(again, NEW, (SENT,))), 0, given_up
            # the newest unanswered block is the probe; while it waits to go out again (new),
            # or went out only lately, there is nothing more to do
            row = self._db.execute(
                "SELECT first_seq, last_seq, state, marked_us FROM blocks WHERE state IN (0, 1) AND first_seq > ? "
                "ORDER BY first_seq DESC LIMIT 1",
                (top,),
            ).fetchone()
            if not row or row[2] == NEW or row[3] is None or row[3] >= delivered_before_us:
                return 0, 0, given_up
            self._set_state([(row[0], row[1])], NEW, (SENT,))
            return 0, 1, given_up

    def mark_damaged(self, damaged: Iterable[Damaged]) -> None:
        ranges = [(d.first_seq, d.last_seq) for d in damaged]
        if ranges:
            with self._lock:
                self._set_state(ranges, DAMAGED, (NEW, SENT))

    # -- pruning and the budget -------------------------------------------------------------
    def prune(self, older_than_us: int) -> int:
        """Delete settled blocks recorded before the cutoff; returns records removed."""
        with self._lock:
            return self._prune(older_than_us, None)

    def _prune(self, older_than_us: int | None, max_blocks: int | None) -> int:
        """Settled blocks from the oldest up to the first unsettled one (the chain in the journal
        stays contiguous), never the head; by age, or the oldest ``max_blocks`` whatever their age."""
        (stop,) = self._db.execute("SELECT min(first_seq) FROM blocks WHERE state IN (0, 1)").fetchone()
        stop = min(stop if stop is not None else self._seq, self._seq)
        query = "SELECT first_seq, last_seq, hash, state FROM blocks WHERE first_seq < ? AND last_seq < ?"
        args: list[Any] = [stop, self._seq]
        if older_than_us is not None:
            query += " AND recorded_us < ?"
            args.append(older_than_us)
        query += " ORDER BY first_seq LIMIT ?"
        args.append(max_blocks if max_blocks is not None else 10_000)
        removed = 0
        while True:
            rows = self._db.execute(query, args).fetchall()
            if not rows:
                return removed
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cut = rows[-1][0]
                self._db.execute("DELETE FROM payloads WHERE first_seq <= ?", (cut,))
                self._db.execute("DELETE FROM finds WHERE first_seq <= ?", (cut,))
                self._db.execute("DELETE FROM refusals WHERE first_seq <= ?", (cut,))
                self._db.execute("DELETE FROM blocks WHERE first_seq <= ?", (cut,))
                last = rows[-1]
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('base', ?)", (f"{last[1]}:{last[2]}",))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise JournalError(f"journal {self.path}: cannot prune: {exc}") from None
            for first, last_seq, _, state in rows:
                self._counts.records[int(state)] -= last_seq - first + 1
            removed += sum(int(b) - int(a) + 1 for a, b, _, _ in rows)
            if max_blocks is not None:
                return removed

    def _measure(self) -> None:
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        self.used_bytes = (pages - free) * self._page_size
        if self.used_bytes < self.alarm_ratio * self.budget_bytes:
            self.budget_alarm = False
            return
        # settled blocks leave first, whatever their age, down to well below the alarm
        target = (self.alarm_ratio - 0.1) * self.budget_bytes
        while self.used_bytes > target and self._prune(None, 500):
            pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
            free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            self.used_bytes = (pages - free) * self._page_size
        self.budget_alarm = self.used_bytes >= self.alarm_ratio * self.budget_bytes

    def _make_room(self) -> bool:
        """At the budget: prune the oldest settled blocks; True if any went."""
        return self._prune(None, 500) > 0

    # -- reading -------------------------------------------------------------------------
    def _text(self, first_seq: int) -> str | None:
        row = self._db.execute("SELECT body FROM payloads WHERE first_seq = ?", (first_seq,)).fetchone()
        return None if row is None else _inflate(row[0])

    def _prev_hash(self, first_seq: int) -> str:
        row = self._db.execute(
            "SELECT hash FROM blocks WHERE first_seq < ? ORDER BY first_seq DESC LIMIT 1", (first_seq,)
        ).fetchone()
        if row is not None:
            return str(row[0])
        base = self._meta("base")
        return GENESIS_HASH if base is None else base.split(":")[1]

    def pending(self, after_seq: int, limit: int, max_bytes: int = 256 * 1024) -> tuple[list[Pending], list[Damaged]]:
        """Up to ``limit`` blocks to send after ``after_seq``, in order, each checked first.

        At most ``max_bytes`` of compressed payload are read (at least one block): a backlog
        of big blocks does not fill memory, one of small blocks still comes in long runs. The
        check (hash of the text against the row's hash, the signature, the link to the
        previous block's hash, seq and station against the row) costs one SHA-256 and one
        signature check per block. A block that fails it is marked damaged and returned
        apart: it is never published.
        """
        with self._lock:
            heads = self._db.execute(
                "SELECT first_seq, size FROM blocks WHERE state = 0 AND first_seq > ? ORDER BY first_seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            total, last = 0, None
            for first, size in heads:
                if last is not None and total + size > max_bytes:
                    break
                total += size
                last = first
            rows = []
            if last is not None:
                rows = self._db.execute(
                    "SELECT b.first_seq, b.last_seq, b.station, b.hash, p.body, "
                    "(SELECT hash FROM blocks q WHERE q.first_seq < b.first_seq ORDER BY q.first_seq DESC LIMIT 1) "
                    "FROM blocks b LEFT JOIN payloads p ON p.first_seq = b.first_seq "
                    "WHERE b.state = 0 AND b.first_seq > ? AND b.first_seq <= ? ORDER BY b.first_seq",
                    (after_seq, last),
                ).fetchall()
            base = self._meta("base")
        good: list[Pending] = []
        damaged: list[Damaged] = []
        for first, last, station, digest, body, prev in rows:
            expected_prev = prev if prev is not None else (GENESIS_HASH if base is None else base.split(":")[1])
            try:
                text = _inflate(body) if body is not None else None
            except JournalError as exc:
                damaged.append(Damaged(first, last, str(exc)))
                continue
            problem = "payload missing" if text is None else self._mismatch(text, first, station, digest, expected_prev)
            if problem is None and text is not None:
                good.append(Pending(first, last, station, text))
            else:
                damaged.append(Damaged(first, last, problem or "damaged"))
        if damaged:
            self.mark_damaged(damaged)
        return good, damaged

    def _mismatch(self, text: str, first_seq: int, station: str, digest: str, prev_hash: str) -> str | None:
        """Why the block text does not match its row and chain (None: it does)."""
        i = text.rfind(',"hash":"')
        if i < 0:
            return "not a sealed block"
        canonical = text[:i] + "}"
        claimed = text[i + 9 : i + 73]
        actual = hashlib.sha256(canonical.encode("utf-8")).digest()
        if actual.hex() != claimed:
            return "the block's content does not match its hash (edited after sealing)"
        if claimed != digest:
            return "the block's hash is not the one journaled for it"
        m = _HEADER.match(canonical)
        if m is None:
            return "the block's header is not readable"
        if int(m.group(1)) != first_seq:
            return f"the block says first_seq {m.group(1)}, the journal {first_seq}"
        if m.group(3) != prev_hash:
            return "the block's prev_hash is not the previous block's hash (chain broken)"
        if not canonical.endswith(f'"station":{_string(station)}}}'):
            return "the block's station is not the one journaled for it"
        rest = text[i + 73 + 1 :]  # after the hash's closing quote
        key_id = m.group(2)
        if rest == "}":
            return None if key_id is None else "the block names a key but carries no signature"
        sig = _SIGNATURE_TAIL.match(rest)
        if sig is None or key_id is None:
            return "the block's signature is malformed"
        return None if self._signature_ok(key_id, actual, sig.group(1)) else "the block's signature does not match"

    def _signature_ok(self, key_id: str, digest: bytes, signature: str) -> bool:
        signer = self.signer
        if signer is None or key_id != signer.key_id:
            return True  # signed with an earlier key: the recorder and verify check it against the register
        if isinstance(signer, Ed25519Signer):
            try:
                signer.public_key.verify(bytes.fromhex(signature), digest)
            except Exception:  # cryptography's InvalidSignature, or hex that is not
                return False
            return True
        return hmac.compare_digest(signer.sign(digest), signature)

    def backlog(self) -> int:
        """Records not yet acknowledged by the broker."""
        return self._counts.records[NEW]

    def unconfirmed(self) -> int:
        """Records acknowledged by the broker but not yet answered by a recorder."""
        return self._counts.records[SENT]

    def refused(self) -> int:
        """Records in blocks a recorder refused (never stored; alarmed)."""
        return self._counts.records[REFUSED]

    def damaged(self) -> int:
        """Records in blocks that failed the gateway's own check (never published; alarmed)."""
        return self._counts.records[DAMAGED]

    def counts(self) -> dict[str, int]:
        """Records per state."""
        return {STATE_NAMES[s]: n for s, n in self._counts.records.items()}

    def state(self, key: str) -> str | None:
        with self._lock:
            return self._meta(f"state:{key}")

    def block(self, first_seq: int) -> Block | None:
        """The block starting at ``first_seq`` (parsed, hash checked)."""
        with self._lock:
            text = self._text(first_seq)
        return None if text is None else blocks.read(text)

    def record(self, seq: int) -> Record | None:
        """A record still in the journal, materialised (with the block's keys), by its ``seq``."""
        with self._lock:
            row = self._db.execute(
                "SELECT first_seq FROM blocks WHERE first_seq <= ? AND last_seq >= ?", (seq, seq)
            ).fetchone()
        if row is None:
            return None
        block = self.block(int(row[0]))
        return None if block is None else block.materialise()[seq - block.first_seq]

    def find(self, record_id: str) -> Record | None:
        """A record still in the journal, materialised, by its id.

        Nonconformances are indexed by id. Other records are looked for in the blocks
        journaled around the time their UUIDv7 id carries (records are journaled within
        seconds of it), in windows that widen up to hours, opening at most
        ``_FIND_MAX_BLOCKS`` blocks: a person's command on a record is rare; an index row per
        record would cost every record its bytes and time.
        """
        with self._lock:
            row = self._db.execute("SELECT first_seq FROM finds WHERE id = ?", (record_id,)).fetchone()
        if row is not None:
            block = self.block(int(row[0]))
            return None if block is None else next((r for r in block.materialise() if r["id"] == record_id), None)
        at_us = _uuid7_us(record_id)
        if at_us is None:
            return None
        opened: set[int] = set()
        for half in _FIND_WINDOWS_US:
            with self._lock:
                rows = self._db.execute(
                    "SELECT first_seq FROM blocks WHERE recorded_us BETWEEN ? AND ? "
                    "ORDER BY abs(recorded_us - ?) LIMIT ?",
                    (at_us - half, at_us + half, at_us, _FIND_MAX_BLOCKS),
                ).fetchall()
            for (first,) in rows:
                if first in opened:
                    continue
                if len(opened) >= _FIND_MAX_BLOCKS:
                    return None
                opened.add(first)
                try:
                    block = self.block(int(first))
                except BlockError:  # damaged: the self-check reports it
                    continue
                if block is None:
                    continue
                for i, r in enumerate(block.records):
                    if r.get("id") == record_id:
                        return block.materialise()[i]
        return None

    def iter_blocks(self, after_seq: int = 0, chunk: int = 200) -> Iterator[tuple[Block, str]]:
        """Every block still in the journal with its state name, in order, streamed."""
        cursor = after_seq
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT b.first_seq, b.state, p.body FROM blocks b JOIN payloads p ON p.first_seq = b.first_seq "
                    "WHERE b.first_seq > ? ORDER BY b.first_seq LIMIT ?",
                    (cursor, chunk),
                ).fetchall()
            if not rows:
                return
            for _first, state, body in rows:
                yield blocks.read(_inflate(body)), STATE_NAMES[int(state)]
            cursor = rows[-1][0]

    def refusals(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest refusals recorders reported, with their reasons."""
        with self._lock:
            rows = self._db.execute(
                "SELECT first_seq, last_seq, at_us, recorder, reason FROM refusals ORDER BY first_seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(zip(("first_seq", "last_seq", "at_us", "recorder", "reason"), r, strict=True)) for r in rows]

    @property
    def head(self) -> tuple[int, str]:
        """(last sequence number, last block's hash)."""
        return self._seq, self._hash

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                # fold the write-ahead log back into the file, so a closed journal is one file
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def _inflate(body: bytes) -> str:
    try:
        return zlib.decompress(body).decode("utf-8")
    except (zlib.error, UnicodeDecodeError) as exc:
        raise JournalError(f"a journaled block does not decompress: {exc}") from None


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


# -- status, read-only (collector status, metrics) ------------------------------------------------


def open_read_only(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection that never creates files next to the journal; (conn, running).

    While the gateway has the journal open (``-wal`` and ``-shm`` exist) it reads through the
    WAL index the gateway maintains; when the gateway is not running it opens the file as
    ``immutable``, so that running ``collector status`` as root never leaves root-owned
    ``-wal``/``-shm`` files behind that the gateway's user could not open.
    """
    wal = Path(f"{path}-wal")
    shm = Path(f"{path}-shm")
    uri = "file:" + quote(str(path.resolve()))
    if not path.is_file():
        raise JournalError(f"journal {path} does not exist (has the gateway ever run with this configuration?)")
    try:
        if wal.exists() and shm.exists():
            return sqlite3.connect(f"{uri}?mode=ro", uri=True), True
        if not wal.exists() and not shm.exists():
            return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True), False
        # a -wal without its index: the gateway died; SQLite must rebuild the index to read it
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path} read-only: {exc}") from None
    _match_owner(path, (wal, shm))
    return conn, True


def _match_owner(db: Path, companions: Iterable[Path]) -> None:
    # run as root, SQLite may have created a companion file: give it the journal's owner
    if os.geteuid() != 0:
        return
    st = db.stat()
    for p in companions:
        with contextlib.suppress(OSError):
            if p.stat().st_uid != st.st_uid:
                os.chown(p, st.st_uid, st.st_gid)


def read_status(path: str | Path) -> dict[str, Any]:
    """What a journal says, read-only (the gateway may be running, stopped or dead).

    Keys: ``gateway``, ``format``, ``running``, ``last_seq``, ``last_hash``,
    ``last_recorded_us``, ``records`` and ``blocks`` (still in the journal), ``bytes`` (in
    use), ``by_state`` (records per state), ``oldest_unsent_us``, ``oldest_unsettled_us``,
    ``last_delivered_us``, ``last_confirmed_us``, ``refusals`` (the newest, with reasons),
    ``damaged`` (ranges).
    """
    path = Path(path)
    conn, running = open_read_only(path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('gateway', 'head', 'format')").fetchall())
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "records" in tables or meta.get("format", JOURNAL_FORMAT) != JOURNAL_FORMAT:
            raise JournalError(
                f"journal {path} is in format {meta.get('format', '1')} (an earlier version): "
                "this version does not read it (see the README: moving it away starts a new journal)"
            )
        seq, digest, last_us = 0, None, None
        if "head" in meta:
            s, d, u = str(meta["head"]).split(":")
            seq, digest, last_us = int(s), d, int(u)
        by_state = dict.fromkeys(STATE_NAMES.values(), 0)
        blocks_n = 0
        for state, records, n in conn.execute(
            "SELECT state, coalesce(sum(last_seq - first_seq + 1), 0), count(*) FROM blocks GROUP BY state"
        ):
            by_state[STATE_NAMES.get(int(state), str(state))] = int(records)
            blocks_n += int(n)
        (oldest_unsent,) = conn.execute("SELECT min(recorded_us) FROM blocks WHERE state = 0").fetchone()
        (oldest_unsettled,) = conn.execute("SELECT min(recorded_us) FROM blocks WHERE state IN (0, 1)").fetchone()
        (last_delivered,) = conn.execute("SELECT max(marked_us) FROM blocks WHERE state IN (1, 2)").fetchone()
        (last_confirmed,) = conn.execute("SELECT max(marked_us) FROM blocks WHERE state = 2").fetchone()
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        refusals = [
            dict(zip(("first_seq", "last_seq", "at_us", "recorder", "reason"), r, strict=True))
            for r in conn.execute(
                "SELECT first_seq, last_seq, at_us, recorder, reason FROM refusals ORDER BY first_seq DESC LIMIT 5"
            )
        ]
        damaged = [
            (int(a), int(b))
            for a, b in conn.execute(
                "SELECT first_seq, last_seq FROM blocks WHERE state = 4 ORDER BY first_seq LIMIT 5"
            )
        ]
    except (sqlite3.Error, ValueError) as exc:
        raise JournalError(f"journal {path} is not readable as a gateway journal: {exc}") from None
    finally:
        conn.close()
    return {
        "gateway": None if meta.get("gateway") is None else str(meta["gateway"]),
        "format": str(meta.get("format", JOURNAL_FORMAT)),
        "running": running,
        "last_seq": seq,
        "last_hash": digest,
        "last_recorded_us": last_us,
        "records": sum(by_state.values()),
        "blocks": blocks_n,
        "bytes": (pages - free) * page_size,
        "by_state": by_state,
        "oldest_unsent_us": oldest_unsent,
        "oldest_unsettled_us": oldest_unsettled,
        "last_delivered_us": last_delivered,
        "last_confirmed_us": last_confirmed,
        "refusals": refusals,
        "damaged": damaged,
    }


_UUID7 = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _uuid7_us(record_id: str) -> int | None:
    """The Unix time (µs) in a UUIDv7 (RFC 9562 §5.7: the first 48 bits are milliseconds)."""
    m = _UUID7.match(record_id)
    return None if m is None else int(m.group(1) + m.group(2), 16) * 1000
