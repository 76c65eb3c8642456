"""Benchmark: what sealing a block costs (hash, Ed25519 signature), per block and per record.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/signing_cost.py [--sizes 1,100,200,400,1000] [--rounds 2000]

A gateway seals the records one journal transaction produced for a station into one block:
``sha256`` of the block's canonical text, then one Ed25519 signature of that 32-byte hash
(``collector.chain.keys.Ed25519Signer``). Its cost is per block, so per record it falls with
the block's size: a caliper's block holds one record, the peer workload's (200 registers
polled every 10 ms) about 200 to 400. This builds real measurement records (every field a
gateway writes, ``tests.store.chains.measurement``), encodes each block once (not timed),
then times, per block size:

* ``sha256_us``: hashing the canonical text (``hashlib.sha256``);
* ``sign_us``: ``Ed25519Signer.sign`` of the hash;
* ``verify_us``: ``Ed25519PublicKey.verify`` of it (what the publisher's own check and the
  recorder pay per block);
* ``seal_us``: :func:`collector.chain.blocks.seal_text` (hash + signature + the line), and
  ``seal_us_per_record`` / ``sign_us_per_record``.

Best of three rounds of ``--rounds`` blocks each. One JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from collector.chain import blocks  # noqa: E402
from collector.chain.keys import Ed25519Signer, generate  # noqa: E402
from tests.store.chains import measurement  # noqa: E402


def best_us(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,100,200,400,1000", help="records per block, comma-separated")
    ap.add_argument("--rounds", type=int, default=2000, help="blocks timed per round (fewer for big blocks)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        private, _, _ = generate("gw-sign", Path(tmp) / "keys")
        signer = Ed25519Signer.from_file(private)
        public = signer.public_key
        runs = []
        for size in [int(s) for s in args.sizes.split(",")]:
            records = [measurement(f"SN-{size:07d}", f"C{j:03d}", f"12.{j % 1000:03d}") for j in range(size)]
            block = blocks.seal(
                records,
                gateway="gw-sign",
                site="plant-1",
                line="line-a",
                station="st-10",
                first_seq=1,
                recorded_at="2026-12-05T14:00:00.000000Z",
                clock_synced=True,
                prev_hash=blocks.GENESIS_HASH,
                signer=signer,
            )
            canonical = block.text[: block.text.index(',"hash":')] + "}"
            data = canonical.encode("utf-8")
            digest = hashlib.sha256(data).digest()
            signature = bytes.fromhex(signer.sign(digest))
            rounds = max(50, args.rounds // max(1, size // 100))
            sha = best_us(lambda data=data: hashlib.sha256(data).digest(), rounds)  # type: ignore[misc]
            sign = best_us(lambda digest=digest: signer.sign(digest), rounds)  # type: ignore[misc]
            verify = best_us(lambda s=signature, d=digest: public.verify(s, d), rounds)  # type: ignore[misc]
            seal = best_us(lambda c=canonical: blocks.seal_text(c, signer), rounds)  # type: ignore[misc]
            runs.append(
                {
                    "records_per_block": size,
                    "block_bytes": len(data),
                    "sha256_us": round(sha, 2),
                    "sign_us": round(sign, 2),
                    "verify_us": round(verify, 2),
                    "seal_us": round(seal, 2),
                    "sign_us_per_record": round(sign / size, 3),
                    "seal_us_per_record": round(seal / size, 3),
                }
            )
    print(json.dumps({"benchmark": "signing_cost", "python": platform.python_version(), "runs": runs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
