"""The gateway's journal: blocks sealed per station, gap-free sequence, chain, signatures,
delivery marks apart from payloads, refusals, the self-check, pruning, the budget, kill -9."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.chain import blocks
from collector.chain.canonical import canonical_text
from collector.chain.keys import Ed25519Signer, HmacSigner, KeyRing, generate
from collector.errors import JournalError, JournalFull
from collector.gateway.journal import Journal, read_status
from collector.inspection.records import GENESIS_HASH, parse_utc_us, uuid7

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_000_000_000_000  # a fixed epoch in microseconds


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def draft(n: int = 0, station: str = "st-1", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "audit",
        "id": uuid7(),
        "site": "plant-1",
        "line": "line-a",
        "station": station,
        "event": "x",
        "by": None,
        "subject": None,
        "detail": f"n={n}",
        **extra,
    }


def drafts(count: int, start: int = 0, station: str = "st-1") -> list[dict[str, Any]]:
    return [draft(start + i, station) for i in range(count)]


def chain(journal: Journal) -> list[dict[str, Any]]:
    """Every record still in the journal, materialised, after checking the blocks link up."""
    out: list[dict[str, Any]] = []
    prev: str | None = None
    last: int | None = None
    for block, _state in journal.iter_blocks():
        again = blocks.read(block.text, strict=True)  # canonical, hash matches
        assert again.hash == block.hash
        if last is not None:
            assert block.first_seq == last + 1, f"gap after {last}"
            assert block.prev_hash == prev, f"chain broken at {block.first_seq}"
        prev, last = block.hash, block.last_seq
        out += block.materialise()
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


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    generate("gw-1", tmp_path / "keys")
    return tmp_path / "keys"


# -- sealing ------------------------------------------------------------------------------
def test_sequence_starts_at_one_without_gaps_across_reopen(path: Path, clock: FakeClock) -> None:
    j = Journal(path, "gw-1", clock_us=clock)
    assert j.head == (0, GENESIS_HASH)
    assert [(s.block.first_seq, s.block.last_seq) for s in j.append(drafts(1))] == [(1, 1)]
    assert [(s.block.first_seq, s.block.last_seq) for s in j.append(drafts(3))] == [(2, 4)]
    j.close()
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        assert j.head[0] == 4
        assert [(s.block.first_seq, s.block.last_seq) for s in j.append(drafts(2))] == [(5, 6)]
        assert [r["seq"] for r in chain(j)] == list(range(1, 7))
    finally:
        j.close()


def test_one_block_per_station_per_transaction_records_in_order(journal: Journal) -> None:
    mixed = [draft(0, "st-1"), draft(1, "st-2"), draft(2, "st-1"), draft(3, "st-2"), draft(4, "st-1")]
    sealed = journal.append(mixed)
    assert [(s.block.station, s.block.first_seq, s.block.last_seq) for s in sealed] == [
        ("st-1", 1, 3),
        ("st-2", 4, 5),
    ]
    assert [r["detail"] for r in sealed[0].block.records] == ["n=0", "n=2", "n=4"]
    # the block carries site, line and station for its records; the records do not repeat them
    assert all(k not in r for s in sealed for r in s.block.records for k in ("site", "line", "station"))
    assert sealed[1].block.prev_hash == sealed[0].block.hash


def test_blocks_are_bounded_in_records_and_bytes(path: Path, clock: FakeClock) -> None:
    j = Journal(path, "gw-1", clock_us=clock, max_block_records=4, max_block_bytes=100_000)
    try:
        assert [len(s.block.records) for s in j.append(drafts(10))] == [4, 4, 2]
    finally:
        j.close()
    one = len(canonical_text({k: v for k, v in draft().items() if k not in ("site", "line", "station")}))
    j = Journal(path, "gw-1", clock_us=clock, max_block_records=1000, max_block_bytes=3 * one + 10)
    try:
        sizes = [len(s.block.records) for s in j.append(drafts(10))]
        assert sizes == [3, 3, 3, 1]
        assert all(len(s.block.text) < 3 * one + 1200 for s in j.append(drafts(6)))  # plus the header and seal
    finally:
        j.close()


def test_the_journals_encoding_is_the_canonical_one(journal: Journal) -> None:
    odd = draft(0, detail='quote " backslash \\ tab \t ünïcödé ✓ \u2028')
    (sealed,) = journal.append([odd, draft(1)])
    again = blocks.read(sealed.block.text, strict=True)  # strict: re-encodes and compares the bytes
    assert again.records[0]["detail"] == odd["detail"]


def test_blocks_are_signed_and_verify_with_the_register(path: Path, clock: FakeClock, keydir: Path) -> None:
    signer = Ed25519Signer.from_file(keydir / "gw-1.key")
    j = Journal(path, "gw-1", signer=signer, clock_us=clock)
    try:
        sealed = j.append(drafts(3)) + j.append(drafts(2, station="st-2"))
    finally:
        j.close()
    ring = KeyRing.load(keydir)
    for s in sealed:
        assert s.block.key_id == signer.key_id
        ring.verify("gw-1", s.block.key_id, s.block.digest, s.block.signature)


def test_hmac_signed_chain_continues_across_reopen(path: Path, clock: FakeClock, tmp_path: Path) -> None:
    key = HmacSigner(b"secret")
    j = Journal(path, "gw-1", signer=key, clock_us=clock)
    j.append(drafts(2))
    j.close()
    j = Journal(path, "gw-1", signer=key, clock_us=clock)
    try:
        j.append(drafts(2))
        records = chain(j)
    finally:
        j.close()
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    (tmp_path / "ring").mkdir()
    (tmp_path / "ring" / "gw-1.hmac").write_text("secret")
    ring = KeyRing.load(tmp_path / "ring")
    j = Journal(path, "gw-1", signer=key, clock_us=clock)
    try:
        for block, _ in j.iter_blocks():
            assert block.key_id == "hmac"
            ring.verify("gw-1", "hmac", block.digest, block.signature)
    finally:
        j.close()


def test_recorded_at_strictly_increasing_when_clock_stalls_or_goes_back(journal: Journal, clock: FakeClock) -> None:
    journal.append(drafts(3))
    clock.now -= 10_000_000  # the clock steps back 10 s
    journal.append(drafts(2))
    journal.append(drafts(1))
    times = [parse_utc_us(r["recorded_at"]) for r in chain(journal)]
    assert times == sorted(set(times)) and len(times) == 6
    assert times[:3] == [T0, T0 + 1, T0 + 2]  # a block's records are its time plus i µs
    assert times[3] == T0 + 3  # the next block starts after the previous one's last record


def test_appends_are_full_fsync_wal(journal: Journal, path: Path) -> None:
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    journal.append(drafts(1))
    journal.mark_delivered([(1, 1)])
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # marks switch back


def test_a_block_holds_200_values_in_less_than_150_bytes_each(path: Path) -> None:
    rng = random.Random(5)
    j = Journal(path, "gw-1")
    try:
        for _ in range(20):
            cycle = []
            for ch in range(200):
                value = f"{rng.uniform(0, 500):.3f}"
                cycle.append(
                    {
                        **draft(ch, "press-1"),
                        "kind": "measurement",
                        "raw": f"{rng.getrandbits(32):08x}",
                        "raw_encoding": "hex",
                        "value": value,
                        "judged_value": value,
                        "reading_value": value,
                        "channel": f"hr{ch}",
                    }
                )
            j.append(cycle)
        assert j.used_bytes / 4000 < 150, j.used_bytes / 4000
    finally:
        j.close()


# -- opening --------------------------------------------------------------------------------
def test_journal_of_another_gateway_is_refused(journal: Journal, path: Path) -> None:
    with pytest.raises(JournalError, match="belongs to gateway 'gw-1'"):
        Journal(path, "gw-2")


def test_unopenable_paths_are_journal_errors(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(tmp_path / "not-a-db", "gw-1")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(tmp_path / "a-file" / "journal.sqlite", "gw-1")


def test_a_journal_of_the_earlier_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE records (seq INTEGER PRIMARY KEY, payload TEXT);"
            "INSERT INTO meta VALUES ('gateway', 'gw-1'), ('format', '1');"
        )
    with pytest.raises(JournalError, match=r"format 1 .* move the file away"):
        Journal(old, "gw-1")
    with pytest.raises(JournalError, match="earlier version"):
        read_status(old)


# -- delivery -------------------------------------------------------------------------------
def test_pending_streams_in_order_after_cursor_with_limit(journal: Journal) -> None:
    for i in range(6):
        journal.append(drafts(2, start=2 * i))
    good, damaged = journal.pending(0, 4)
    assert damaged == [] and [(p.first_seq, p.last_seq) for p in good] == [(1, 2), (3, 4), (5, 6), (7, 8)]
    good, _ = journal.pending(8, 100)
    assert [p.first_seq for p in good] == [9, 11]
    # bounded in bytes too (at least one block): big blocks do not fill memory
    assert [p.first_seq for p in journal.pending(0, 100, max_bytes=1)[0]] == [1]
    assert blocks.read(good[0].text).first_seq == 9


def test_marks_move_blocks_through_their_states(journal: Journal) -> None:
    for _ in range(4):
        journal.append(drafts(2))
    assert journal.counts() == {"new": 8, "sent": 0, "stored": 0, "refused": 0, "damaged": 0}
    assert journal.mark_delivered([(1, 6)]) == 6
    assert journal.mark_delivered([(1, 6)]) == 0  # already marked
    assert [p.first_seq for p in journal.pending(0, 10)[0]] == [7]
    assert journal.mark_stored([(1, 3)]) == 2  # a range covers whole blocks only: 3..4 is not inside
    assert journal.mark_refused([(3, 4, "seq 3..4 already stored with other content")], "rec-1") == [(3, 4)]
    assert journal.mark_stored([(7, 8)]) == 2  # stored before the PUBACK was processed
    assert journal.counts() == {"new": 0, "sent": 2, "stored": 4, "refused": 2, "damaged": 0}
    assert journal.backlog() == 0 and journal.unconfirmed() == 2 and journal.refused() == 2
    (refusal,) = journal.refusals()
    assert refusal["reason"] == "seq 3..4 already stored with other content" and refusal["recorder"] == "rec-1"


def test_marks_survive_reopen(path: Path, journal: Journal) -> None:
    journal.append(drafts(2))
    journal.append(drafts(2))
    journal.mark_delivered([(1, 4)])
    journal.mark_stored([(1, 2)])
    journal.close()
    j = Journal(path, "gw-1")
    try:
        assert j.counts()["stored"] == 2 and j.counts()["sent"] == 2
        assert j.pending(0, 10)[0] == []
    finally:
        j.close()


def test_marking_does_not_rewrite_the_payloads(path: Path, clock: FakeClock) -> None:
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        for _ in range(50):
            j.append([draft(i, detail=os.urandom(200).hex()) for i in range(50)])
        j._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        payload_bytes = j._db.execute("SELECT sum(length(body)) FROM payloads").fetchone()[0]
        wal = Path(f"{path}-wal")
        before = wal.stat().st_size
        j.mark_delivered([(1, 2500)])
        j.mark_stored([(1, 2500)])
        assert j.counts()["stored"] == 2500
        assert wal.stat().st_size - before < payload_bytes / 10
    finally:
        j.close()


def test_requeue_holes_below_the_highest_answered(journal: Journal) -> None:
    for _ in range(5):
        journal.append(drafts(1))
    journal.mark_delivered([(1, 5)])
    journal.mark_stored([(1, 1), (3, 3)])
    journal.mark_refused([(5, 5, "no")])
    assert journal.requeue_unconfirmed(time.time_ns() // 1000 + 10**9) == (2, 0, [])
    assert [p.first_seq for p in journal.pending(0, 10)[0]] == [2, 4]


def test_requeue_probes_only_the_newest_above_the_highest_answered(journal: Journal) -> None:
    for _ in range(5):
        journal.append(drafts(1))
    journal.mark_delivered([(1, 5)])
    journal.mark_stored([(1, 2)])
    later = time.time_ns() // 1000 + 10**9
    assert journal.requeue_unconfirmed(later) == (0, 1, [])
    assert [p.first_seq for p in journal.pending(0, 10)[0]] == [5]
    assert journal.requeue_unconfirmed(later) == (0, 0, [])  # the probe waits to go out
    journal.mark_delivered([(5, 5)])
    assert journal.requeue_unconfirmed(time.time_ns() // 1000 - 10**9) == (0, 0, [])  # too recent


def test_requeue_nothing_when_all_settled_and_leaves_unsent_alone(journal: Journal) -> None:
    journal.append(drafts(1))
    journal.append(drafts(1))
    assert journal.requeue_unconfirmed(time.time_ns() // 1000 + 10**9) == (0, 0, [])
    journal.mark_delivered([(1, 2)])
    journal.mark_stored([(1, 2)])
    assert journal.requeue_unconfirmed(time.time_ns() // 1000 + 10**9) == (0, 0, [])


def test_a_hole_nobody_answers_is_given_up_after_max_sends(journal: Journal) -> None:
    for _ in range(3):
        journal.append(drafts(1))
    journal.mark_delivered([(1, 3)])
    journal.mark_stored([(3, 3)])
    later = time.time_ns() // 1000 + 10**9
    for _ in range(2):  # sends 2 and 3
        assert journal.requeue_unconfirmed(later, max_sends=3)[0] == 2
        journal.mark_delivered([(1, 2)])
    assert journal.requeue_unconfirmed(later, max_sends=3) == (0, 0, [(1, 1), (2, 2)])
    assert journal.requeue_unconfirmed(later, max_sends=3) == (0, 0, [])  # alarmed once
    assert journal.unconfirmed() == 2  # kept, not settled


# -- the gateway's own check ---------------------------------------------------------------
def _edit_payload(path: Path, first_seq: int, edit: Any) -> None:
    with sqlite3.connect(path) as db:
        (body,) = db.execute("SELECT body FROM payloads WHERE first_seq = ?", (first_seq,)).fetchone()
        text = edit(zlib.decompress(body).decode())
        db.execute("UPDATE payloads SET body = ? WHERE first_seq = ?", (zlib.compress(text.encode()), first_seq))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: t.replace("n=3", "n=9"), "does not match its hash"),
        (lambda t: t.replace('"station":"st-1"', '"station":"st-9"'), "does not match its hash"),
        (lambda t: t[: t.rfind("}")] + " }", "signature is malformed"),
    ],
)
def test_an_edited_payload_is_not_published(path: Path, clock: FakeClock, edit: Any, reason: str) -> None:
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        j.append(drafts(2))
        j.append(drafts(2, start=2))
        j.append(drafts(2, start=4))
        _edit_payload(path, 3, edit)
        good, damaged = j.pending(0, 10)
        assert [p.first_seq for p in good] == [1, 5]
        assert [(d.first_seq, d.last_seq) for d in damaged] == [(3, 4)] and reason in damaged[0].reason
        assert j.damaged() == 2 and j.pending(0, 10) == (good, [])  # marked: never offered again
    finally:
        j.close()


class ForgingSigner:
    """Claims the gateway's key but cannot sign with it."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id

    def sign(self, digest: bytes) -> str:
        return "ab" * 64


