"""Benchmark: the recorder's cost of turning blocks into line protocol (``lines_for_block``).

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/block_lines.py [--records 200000]

What it does: seals ``--records`` realistic measurement records (every field a gateway
writes, 3-decimal values) into real Ed25519-signed blocks of 1, 5, 20 and 100 records (not
timed), then times :func:`collector.store.lineprotocol.lines_for_block` over all of them,
three rounds, best round reported. The recorder's target is 50,000 records/s into InfluxDB
(20 µs per record for everything: reading the message, checking the block and its
signature, building the lines and the write), so this step must stay a small part of it.
It prints one JSON line: µs per record and lines per record for each block size.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from collector.store.lineprotocol import lines_for_block  # noqa: E402
from tests.store.chains import GatewayChain, measurement  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (1, 5, 20, 100):
            chain = GatewayChain(f"gw-{size}", Path(tmp))
            sealed = []
            for n in range(args.records // size):
                serial = f"SN-{n // max(1, 40 // size):07d}"
                sealed.append(chain.seal([measurement(serial, f"C{j:03d}", f"12.{j % 1000:03d}") for j in range(size)]))
            best = float("inf")
            lines = 0
            for _ in range(3):
                t = time.perf_counter()
                lines = sum(len(lines_for_block(b)) for b in sealed)
                best = min(best, time.perf_counter() - t)
            records = len(sealed) * size
            results[f"{size}_per_block"] = {
                "us_per_record": round(best / records * 1e6, 2),
                "lines_per_record": round(lines / records, 2),
            }
    print(
        json.dumps(
            {
                "benchmark": "block_lines",
                "records": args.records,
                **results,
                "machine": f"{platform.machine()}, python {platform.python_version()}",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
