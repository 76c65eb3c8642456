"""The gateway's journal: every record is durable here before anything is published.

SQLite in WAL mode, one file per gateway. A record gets its sequence number, its
timestamp and its place in the hash chain inside the same transaction that stores it,
so the chain on disk never has a gap or a fork, whatever kills the process. A record
is marked delivered only when the broker acknowledged the message that carried it;
everything not marked is replayed, in order, after a restart.

Delivered is not the end of it: a broker can acknowledge a message and still lose it
(Mosquitto 2.0.11 forgets shared subscriptions when it restarts, and a broker killed
hard loses what it acknowledged since its last snapshot). So a record is *settled* only
when a recorder confirms that InfluxDB holds it; a delivered record that stays
unconfirmed while later records are confirmed is sent again (see
:meth:`Journal.requeue_unconfirmed`). Only settled records are ever pruned.

The journal streams: the publisher asks for the next few hundred undelivered records
after a cursor, never for "all of them", so a backlog of millions does not grow memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.errors import JournalError, JournalFull
from collector.inspection.records import GENESIS_HASH, Record, format_utc_us, seal

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    station TEXT NOT NULL,
    kind TEXT NOT NULL,
    recorded_us INTEGER NOT NULL,
    hash TEXT NOT NULL,
    payload TEXT NOT NULL,
    delivered_us INTEGER,
    stored_us INTEGER
);
CREATE INDEX IF NOT EXISTS records_pending ON records(seq) WHERE delivered_us IS NULL;
CREATE INDEX IF NOT EXISTS records_unsettled ON records(seq) WHERE stored_us IS NULL;
CREATE INDEX IF NOT EXISTS records_station ON records(station, seq);
CREATE INDEX IF NOT EXISTS records_id ON records(id);
"""
JOURNAL_FORMAT = "1"


@dataclass(frozen=True, slots=True)
class Sealed:
    """A record as committed: what the publisher sends and the alerting needs."""

    seq: int
    station: str
    payload: str
    record: Record


def _now_us() -> int:
    return time.time_ns() // 1000