def test_a_rehashed_edit_fails_the_signature_and_breaks_the_next_link(
    path: Path, clock: FakeClock, keydir: Path
) -> None:
    signer = Ed25519Signer.from_file(keydir / "gw-1.key")
    j = Journal(path, "gw-1", signer=signer, clock_us=clock)
    try:
        j.append(drafts(2))
        j.append(drafts(2, start=2))
        j.append(drafts(2, start=4))
        b3 = j.block(3)
        assert b3 is not None
        # an editor who recomputes the hash (and fixes the hash column) cannot sign it
        forged = blocks.seal(
            [dict(r, detail="n=9") if r["detail"] == "n=3" else r for r in b3.records],
            gateway="gw-1", site="plant-1", line="line-a", station="st-1", first_seq=3,
            recorded_at=b3.recorded_at, clock_synced=True, prev_hash=b3.prev_hash,
            signer=ForgingSigner(signer.key_id),
        )  # fmt: skip
        _edit_payload(path, 3, lambda _t: forged.text)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE blocks SET hash = ? WHERE first_seq = 3", (forged.hash,))
        good, damaged = j.pending(0, 10)
        assert [p.first_seq for p in good] == [1]
        assert [d.first_seq for d in damaged] == [3, 5]
        assert "signature does not match" in damaged[0].reason
        assert "chain broken" in damaged[1].reason  # block 5 links to the genuine block 3
    finally:
        j.close()


