"""The hash chain's building blocks: canonical bytes, sealed blocks, keys, checkpoints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.chain import blocks, checkpoints
from collector.chain.canonical import NotCanonical, canonical_text
from collector.chain.keys import Ed25519Signer, HmacSigner, KeyFileError, KeyRing, SignatureInvalid, generate

RECORDS: list[dict[str, Any]] = [
    {"kind": "measurement", "id": "0193a0a0-0000-7000-8000-000000000001", "value": "12.005", "verdict": "pass"},
    {"kind": "part", "id": "0193a0a0-0000-7000-8000-000000000002", "records": ["a", "b"], "verdict": "accept"},
]


class Header(TypedDict):
    """The keyword arguments of ``blocks.seal`` that every test here shares."""

    gateway: str
    site: str
    line: str
    station: str
    first_seq: int
    recorded_at: str
    clock_synced: bool
    prev_hash: str


HEADER = Header(
    gateway="gw-1",
    site="plant-a",
    line="L1",
    station="st-10",
    first_seq=7,
    recorded_at="2026-12-05T10:00:00.000001Z",
    clock_synced=True,
    prev_hash=blocks.GENESIS_HASH,
)


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    generate("gw-1", tmp_path)
    return tmp_path


def test_a_sealed_block_reads_back_with_its_records(keydir: Path) -> None:
    signer = Ed25519Signer.from_file(keydir / "gw-1.key")
    block = blocks.seal(RECORDS, signer=signer, **HEADER)
    back = blocks.read(block.text, strict=True)
    assert back.records == RECORDS and back.hash == block.hash and back.last_seq == 8
    KeyRing.load(keydir).verify("gw-1", back.key_id, back.digest, back.signature)
    first, second = back.materialise()
    assert (first["seq"], second["seq"]) == (7, 8)
    assert (first["recorded_at"], second["recorded_at"]) == (
        "2026-12-05T10:00:00.000001Z",
        "2026-12-05T10:00:00.000002Z",
    )
    assert first["gateway"] == "gw-1" and first["station"] == "st-10" and first["value"] == "12.005"


def test_the_hash_is_sha256_of_the_canonical_text() -> None:
    block = blocks.seal(RECORDS, signer=None, **HEADER)
    body = {k: v for k, v in json.loads(block.text).items() if k not in ("hash", "signature")}
    assert block.hash == hashlib.sha256(canonical_text(body).encode()).hexdigest()
    assert block.text.endswith(f',"hash":"{block.hash}"}}') and block.signature is None


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: t.replace('"12.005"', '"12.006"'), "hash does not match"),
        (lambda t: t[: t.rindex(',"hash"')] + "}", "no hash"),
        (lambda t: t.replace('"first_seq":7', '"first_seq":8'), "hash does not match"),
    ],
)
def test_any_edit_is_caught(edit: object, reason: str) -> None:
    text = blocks.seal(RECORDS, signer=None, **HEADER).text
    with pytest.raises(blocks.BlockError, match=reason):
        blocks.read(edit(text))  # type: ignore[operator]


def test_a_rehashed_edit_passes_the_hash_but_not_the_signature(keydir: Path) -> None:
    signer = Ed25519Signer.from_file(keydir / "gw-1.key")
    genuine = blocks.seal(RECORDS, signer=signer, **HEADER)
    forged_records = [dict(RECORDS[0], value="99.999"), RECORDS[1]]
    forged = blocks.seal(forged_records, signer=None, **HEADER)
    # keep the genuine key id and signature: the hash is recomputed, the signature cannot be
    head, _ = forged.text.rsplit(',"hash":', 1)
    head = head.replace('"key_id":null', f'"key_id":"{signer.key_id}"')
    digest = hashlib.sha256((head + "}").encode()).hexdigest()
    text = f'{head},"hash":"{digest}","signature":"{genuine.signature}"}}'
    block = blocks.read(text, strict=True)
    with pytest.raises(SignatureInvalid, match="does not match"):
        KeyRing.load(keydir).verify("gw-1", block.key_id, block.digest, block.signature)


def test_non_canonical_text_is_refused_in_strict_mode() -> None:
    body = json.loads(blocks.seal(RECORDS, signer=None, **HEADER).text)
    del body["hash"]
    body["records"][0]["note"] = "Prüfung"
    # sorted and compact, but with \u escapes: the hash binds these bytes, yet they are not canonical
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    text = text[:-1] + ',"hash":"' + hashlib.sha256(text.encode()).hexdigest() + '"}'
    assert blocks.read(text).records[0]["note"] == "Prüfung"
    with pytest.raises(blocks.BlockError, match="not canonical"):
        blocks.read(text, strict=True)


def test_records_may_not_carry_the_blocks_keys() -> None:
    block = blocks.seal([dict(RECORDS[0], seq=3)], signer=None, **HEADER)
    with pytest.raises(blocks.BlockError, match="belong to the block"):
        blocks.read(block.text)


def test_floats_have_no_canonical_form() -> None:
    with pytest.raises(NotCanonical, match="float"):
        canonical_text({"value": 1.5})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
)


@given(
    records=st.lists(
        st.dictionaries(
            st.text(min_size=1).filter(lambda k: k not in blocks.MATERIALISED_KEYS), json_values, max_size=4
        ),
        min_size=1,
        max_size=3,
    ),
    site=st.text(min_size=1),
    station=st.text(min_size=1),
    synced=st.booleans(),
)
def test_the_spliced_header_is_the_canonical_encoding(
    records: list[dict[str, object]], site: str, station: str, synced: bool
) -> None:
    try:
        texts = [canonical_text(r) for r in records]
    except NotCanonical:
        return  # lone surrogates: no UTF-8 form, refused before sealing
    header = dict(HEADER, site=site, station=station, clock_synced=synced)
    block = blocks.seal(records, signer=None, encoded=texts, **header)  # type: ignore[arg-type]
    body = dict(header, key_id=None, records=records, schema_version=2)
    try:
        expected = canonical_text(body)
    except NotCanonical:
        return
    assert block.text == expected[:-1] + f',"hash":"{block.hash}"}}'
    assert blocks.read(block.text, strict=True).records == records


def test_hmac_blocks_verify_with_the_shared_secret(tmp_path: Path) -> None:
    (tmp_path / "gw-1.hmac").write_text("s3cret\n")
    block = blocks.seal(RECORDS, signer=HmacSigner(b"s3cret"), **HEADER)
    ring = KeyRing.load(tmp_path)
    ring.verify("gw-1", block.key_id, block.digest, block.signature)
    with pytest.raises(SignatureInvalid):
        ring.verify("gw-1", block.key_id, block.digest, "0" * 64)


def test_the_register_binds_gateways_and_refuses_strangers(keydir: Path) -> None:
    (keydir / "register.yaml").write_text("gateways:\n  gw-1: {site: plant-a, line: L1, stations: [st-10]}\n")
    ring = KeyRing.load(keydir)
    entry = ring.get("gw-1")
    assert entry is not None and entry.stations == frozenset({"st-10"}) and entry.site == "plant-a"
    with pytest.raises(SignatureInvalid, match="not in the register"):
        ring.verify("gw-9", "abc", b"\0" * 32, "00")
    (keydir / "register.yaml").write_text("gateways:\n  gw-2: {site: x}\n")
    with pytest.raises(KeyFileError, match="gw-2"):
        KeyRing.load(keydir)


def test_a_rotated_key_keeps_old_blocks_verifiable(tmp_path: Path) -> None:
    _, _, first = generate("gw-1", tmp_path)
    old = Ed25519Signer.from_file(tmp_path / "gw-1.key")
    (tmp_path / "gw-1.key").rename(tmp_path / "gw-1.key.old")
    _, _, second = generate("gw-1", tmp_path)
    assert first != second
    ring = KeyRing.load(tmp_path)
    block = blocks.seal(RECORDS, signer=old, **HEADER)
    ring.verify("gw-1", block.key_id, block.digest, block.signature)
    with pytest.raises(KeyFileError, match="never overwritten"):
        generate("gw-1", tmp_path)
    assert (tmp_path / "gw-1.key").stat().st_mode & 0o777 == 0o600


def test_checkpoints_are_signed_and_tamper_evident(keydir: Path) -> None:
    signer = Ed25519Signer.from_file(keydir / "gw-1.key")
    cp = checkpoints.make("gw-1", 42, "ab" * 32, 1_765_000_000_000_000, signer)
    back = checkpoints.read(cp.text)
    assert (back.head_seq, back.head_hash, back.gateway) == (42, "ab" * 32, "gw-1")
    ring = KeyRing.load(keydir)
    ring.verify("gw-1", back.key_id, back.digest, back.signature)
    forged = checkpoints.read(cp.text.replace('"head_seq":42', '"head_seq":41'))
    with pytest.raises(SignatureInvalid):
        ring.verify("gw-1", forged.key_id, forged.digest, forged.signature)
