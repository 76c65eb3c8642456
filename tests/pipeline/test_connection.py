"""Bounded and loud: a broker outage is said once (and reminded), the link is back within
seconds of the broker; a SIGTERM under overload finishes within 5 s and accounts for every
reading the drivers handed over (journaled, or counted as lost)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.config import Config
from collector.gateway.daemon import Gateway
from collector.recorder.daemon import Recorder
from collector.testing.services import Mosquitto
from tests.helpers import wait_for
from tests.pipeline.conftest import REPO, gateway_of, journal_head, journal_records, store_of


def logged(caplog: pytest.LogCaptureFixture, pattern: str) -> list[float]:
    """When (record.created) each log line matching ``pattern`` was made."""
    return [r.created for r in caplog.records if re.search(pattern, r.getMessage())]


def test_a_broker_outage_is_said_once_and_the_link_is_back_within_seconds(
    stack_config: Callable[..., tuple[Path, Config]], broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    # the shipped defaults for the back-off, not the tests' quick ones
    _, cfg = stack_config(mqtt={"reconnect_min_delay": 0.5, "reconnect_max_delay": 3.0})
    gateway = Gateway(cfg, start_drivers=False)
    recorder = Recorder(cfg, store_of(cfg))
    address = rf"cannot reach broker {broker.host}:{broker.port}: Connection refused"
    with caplog.at_level(logging.INFO):
        gateway.start()
        recorder.start()
        try:
            wait_for(lambda: gateway.publisher.connected and recorder.connected.is_set(), what="both connected")
            down = time.time()
            broker.stop()
            wait_for(lambda: len(logged(caplog, address)) >= 2, timeout=5, what="'cannot reach broker' from both")
            assert all(t - down < 5 for t in logged(caplog, address))
            time.sleep(4)  # several failed attempts more: still one line each (reminders come after a minute)
            assert len(logged(caplog, address)) == 2
            assert len(logged(caplog, "lost the connection to broker")) == 2
            broker.start()
            back = time.monotonic()
            wait_for(lambda: gateway.publisher.connected and recorder.connected.is_set(), timeout=5, what="both back")
            assert time.monotonic() - back < 5
            assert len(logged(caplog, r"connected to broker .* again after")) == 2
        finally:
            gateway.stop()
            recorder.stop()


def test_a_gateway_that_starts_without_its_broker_says_so(
    stack_config: Callable[..., tuple[Path, Config]], caplog: pytest.LogCaptureFixture
) -> None:
    _, cfg = stack_config(mqtt={"port": 1})
    gateway = Gateway(cfg, start_drivers=False)
    with caplog.at_level(logging.WARNING):
        started = time.time()
        gateway.start()
        try:
            wait_for(lambda: logged(caplog, "cannot reach broker 127.0.0.1:1: "), timeout=5, what="the line")
            assert logged(caplog, "cannot reach broker")[0] - started < 5
        finally:
            gateway.stop()


#: ``collector gateway`` with a PLC-like driver that hands over poll cycles of 200 readings as
#: fast as it can: far more than a gateway judges, so the queue stays full. The stop path is
#: the command's own (wait for the signal, then Gateway.stop()).
FLOODED_GATEWAY = textwrap.dedent(
    """
    import sys, threading, time
    from decimal import Decimal
    from collector import cli, config
    from collector.gateway.daemon import Gateway
    from drivers.base import Driver, Reading

    class Flood(Driver):
        name = "flood"

        def start(self, sink):
            self._thread = threading.Thread(target=self._run, args=(sink,))
            self._thread.start()

        def _run(self, sink):
            now = time.time_ns()
            cycle = tuple(Reading("caliper-1", "01", Decimal("12.001"), "mm", b"01A+0012.001\\r", now + i)
                          for i in range(200))
            while not self._stop.is_set():
                sink(cycle)

        def stop(self):
            self._stop.set()
            self._thread.join(5)

    cli.setup_logging()
    stop = cli._stop_on_signal()
    cfg = config.load(sys.argv[1])
    gw = Gateway(cfg, start_drivers=False)
    gw.drivers.append(Flood(cfg.stations[0].devices[0].driver_config))
    gw.start()
    try:
        cli._wait(stop)
    finally:
        gw.stop()
    """
)


def test_sigterm_under_overload_finishes_in_5_s_and_accounts_for_every_reading(
    stack_config: Callable[..., tuple[Path, Config]], tmp_path: Path
) -> None:
    path, cfg = stack_config(gateway={"queue_size": 5000, "queue_timeout": 0.01})
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOODED_GATEWAY, str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
        )
    try:
        wait_for(lambda: "reading queue is full" in log.read_text(), timeout=30, what="the queue overflowing")
        journal = Path(gateway_of(cfg).journal)
        wait_for(lambda: journal_head(journal) > 20_000, timeout=30, what="the gateway busy for a while")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert elapsed < 5, f"SIGTERM took {elapsed:.1f} s"
    m = re.search(r"stopped: (\d+) reading\(s\) received, (\d+) judged, (\d+) lost", text)
    assert m is not None, text[-2000:]
    received, judged, lost = map(int, m.groups())
    measured = [r for r in journal_records(Path(gateway_of(cfg).journal)) if r["kind"] == "measurement"]
    assert lost > 0 and received == judged + lost
    assert len(measured) == judged  # every judged reading is in the journal