class Journal:
    """Append-only record store with delivery marks. Thread-safe (one connection, one lock)."""

    def __init__(
        self,
        path: str | Path,
        gateway_id: str,
        *,
        signing_key: bytes | None = None,
        synchronous: str = "FULL",
        clock_us: Callable[[], int] = _now_us,
    ) -> None:
        self.path = Path(path)
        self.gateway_id = gateway_id
        self._key = signing_key
        self._clock_us = clock_us
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives power loss, not only a killed process (gateways lose power)
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None
        self._check_owner()
        self._seq, self._hash, self._last_us = self._head()
        # the highest settled sequence number, kept here so the resend check needs no table scan
        row = self._db.execute("SELECT max(seq) FROM records WHERE stored_us IS NOT NULL").fetchone()
        self._stored_top: int = int(row[0]) if row and row[0] is not None else 0

    # -- opening -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _check_owner(self) -> None:
        owner = self._meta("gateway")
        if owner is None:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('gateway', ?)", (self.gateway_id,))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (JOURNAL_FORMAT,))
            self._db.execute("COMMIT")
        elif owner != self.gateway_id:
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

    # -- writing -------------------------------------------------------------------------
    def append(
        self, drafts: Sequence[Record], state: dict[str, str] | None = None, *, synced: bool = True
    ) -> list[Sealed]:
        """Seal and store ``drafts`` in one transaction, in order; return them as committed.

        ``state`` (key -> text) is saved in the same transaction: a station's position in
        its plan never disagrees with the records on disk.
        """
        if not drafts and not state:
            return []
        with self._lock:
            seq, prev, last_us = self._seq, self._hash, self._last_us
            rows: list[tuple[Any, ...]] = []
            sealed: list[Sealed] = []
            for draft in drafts:
                seq += 1
                # strictly increasing per gateway: (gateway, time) identifies the point in InfluxDB
                now = self._clock_us()
                last_us = now if now > last_us else last_us + 1
                draft["gateway"] = self.gateway_id
                draft["seq"] = seq
                draft["recorded_at"] = format_utc_us(last_us)
                draft["clock_synced"] = synced
                payload = seal(draft, prev, self._key)
                prev = draft["hash"]
                station = str(draft["station"])
                rows.append((seq, draft["id"], station, draft["kind"], last_us, prev, payload))
                sealed.append(Sealed(seq, station, payload, draft))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO records (seq, id, station, kind, recorded_us, hash, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if rows:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (f"{seq}:{prev}:{last_us}",))
                for key, value in (state or {}).items():
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"state:{key}", value))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                for draft in drafts:  # the drafts were not committed: take the seal back off
                    for k in ("gateway", "seq", "recorded_at", "clock_synced", "prev_hash", "hash", "signature"):
                        draft.pop(k, None)
                if _is_full(exc):
                    raise JournalFull(f"journal {self.path}: disk full, {len(drafts)} record(s) not stored") from None
                raise JournalError(f"journal {self.path}: {exc}") from None
            self._seq, self._hash, self._last_us = seq, prev, last_us
            return sealed

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            self._db.execute("ROLLBACK")

    def mark_delivered(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Mark records delivered, by inclusive (first_seq, last_seq) ranges, in one transaction."""
        ranges = list(ranges)
        if not ranges:
            return
        now = _now_us()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "UPDATE records SET delivered_us = ? WHERE seq BETWEEN ? AND ? AND delivered_us IS NULL",
                    [(now, a, b) for a, b in ranges],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                # not fatal: the records stay pending and are sent again (the recorder is idempotent)
                raise JournalError(f"journal {self.path}: cannot mark delivered: {exc}") from None

    def mark_stored(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Mark records settled (a recorder confirmed InfluxDB holds them); returns how many changed."""
        ranges = list(ranges)
        if not ranges:
            return 0
        now = _now_us()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                changed = 0
                for a, b in ranges:
                    cur = self._db.execute(
                        "UPDATE records SET stored_us = ?, delivered_us = coalesce(delivered_us, ?) "
                        "WHERE seq BETWEEN ? AND ? AND stored_us IS NULL",
                        (now, now, a, b),
                    )
                    changed += cur.rowcount
                self._db.execute("COMMIT")
                self._stored_top = max(self._stored_top, *(b for _, b in ranges))
                return changed
            except sqlite3.Error as exc:
                self._rollback()
                raise JournalError(f"journal {self.path}: cannot mark stored: {exc}") from None

    def requeue_unconfirmed(self, delivered_before_us: int) -> tuple[int, int]:
        """Send again what the broker acknowledged but no recorder confirmed; returns (resent, probes).

        A hole below the highest confirmed sequence number, older than the grace period,
        means the broker lost those messages: they are all sent again. Records beyond the
        highest confirmed one may simply be queued in the broker for recorders that are
        away, so only the newest of them is sent again, as a probe: once a recorder
        confirms it, everything below it is a hole and follows. That finds a lost tail (an
        idle station after a broker restart) at the cost of one message per grace period.
        """
        with self._lock:
            top = self._stored_top
            cur = self._db.execute(
                "UPDATE records SET delivered_us = NULL WHERE stored_us IS NULL AND delivered_us IS NOT NULL "
                "AND delivered_us < ? AND seq < ?",
                (delivered_before_us, top),
            )
            if cur.rowcount:
                return cur.rowcount, 0
            # the newest unconfirmed record is the probe; while it waits to go out again
            # (undelivered), or went out only lately, there is nothing more to do
            row = self._db.execute(
                "SELECT seq, delivered_us FROM records WHERE stored_us IS NULL AND seq > ? ORDER BY seq DESC LIMIT 1",
                (top,),
            ).fetchone()
            if not row or row[1] is None or row[1] >= delivered_before_us:
                return 0, 0
            self._db.execute("UPDATE records SET delivered_us = NULL WHERE seq = ?", (row[0],))
            return 0, 1

    def unconfirmed(self) -> int:
        """Records delivered to the broker but not yet confirmed in InfluxDB."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM records WHERE stored_us IS NULL AND delivered_us IS NOT NULL"
            ).fetchone()
            return int(row[0])

    def prune(self, older_than_us: int) -> int:
        """Delete settled records older than the cutoff (the chain head lives in meta)."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM records WHERE stored_us IS NOT NULL AND recorded_us < ? AND seq < ?",
                (older_than_us, self._seq),
            )
            return cur.rowcount

    # -- reading -------------------------------------------------------------------------
    def pending(self, after_seq: int, limit: int) -> list[tuple[int, str, str]]:
        """Up to ``limit`` undelivered (seq, station, payload) after ``after_seq``, in order."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, station, payload FROM records WHERE delivered_us IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()

    def backlog(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM records WHERE delivered_us IS NULL").fetchone()[0])

    def state(self, key: str) -> str | None:
        with self._lock:
            return self._meta(f"state:{key}")

    def record(self, seq: int) -> Record | None:
        with self._lock:
            row = self._db.execute("SELECT payload FROM records WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def find(self, record_id: str) -> Record | None:
        """A record still in the journal, by its id."""
        with self._lock:
            row = self._db.execute("SELECT payload FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def iter_payloads(self, after_seq: int = 0, chunk: int = 1000) -> Iterable[tuple[int, str, str | None]]:
        """Every stored (seq, payload, delivered?) in order, streamed in chunks."""
        cursor = after_seq
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, payload, delivered_us FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                    (cursor, chunk),
                ).fetchall()
            if not rows:
                return
            for seq, payload, delivered in rows:
                yield seq, payload, None if delivered is None else str(delivered)
            cursor = rows[-1][0]

    @property
    def head(self) -> tuple[int, str]:
        """(last sequence number, last hash)."""
        return self._seq, self._hash

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()
