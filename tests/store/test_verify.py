"""``collector verify`` against a real InfluxDB, and an attacker with write access to it.

Each test stores a genuine history (two gateways, signed blocks, checkpoints), then changes
it the way someone who can write to InfluxDB can: line protocol written directly, points
deleted with InfluxQL. ``verify`` must name what was done and fail; untouched, it says intact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector import cli
from collector.chain import blocks
from collector.chain.blocks import Block, format_utc_us
from collector.chain.keys import Ed25519Signer, HmacSigner, KeyRing, generate
from collector.evidence.verify import Report, verify
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import checkpoint_line, lines_for_block
from tests.store.chains import BASE_US, GatewayChain, event, forge, measurement, part

pytestmark = pytest.mark.services

DAY = 86_400.0
LATER = BASE_US / 1e6 + DAY  # "now" for verify: everything stored is long past the grace period


@dataclass
class History:
    store: InfluxV1Store
    keydir: Path
    gw1: GatewayChain
    gw2: GatewayChain

    @property
    def keys(self) -> KeyRing:
        return KeyRing.load(self.keydir)

    def verify(self, **kwargs: object) -> Report:
        return verify(self.store, keys=self.keys, now=LATER, **kwargs)  # type: ignore[arg-type]

    def write(self, *sealed: Block) -> None:
        self.store.write_lines([line for b in sealed for line in lines_for_block(b)])

    def delete(self, block: Block) -> None:
        """Remove a block's points, its records' points and its lookup entries."""
        t, last = block.recorded_us, block.recorded_us + len(block.records) - 1
        g = block.gateway
        for m in ("block", "inspection", "part", "event"):
            self.store.query(f'DELETE FROM "{m}" WHERE "gateway" = \'{g}\' AND time >= {t}u AND time <= {last}u')
        self.store.query(f'DELETE FROM "lookup" WHERE time = {t}u')


def findings(report: Report) -> set[str]:
    return {f.kind for f in report.findings if f.error}


@pytest.fixture
def history(v1_store: InfluxV1Store, keydir: Path) -> History:
    gw1, gw2 = GatewayChain("gw-1", keydir), GatewayChain("gw-2", keydir, line="line-3")
    h = History(v1_store, keydir, gw1, gw2)
    for n in range(6):
        serial = f"SN-{n:03d}"
        m1, m2 = measurement(serial, "bore-d"), measurement(serial, "len", "44.990", verdict="fail")
        h.write(gw1.seal([m1]), gw1.seal([m2, event("nonconformance", measurement_id=m2["id"], serial=serial)]))
        h.write(gw1.seal([part(serial, [m1["id"], m2["id"]], verdict="reject")]))
        if n == 2:
            v1_store.write_lines([checkpoint_line(gw1.checkpoint())])
    v1_store.write_lines([checkpoint_line(gw1.checkpoint())])
    for n in range(3):
        h.write(gw2.seal([measurement(f"SN-2{n:02d}")], station="st-30"))
    v1_store.write_lines([checkpoint_line(gw2.checkpoint())])
    return h


def test_an_untouched_store_is_intact(history: History) -> None:
    report = history.verify()
    assert report.ok and report.findings == [], [str(f) for f in report.findings]
    by = {c.gateway: c for c in report.chains}
    assert (
        by["gw-1"].blocks == 18 and by["gw-1"].records == 24 and (by["gw-1"].first_seq, by["gw-1"].last_seq) == (1, 24)
    )
    assert by["gw-1"].signatures_verified == 18 and by["gw-1"].checkpoints == 2 and by["gw-1"].registered
    assert by["gw-2"].records == 3 and by["gw-2"].stations == {"st-30": 3}


def test_a_time_range_checks_the_links_into_and_out_of_it(history: History) -> None:
    middle = history.gw1.sealed[5:12]
    start, end = format_utc_us(middle[0].recorded_us), format_utc_us(middle[-1].recorded_us + 1)
    from collector.evidence.trace import TraceFilter

    report = history.verify(flt=TraceFilter(start=start, end=end), only=["gw-1"])
    assert report.ok, [str(f) for f in report.findings]
    history.delete(history.gw1.sealed[12])  # just after the range
    report = history.verify(flt=TraceFilter(start=start, end=end), only=["gw-1"])
    assert findings(report) == {"GAP"}, [str(f) for f in report.findings]


def test_a_tail_rewritten_and_hashed_again_is_forged_and_rehashed(history: History) -> None:
    last = history.gw1.sealed[-1]
    rewritten = dict(last.records[0], verdict="accept")
    forged = forge(last, [rewritten], Ed25519Signer.from_file(generate("gw-1", history.keydir / "attacker")[0]))
    history.delete(last)  # a thorough attacker leaves none of the genuine points behind
    history.write(forged)
    report = history.verify()
    assert findings(report) == {"FORGED", "REHASHED"}, [str(f) for f in report.findings]
    assert any(f.kind == "REHASHED" and f.seq == last.last_seq for f in report.findings)


def test_a_tail_rehashed_with_a_stolen_hmac_key_is_caught_by_the_checkpoint(
    v1_store: InfluxV1Store, keydir: Path
) -> None:
    """HMAC: whoever holds the secret (every recorder) can sign; the checkpoint still tells."""
    (keydir / "gw-h.hmac").write_text("shared-secret")
    secret = HmacSigner(b"shared-secret")
    chain = GatewayChain("gw-h", keydir, signer=secret)
    h = History(v1_store, keydir, chain, chain)
    for n in range(3):
        h.write(chain.seal([measurement(f"SN-{n}")]))
    v1_store.write_lines([checkpoint_line(chain.checkpoint())])
    assert h.verify().ok
    last = chain.sealed[-1]
    again = forge(last, [dict(last.records[0], value="12.100", verdict="fail")], secret)
    h.delete(last)
    h.write(again)
    report = h.verify()
    assert findings(report) == {"REHASHED"}, [str(f) for f in report.findings]


@pytest.mark.parametrize("signed", [True, False])
def test_a_forged_next_record_is_forged(history: History, signed: bool) -> None:
    head = history.gw1.sealed[-1]
    signer = Ed25519Signer.from_file(generate("gw-1", history.keydir / "attacker")[0]) if signed else None
    at = format_utc_us(head.recorded_us + 5_000_000)
    fake = forge(
        head, [measurement("SN-999")], signer, first_seq=head.last_seq + 1, recorded_at=at, prev_hash=head.hash
    )
    history.write(fake)
    report = history.verify()
    assert findings(report) == {"FORGED"}, [str(f) for f in report.findings]
    [forged] = [f for f in report.findings if f.kind == "FORGED"]
    assert forged.seq == head.last_seq + 1 and ("unsigned" in forged.detail) != signed


def test_the_last_records_deleted_are_truncated(history: History) -> None:
    for b in history.gw1.sealed[-2:]:
        history.delete(b)
    report = history.verify()
    assert findings(report) == {"TRUNCATED"}, [str(f) for f in report.findings]
    [t] = report.findings
    assert t.seq == history.gw1.sealed[-3].last_seq + 1 and "24" in t.detail


def test_a_missing_tail_younger_than_the_grace_period_is_in_flight(history: History) -> None:
    history.delete(history.gw1.sealed[-1])
    now = (history.gw1.sealed[-1].recorded_us + 60_000_000) / 1e6  # a minute later
    report = verify(history.store, keys=history.keys, now=now, grace=300)
    assert report.ok and {f.kind for f in report.findings} == {"IN FLIGHT"}
    assert "IN FLIGHT" in cli_text(report)


def test_every_record_of_one_gateway_deleted_is_missing(history: History) -> None:
    for m in ("block", "inspection", "part", "event"):
        history.store.query(f'DROP SERIES FROM "{m}" WHERE "gateway" = \'gw-2\'')
    report = history.verify()
    assert findings(report) == {"MISSING", "ORPHAN"}, [str(f) for f in report.findings]
    # the lookup entries stayed behind and name blocks that are gone
    assert {f.gateway for f in report.findings} == {"gw-2"}
    history.store.query('DROP SERIES FROM "checkpoint" WHERE "gateway" = \'gw-2\'')
    history.store.query("DROP MEASUREMENT lookup")
    history.write(*history.gw1.sealed)  # gw-1's index entries back
    report = history.verify()
    assert findings(report) == {"MISSING"}, [str(f) for f in report.findings]  # registered, not retired


def test_a_gateway_asked_about_that_nothing_knows_is_missing(history: History) -> None:
    report = history.verify(only=["gw-typo"])
    assert findings(report) == {"MISSING"} and report.findings[0].gateway == "gw-typo" and not report.ok


def test_a_retired_gateway_may_be_silent(history: History) -> None:
    for m in ("block", "inspection", "part", "event", "checkpoint"):
        history.store.query(f'DROP SERIES FROM "{m}" WHERE "gateway" = \'gw-2\'')
    (history.keydir / "register.yaml").write_text("gateways:\n  gw-2: {retired: true}\n")
    assert findings(history.verify()) <= {"ORPHAN"}  # only its index entries, left behind


def test_a_point_without_a_gateway_is_an_orphan(history: History) -> None:
    block = history.gw1.sealed[0]
    line = lines_for_block(block)[1].replace(",gateway=gw-1", "").replace("value=12.004", "value=12.5")
    history.store.write_lines([line.rsplit(" ", 1)[0] + f" {BASE_US + 999}"])
    report = history.verify()
    assert findings(report) == {"ORPHAN"}
    [o] = report.findings
    assert o.gateway == "(no gateway)" and "no gateway tag" in o.detail


def test_a_chain_under_an_unknown_gateway_is_unknown(history: History, tmp_path: Path) -> None:
    stranger = GatewayChain("gw-x", tmp_path / "elsewhere")
    history.write(stranger.seal([measurement("SN-X1")]), stranger.seal([measurement("SN-X2")]))
    report = history.verify()
    assert findings(report) == {"UNKNOWN"}, [str(f) for f in report.findings]
    [u] = report.findings
    assert u.gateway == "gw-x" and "2 block(s)" in u.detail
    assert [c.registered for c in report.chains if c.gateway == "gw-x"] == [False]


def test_a_station_the_register_does_not_bind_is_unknown(history: History) -> None:
    (history.keydir / "register.yaml").write_text(
        "gateways:\n  gw-1: {site: plant-a, line: line-2, stations: [st-10]}\n  gw-2: {stations: [st-31]}\n"
    )
    report = history.verify()
    assert findings(report) == {"UNKNOWN"}
    assert {f.gateway for f in report.findings} == {"gw-2"} and all("st-30" in f.detail for f in report.findings)


def test_an_edited_column_is_altered(history: History) -> None:
    block = history.gw1.sealed[1]
    line = lines_for_block(block)[1]
    assert ",judged_value=44.990" in line
    history.store.write_lines([line.replace(",judged_value=44.990", ",judged_value=45.000")])
    report = history.verify()
    assert findings(report) == {"ALTERED"}
    [a] = report.findings
    assert a.seq == block.first_seq and "judged_value stored 45" in a.detail


def test_an_edited_payload_is_altered(history: History) -> None:
    block = history.gw1.sealed[3]
    edited = block.text.replace('"verdict":"pass"', '"verdict":"fail"')
    assert edited != block.text
    line = lines_for_block(block)[0]
    history.store.write_lines([line.replace(json.dumps(block.text)[1:-1], json.dumps(edited)[1:-1])])
    report = history.verify()
    assert findings(report) == {"ALTERED"}
    assert any("hash does not match" in f.detail for f in report.findings)


def test_a_deleted_block_in_the_middle_is_a_gap_and_a_deleted_index_entry_is_altered(history: History) -> None:
    history.delete(history.gw1.sealed[4])
    report = history.verify()
    assert findings(report) == {"GAP"}
    [g] = report.findings
    assert g.seq == history.gw1.sealed[4].first_seq

    serial_entry = next(x for x in lines_for_block(history.gw1.sealed[7]) if x.startswith("lookup,bucket=serial:"))
    bucket = serial_entry.split(" ")[0].split("=")[1]
    history.store.query(
        f'DELETE FROM "lookup" WHERE "bucket" = \'{bucket}\' AND time = {history.gw1.sealed[7].recorded_us}u'
    )
    report = history.verify()
    assert findings(report) == {"GAP", "ALTERED"}
    assert any("lookup entry" in f.detail and "would not find it" in f.detail for f in report.findings)


def test_two_blocks_claiming_one_seq_are_a_duplicate(history: History) -> None:
    head = history.gw2.sealed[-1]
    attacker = Ed25519Signer.from_file(generate("gw-2", history.keydir / "attacker")[0])
    twin = forge(head, [measurement("SN-EVIL")], attacker, recorded_at=format_utc_us(head.recorded_us + 7_000_000))
    history.write(twin)
    # the twin also ends at the checkpoint's head with another hash
    assert findings(history.verify()) == {"DUPLICATE", "FORGED", "REHASHED"}


def test_a_broken_link_and_a_non_canonical_block_from_the_gateway_itself(v1_store: InfluxV1Store, keydir: Path) -> None:
    """Signed by the gateway's own key (a gateway bug), still not a chain."""
    chain = GatewayChain("gw-b", keydir)
    h = History(v1_store, keydir, chain, chain)
    h.write(chain.seal([measurement("SN-1")]))
    chain.head = "f" * 64
    h.write(chain.seal([measurement("SN-2")]))
    assert findings(h.verify()) == {"BROKEN"}

    # the same content with whitespace: its hash matches its text, but the text is not canonical
    body = json.loads(chain.sealed[-1].text)
    body.pop("hash"), body.pop("signature")
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(", ", ":"))
    digest = hashlib.sha256(text.encode()).digest()
    assert chain.signer is not None
    line = f'{text[:-1]},"hash":"{digest.hex()}","signature":"{chain.signer.sign(digest)}"}}'
    with pytest.raises(blocks.BlockError, match="not canonical"):
        blocks.read(line, strict=True)
    sealed = blocks.read(line)  # read leniently, as only a reader that trusts the bytes would
    h.write(sealed)
    report = h.verify()
    assert "ALTERED" in findings(report)
    assert any("not canonical" in f.detail for f in report.findings)