def test_the_head_is_checked_at_start(path: Path, clock: FakeClock) -> None:
    j = Journal(path, "gw-1", clock_us=clock)
    j.append(drafts(2))
    j.append(drafts(2, start=2))
    j.close()
    _edit_payload(path, 3, lambda t: t.replace("n=2", "n=7"))
    j = Journal(path, "gw-1", clock_us=clock)
    try:
        assert [(d.first_seq, d.last_seq) for d in j.start_damaged] == [(3, 4)]
        assert [p.first_seq for p in j.pending(0, 10)[0]] == [1]
        (nxt,) = j.append(drafts(1))  # the chain goes on from the hash it sealed, not the edited row
        assert nxt.block.prev_hash == j._db.execute("SELECT hash FROM blocks WHERE first_seq = 3").fetchone()[0]
    finally:
        j.close()


# -- lookups --------------------------------------------------------------------------------
def test_a_nonconformance_is_found_by_id_and_records_by_seq(journal: Journal) -> None:
    nc = draft(0, kind="nonconformance", measurement_id="m-1")
    journal.append([draft(1), nc])
    found = journal.find(nc["id"])
    assert found is not None and found["kind"] == "nonconformance" and found["station"] == "st-1"
    assert found["seq"] == 2 and found["gateway"] == "gw-1"
    assert journal.find("no-such-id") is None
    record = journal.record(1)
    assert record is not None and record["detail"] == "n=1" and record["site"] == "plant-1"


