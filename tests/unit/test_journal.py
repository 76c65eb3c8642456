"""The gateway's journal: gap-free sequence, hash chain, delivery marks, pruning, full disk, kill -9."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.errors import JournalError, JournalFull
from collector.gateway.journal import Journal
from collector.inspection.records import GENESIS_HASH, parse_utc_us, recompute_hash, sign, uuid7

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_000_000_000_000  # a fixed epoch in microseconds
SEAL_FIELDS = ("gateway", "seq", "recorded_at", "clock_synced", "prev_hash", "hash", "signature")


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def draft(n: int = 0, station: str = "st-1") -> dict[str, Any]:
    return {"schema_version": 1, "kind": "measurement", "id": uuid7(), "station": station, "value": f"12.{n:03d}"}


def drafts(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [draft(start + i) for i in range(count)]


def wall_us() -> int:
    return time.time_ns() // 1000


def chain(journal: Journal) -> list[dict[str, Any]]:
    """Every stored record, checked: contiguous seq from the first, hashes recompute and link."""
    out: list[dict[str, Any]] = []
    prev: str | None = None
    last_seq: int | None = None
    for seq, payload, _ in journal.iter_payloads():
        rec = json.loads(payload)
        assert rec["seq"] == seq
        if last_seq is not None:
            assert seq == last_seq + 1, f"gap after {last_seq}"
            assert rec["prev_hash"] == prev, f"chain broken at {seq}"
        assert recompute_hash(rec) == rec["hash"], f"record {seq} does not re-hash"
        prev, last_seq = rec["hash"], seq
        out.append(rec)
    return out


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def journal(path: Path, clock: FakeClock) -> Iterator[Journal]:
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        yield j
    finally:
        j.close()


def fill(journal: Journal, clock: FakeClock, count: int) -> None:
    for i in range(count):
        clock.now += 1000
        journal.append([draft(i)])


# -- sequence and chain -------------------------------------------------------------------
def test_sequence_starts_at_one_without_gaps_across_reopen(path: Path, clock: FakeClock) -> None:
    j = Journal(path, "gw-1", clock_us=clock)
    assert j.head == (0, GENESIS_HASH)
    assert [s.seq for s in j.append(drafts(1))] == [1]
    assert [s.seq for s in j.append(drafts(3))] == [2, 3, 4]
    assert [s.seq for s in j.append(drafts(2))] == [5, 6]
    j.close()
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        assert j.head[0] == 6
        assert [s.seq for s in j.append(drafts(2))] == [7, 8]
        assert [r["seq"] for r in chain(j)] == list(range(1, 9))
    finally:
        j.close()


def test_append_nothing_is_a_no_op(journal: Journal) -> None:
    assert journal.append([]) == []
    assert journal.head == (0, GENESIS_HASH)
    assert journal.append(drafts(1))[0].seq == 1


def test_sealed_is_what_was_stored(journal: Journal) -> None:
    d = draft()
    (sealed,) = journal.append([d], synced=False)
    assert sealed.record is d
    assert (d["gateway"], d["seq"], d["clock_synced"]) == ("gw-1", 1, False)
    assert sealed.station == "st-1"
    assert journal.record(1) == json.loads(sealed.payload) == d
    assert journal.head == (1, d["hash"])


def test_hash_chain_continues_across_reopen_with_signatures(path: Path, clock: FakeClock) -> None:
    key = b"gw-1 key"
    j = Journal(path, "gw-1", signing_key=key, clock_us=clock)
    first = j.append(drafts(3))
    head = j.head
    j.close()
    j = Journal(path, "gw-1", signing_key=key, clock_us=clock)
    try:
        assert j.head == head
        (nxt,) = j.append(drafts(1))
        assert nxt.record["prev_hash"] == first[-1].record["hash"] == head[1]
        records = chain(j)
        assert records[0]["prev_hash"] == GENESIS_HASH
        assert len(records) == 4
        for rec in records:
            assert sign(key, rec["hash"]) == rec["signature"]
            assert sign(b"other key", rec["hash"]) != rec["signature"]
    finally:
        j.close()


def test_recorded_at_strictly_increasing_when_clock_stalls_or_goes_back(
    path: Path, clock: FakeClock, journal: Journal
) -> None:
    times: list[int] = []
    for now in (T0, T0, T0, T0 - 5_000_000, T0 - 1, T0 + 10, T0 + 10_000):
        clock.now = now
        times.extend(parse_utc_us(s.record["recorded_at"]) for s in journal.append(drafts(2)))
    assert all(b > a for a, b in itertools.pairwise(times)), times
    assert times[:3] == [T0, T0 + 1, T0 + 2]
    assert times[-2:] == [T0 + 10_000, T0 + 10_001]
    journal.close()
    # after a restart with the clock set back an hour, time still only moves forward
    clock.now = T0 - 3_600_000_000
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        (s,) = j.append(drafts(1))
        assert parse_utc_us(s.record["recorded_at"]) == times[-1] + 1
    finally:
        j.close()


def test_wal_mode(journal: Journal, path: Path) -> None:
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    finally:
        other.close()


def test_journal_of_another_gateway_is_refused(journal: Journal, path: Path) -> None:
    journal.append(drafts(1))
    with pytest.raises(JournalError, match="belongs to gateway 'gw-1'"):
        Journal(path, "gw-2")
    assert journal.append(drafts(1))[0].seq == 2  # the owner is unaffected


def test_unopenable_path_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not an SQLite database, not at all" * 100)
    with pytest.raises(JournalError):
        Journal(tmp_path / "not-a-db", "gw-1")


# -- delivery -----------------------------------------------------------------------------
def test_pending_streams_in_order_after_cursor_with_limit(journal: Journal) -> None:
    journal.append(drafts(10))
    assert [r[0] for r in journal.pending(0, 4)] == [1, 2, 3, 4]
    assert [r[0] for r in journal.pending(4, 4)] == [5, 6, 7, 8]
    assert [r[0] for r in journal.pending(8, 4)] == [9, 10]
    assert journal.pending(10, 4) == []
    seq, station, payload = journal.pending(2, 1)[0]
    assert (seq, station) == (3, "st-1")
    assert json.loads(payload)["seq"] == 3


def test_mark_delivered_ranges(journal: Journal) -> None:
    journal.append(drafts(10))
    assert journal.backlog() == 10
    journal.mark_delivered([(1, 3), (7, 8)])
    assert [r[0] for r in journal.pending(0, 100)] == [4, 5, 6, 9, 10]
    assert journal.backlog() == 5
    assert journal.unconfirmed() == 5
    journal.mark_delivered([(10, 10)])
    journal.mark_delivered([])
    assert [r[0] for r in journal.pending(0, 100)] == [4, 5, 6, 9]
    delivered = {seq: d is not None for seq, _, d in journal.iter_payloads()}
    assert delivered == {1: True, 2: True, 3: True, 4: False, 5: False, 6: False, 7: True, 8: True, 9: False, 10: True}


def test_delivery_marks_survive_reopen(path: Path, journal: Journal) -> None:
    journal.append(drafts(5))
    journal.mark_delivered([(1, 2)])
    journal.close()
    j = Journal(path, "gw-1")
    try:
        assert [r[0] for r in j.pending(0, 100)] == [3, 4, 5]
    finally:
        j.close()


def test_mark_stored(journal: Journal) -> None:
    journal.append(drafts(6))
    journal.mark_delivered([(1, 2)])
    assert journal.mark_stored([(1, 4)]) == 4
    assert journal.mark_stored([(1, 4)]) == 0  # already settled
    assert journal.mark_stored([(4, 5)]) == 1
    assert journal.mark_stored([]) == 0
    # stored implies delivered, even when the PUBACK bookkeeping came later
    assert [r[0] for r in journal.pending(0, 100)] == [6]
    assert journal.unconfirmed() == 0


def test_requeue_holes_below_the_highest_confirmed(journal: Journal) -> None:
    journal.append(drafts(10))
    journal.mark_delivered([(1, 10)])
    journal.mark_stored([(1, 3), (6, 8)])  # 4 and 5 were lost by the broker; 9, 10 may be queued
    assert journal.requeue_unconfirmed(0) == (0, 0)  # nothing older than the grace period
    assert journal.pending(0, 100) == []
    assert journal.requeue_unconfirmed(wall_us() + 60_000_000) == (2, 0)
    assert [r[0] for r in journal.pending(0, 100)] == [4, 5]


def test_requeue_probes_only_the_newest_above_the_highest_confirmed(journal: Journal) -> None:
    journal.append(drafts(10))
    journal.mark_delivered([(1, 10)])
    journal.mark_stored([(1, 6)])
    assert journal.requeue_unconfirmed(0) == (0, 0)
    assert journal.requeue_unconfirmed(wall_us() + 60_000_000) == (0, 1)
    assert [r[0] for r in journal.pending(0, 100)] == [10]


def test_requeue_probe_when_nothing_is_confirmed_yet(journal: Journal) -> None:
    journal.append(drafts(4))
    journal.mark_delivered([(1, 4)])
    assert journal.requeue_unconfirmed(wall_us() + 60_000_000) == (0, 1)
    assert [r[0] for r in journal.pending(0, 100)] == [4]


def test_requeue_nothing_when_all_settled(journal: Journal) -> None:
    journal.append(drafts(5))
    journal.mark_delivered([(1, 5)])
    journal.mark_stored([(1, 5)])
    assert journal.requeue_unconfirmed(wall_us() + 60_000_000) == (0, 0)
    assert journal.pending(0, 100) == []


def test_requeue_leaves_undelivered_records_alone(journal: Journal) -> None:
    journal.append(drafts(6))
    journal.mark_delivered([(1, 2)])
    journal.mark_stored([(5, 5)])  # 3, 4 were never delivered: they are pending anyway
    assert journal.requeue_unconfirmed(wall_us() + 60_000_000) == (2, 0)  # 1 and 2
    assert [r[0] for r in journal.pending(0, 100)] == [1, 2, 3, 4, 6]


def test_requeue_does_not_probe_again_while_the_probe_is_pending(journal: Journal) -> None:
    journal.append(drafts(10))
    journal.mark_delivered([(1, 10)])
    journal.mark_stored([(1, 6)])
    cutoff = wall_us() + 60_000_000
    assert journal.requeue_unconfirmed(cutoff) == (0, 1)
    assert journal.requeue_unconfirmed(cutoff) == (0, 0)
    assert [r[0] for r in journal.pending(0, 100)] == [10]


# -- pruning ------------------------------------------------------------------------------
def test_prune_removes_only_settled_records_older_than_cutoff(path: Path, clock: FakeClock, journal: Journal) -> None:
    fill(journal, clock, 6)  # recorded at T0+1000 ... T0+6000
    journal.mark_delivered([(1, 6)])
    journal.mark_stored([(1, 3), (5, 6)])  # 4 delivered but not confirmed
    assert journal.prune(T0 + 2500) == 2  # 1, 2
    assert [seq for seq, _, _ in journal.iter_payloads()] == [3, 4, 5, 6]
    assert journal.prune(T0 + 1_000_000) == 2  # 3, 5: not 4 (unsettled), not 6 (the head)
    assert [seq for seq, _, _ in journal.iter_payloads()] == [4, 6]
    assert journal.record(6) is not None
    head = journal.head
    journal.close()
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        assert j.head == head
        clock.now += 1000
        (nxt,) = j.append(drafts(1))
        assert (nxt.seq, nxt.record["prev_hash"]) == (7, head[1])
    finally:
        j.close()


def test_prune_never_removes_unsettled(clock: FakeClock, journal: Journal) -> None:
    fill(journal, clock, 4)
    journal.mark_delivered([(1, 4)])
    assert journal.prune(T0 + 1_000_000) == 0
    assert journal.backlog() == 0 and journal.unconfirmed() == 4
    assert [seq for seq, _, _ in journal.iter_payloads()] == [1, 2, 3, 4]


# -- station state ------------------------------------------------------------------------
def test_state_is_saved_with_the_records(path: Path, journal: Journal) -> None:
    assert journal.state("station:st-1") is None
    journal.append(drafts(2), {"station:st-1": '{"next": 2}'})
    assert journal.state("station:st-1") == '{"next": 2}'
    journal.append([], {"station:st-1": '{"next": 0}'})  # state alone
    assert journal.head[0] == 2
    journal.close()
    j = Journal(path, "gw-1")
    try:
        assert j.state("station:st-1") == '{"next": 0}'
        assert j.head[0] == 2
    finally:
        j.close()


# -- full disk ----------------------------------------------------------------------------
def test_full_disk_raises_leaves_drafts_unsealed_and_continues_without_gap(
    path: Path, clock: FakeClock, journal: Journal
) -> None:
    journal.append(drafts(3), {"station:st-1": "before"})
    head = journal.head
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages}")
    failed = [dict(d) for d in drafts(200)]
    originals = [dict(d) for d in failed]
    clock.now += 5_000_000
    with pytest.raises(JournalFull, match="disk full"):
        journal.append(failed, {"station:st-1": "after"})
    assert failed == originals  # no seal fields left behind
    assert not any(k in d for d in failed for k in SEAL_FIELDS)
    assert journal.head == head
    assert journal.state("station:st-1") == "before"  # same transaction: not saved either
    assert [seq for seq, _, _ in journal.iter_payloads()] == [1, 2, 3]

    journal._db.execute("PRAGMA max_page_count = 1073741823")
    sealed = journal.append(failed)
    assert [s.seq for s in sealed] == list(range(4, 204))
    assert sealed[0].record["prev_hash"] == head[1]
    assert len(chain(journal)) == 203
    journal.close()
    j = Journal(path, "gw-1")
    try:
        assert j.head == (203, sealed[-1].record["hash"])
    finally:
        j.close()


# -- kill -9 ------------------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys
    from collector.gateway.journal import Journal
    from collector.inspection.records import uuid7

    j = Journal(sys.argv[1], "gw-crash")
    n = 0
    while True:
        batch = []
        for _ in range(5):
            n += 1
            batch.append({"schema_version": 1, "kind": "measurement", "id": uuid7(), "station": "st", "n": n})
        j.append(batch, {"station:st": str(n)})
        print(n, flush=True)
    """
)


def test_kill_9_mid_way_leaves_a_whole_chain(path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    committed = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while committed < 200 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"writer exited early with {proc.poll()}"
            committed = int(line)
        assert committed >= 200
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    j = Journal(path, "gw-crash")
    try:
        records = chain(j)
        n = len(records)
        assert n >= committed  # everything reported as committed is there
        assert [r["seq"] for r in records] == list(range(1, n + 1))
        assert [r["n"] for r in records] == list(range(1, n + 1))
        assert records[0]["prev_hash"] == GENESIS_HASH
        assert j.head == (n, records[-1]["hash"])
        assert j.state("station:st") == str(n)  # the state matches the records on disk
        (nxt,) = j.append([draft()])
        assert (nxt.seq, nxt.record["prev_hash"]) == (n + 1, records[-1]["hash"])
    finally:
        j.close()