def test_findings_are_bounded(history: History) -> None:
    history.store.query('DROP MEASUREMENT "lookup"')
    for n in range(30):
        history.write(history.gw2.seal([measurement(f"SN-9{n:02d}")], station="st-30"))
    history.store.query('DROP MEASUREMENT "lookup"')
    report = history.verify()
    shown = [f for f in report.findings if f.gateway == "gw-2"]
    assert len(shown) == 50 and report.suppressed[("gw-2", "ALTERED")] == 33 * 3 - 50
    assert "ALTERED: gateway gw-2: 49 more not listed" in cli_text(report)


def cli_text(report: Report) -> str:
    from collector.evidence.verify import format_report

    return format_report(report)


# --- the command --------------------------------------------------------------------------------


def config_file(tmp_path: Path, store: InfluxV1Store) -> Path:
    path = tmp_path / "verify.yaml"
    path.write_text(f"influxdb:\n  kind: v1\n  url: {store._http.url}\n  database: {store.database}\n")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().out


def test_the_command_says_intact_and_exits_0(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(config_file(tmp_path, history.store))
    code, out = run(["verify", "--config", cfg, "--keys", str(history.keydir), "--grace", "0"], capsys)
    assert code == 0 and "RESULT: intact" in out and "gateway gw-1 (registered)" in out
    code, out = run(["verify", "--config", cfg, "--keys", str(history.keydir), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["signatures_checked"] is True
    assert {g["gateway"] for g in doc["gateways"]} == {"gw-1", "gw-2"}


def test_the_command_names_each_finding_and_exits_1(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(config_file(tmp_path, history.store))
    history.delete(history.gw1.sealed[-1])  # TRUNCATED
    for m in ("block", "inspection", "part", "event"):  # MISSING (and ORPHAN index entries)
        history.store.query(f'DROP SERIES FROM "{m}" WHERE "gateway" = \'gw-2\'')
    stranger = GatewayChain("gw-x", tmp_path / "elsewhere")
    history.write(stranger.seal([measurement("SN-X1")]))  # UNKNOWN
    code, out = run(["verify", "--config", cfg, "--keys", str(history.keydir)], capsys)
    assert code == 1
    for kind in ("TRUNCATED: gateway gw-1", "MISSING: gateway gw-2", "UNKNOWN: gateway gw-x", "ORPHAN: gateway gw-2"):
        assert kind in out, out
    assert "RESULT: " in out and "TRUNCATED 1" in out and "MISSING 1" in out and "UNKNOWN 1" in out
    code, out = run(["verify", "--config", cfg, "--keys", str(history.keydir), "--json"], capsys)
    assert code == 1 and {"TRUNCATED", "MISSING", "UNKNOWN", "ORPHAN"} <= set(json.loads(out)["counts"])


def test_the_command_without_keys_says_signatures_were_not_checked(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(["verify", "--config", str(config_file(tmp_path, history.store))], capsys)
    assert code == 0 and "NOT CHECKED: no key directory" in out


def test_a_bad_key_directory_is_a_usage_error(
    tmp_path: Path, v1_store: InfluxV1Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["verify", "--config", str(config_file(tmp_path, v1_store)), "--keys", str(tmp_path / "nope")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