def test_state_is_saved_with_the_records(path: Path, journal: Journal) -> None:
    journal.append(drafts(1), {"station:st-1": '{"next": 1}'})
    journal.append([], {"station:st-1": '{"next": 2}'})
    journal.close()
    j = Journal(path, "gw-1")
    try:
        assert j.state("station:st-1") == '{"next": 2}'
        assert j.head[0] == 1
    finally:
        j.close()


# -- pruning and the budget -----------------------------------------------------------------
def test_prune_removes_only_the_settled_prefix_older_than_the_cutoff(journal: Journal, clock: FakeClock) -> None:
    for _ in range(6):
        clock.now += 1_000_000
        journal.append(drafts(1))
    journal.mark_delivered([(1, 6)])
    journal.mark_stored([(1, 2), (4, 6)])
    assert journal.prune(T0 + 10_000_000) == 2  # 3 is unsettled: nothing after it goes
    journal.mark_stored([(3, 3)])
    assert journal.prune(T0 + 4_500_000) == 2  # by age: 3 and 4 (recorded at +3 s, +4 s)
    assert journal.prune(T0 + 10_000_000) == 1  # never the head (6)
    assert [p for p, _ in ((b.first_seq, s) for b, s in journal.iter_blocks())] == [6]
    (nxt,) = journal.append(drafts(1))
    assert nxt.block.first_seq == 7
    assert journal.pending(0, 10)[0][0].first_seq == 7  # its link is checked against the head kept


