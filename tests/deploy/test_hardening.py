"""The units set MemoryDenyWriteExecute=yes: check that the collector works under it.

systemd cannot start units here (it is not PID 1), but Linux 6.3+ offers the same
restriction to any process: prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) refuses every
mapping that is writable and executable, or becomes executable, as systemd's seccomp
filter does. A child process turns it on, proves that it is in force, then does what the
daemons do: imports every module, parses a configuration, journals records in SQLite,
asks the kernel whether the clock is synchronised, sets up TLS and serves metrics.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, REPO

CHILD = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)  # the kernel has no MDWE (before Linux 6.3)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        sys.exit(78)  # not in force
    import importlib, pkgutil, re, ssl, urllib.request
    import collector, drivers, simulators
    for pkg in (collector, drivers, simulators):
        for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(mod.name)
    from pathlib import Path
    from collector import clock, config
    from collector.gateway.journal import Journal
    from collector.metrics import MetricsServer, Metric, journal_status
    tmp = Path(sys.argv[1])
    example = Path(sys.argv[2]).read_text()
    secret = tmp / "secret"
    secret.write_text("s3cret-x")
    register = tmp / "people.yaml"
    register.write_text("users: []")
    example = example.replace("/etc/inspection-collector/people.yaml", str(register))
    config.parse(re.sub(r"\\{file: [^}]+\\}", "{file: %s}" % secret, example), "gateway.yaml")
    assert clock.kernel_synchronised() is not None
    journal = Journal(tmp / "journal.sqlite", "gw-1")
    journal.append([{"id": "a", "kind": "audit", "site": "s", "line": "l", "station": "s", "event": "x"}])
    assert journal_status(tmp / "journal.sqlite").last_seq == 1
    journal.close()
    ctx = ssl.create_default_context()
    with MetricsServer("127.0.0.1", 0, lambda: [Metric("up", "gauge", "Up.", [({}, 1)])]) as server:
        assert b"up 1" in urllib.request.urlopen(server.url, timeout=5).read()
    print("ok")
    """
)


def test_the_collector_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(DEPLOY / "config" / "gateway.yaml.example")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    if out.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert out.returncode != 78, "PR_SET_MDWE did not refuse a writable and executable mapping"
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
