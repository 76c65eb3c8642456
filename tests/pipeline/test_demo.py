"""`collector demo` runs the whole stack, shows records flowing, verifies, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_binary

REPO = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and str(os.getpid()) != pid and "pytest" not in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def test_demo_shows_records_flowing_and_verifies(tmp_path: Path) -> None:
    require_binary("mosquitto")
    require_binary("influxd")
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "collector.cli", "demo", "--duration", "4", "--workdir", str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = re.findall(r"^record #\s*(\d+)\s+st-10 HX\d{6} (D1|L1|T1)", proc.stdout, re.MULTILINE)
    assert len(records) >= 5, proc.stdout
    summary = re.search(r"^(\d+) record\(s\) journaled by the gateway, (\d+) in InfluxDB", proc.stdout, re.MULTILINE)
    assert summary is not None and summary.group(1) == summary.group(2) != "0"
    assert "RESULT: intact" in proc.stdout
    assert "collector trace --serial HX000001" in proc.stdout
    assert processes_mentioning(str(workdir)) == []