def test_the_budget_prunes_settled_blocks_first_alarms_then_refuses(path: Path, clock: FakeClock) -> None:
    budget = 1024 * 1024
    j = Journal(path, "gw-1", clock_us=clock, budget_bytes=budget, alarm_ratio=0.5)
    try:
        big = [draft(i, detail=os.urandom(900).hex()) for i in range(1)]
        n = 0
        while j.used_bytes < 0.4 * budget:
            j.append([dict(big[0], id=uuid7())])
            n += 1
        j.mark_delivered([(1, n)])
        j.mark_stored([(1, n)])
        # settled blocks make room for new ones, whatever their age: no alarm
        for _ in range(n // 2):
            j.append([dict(big[0], id=uuid7())])
        assert j.head[0] == n + n // 2 and not j.budget_alarm
        assert j.counts()["stored"] < n  # pruned early
        alarmed_at = None

        def fill() -> None:
            nonlocal alarmed_at
            for _ in range(100 * n):
                j.append([dict(big[0], id=uuid7())])
                if j.budget_alarm and alarmed_at is None:
                    alarmed_at = j.head[0]

        # unsettled ones cannot go: the alarm, then the refusal
        with pytest.raises(JournalFull, match="budget"):
            fill()
        assert alarmed_at is not None and alarmed_at < j.head[0] - n // 2  # the alarm came well before
        assert j.counts()["stored"] == 0  # every settled block made room first
        head = j.head
        with pytest.raises(JournalFull):
            j.append([dict(big[0], id=uuid7()) for _ in range(5)])
        assert j.head == head  # nothing of a refused append is stored
    finally:
        j.close()


def test_full_disk_raises_stores_nothing_and_continues_without_gap(path: Path, journal: Journal) -> None:
    journal.append(drafts(3), {"station:st-1": "before"})
    head = journal.head
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages}")
    failed = [draft(i, detail=os.urandom(500).hex()) for i in range(200)]
    originals = [dict(d) for d in failed]
    with pytest.raises(JournalFull, match="full"):
        journal.append(failed, {"station:st-1": "after"})
    assert failed == originals  # the drafts are not changed
    assert journal.head == head
    assert journal.state("station:st-1") == "before"  # same transaction: not saved either
    assert [r["seq"] for r in chain(journal)] == [1, 2, 3]
    journal._db.execute("PRAGMA max_page_count = 1073741823")
    sealed = journal.append(failed)
    assert (sealed[0].block.first_seq, sealed[-1].block.last_seq) == (4, 203)
    assert sealed[0].block.prev_hash == head[1]
    assert len(chain(journal)) == 203


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
            batch.append({"kind": "audit", "id": uuid7(), "site": "s", "line": "l", "station": "st",
                          "event": "x", "by": None, "subject": None, "detail": str(n)})
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
        assert [r["detail"] for r in records] == [str(i) for i in range(1, n + 1)]
        assert j.start_damaged == []
        assert j.state("station:st") == str(n)  # the state matches the records on disk
        (nxt,) = j.append([draft()])
        assert nxt.block.first_seq == n + 1 and nxt.block.prev_hash == j.block(n - 4).hash  # type: ignore[union-attr]
    finally:
        j.close()
