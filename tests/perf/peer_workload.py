"""Benchmark: the peer workload, end to end through the real gateway.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/peer_workload.py                          # 100/100 ms, 200/10 ms, 200/5 ms
    .venv/bin/python tests/perf/peer_workload.py --loads 200:10 --duration 20
    .venv/bin/python tests/perf/peer_workload.py --loads 200:10 --profile /tmp/pw   # cProfile per thread

The workload the peers (ThingsBoard IoT Gateway, Node-RED) were measured with: a Modbus TCP
server whose holding registers change every 10 ms, the gateway polling N of them every P ms
into an automatic station whose plan binds every register to a characteristic, records
counted at an MQTT subscriber. Here every point is judged, journaled (signed block, SQLite
``synchronous=FULL``), published with QoS 1 and counted where it arrives.

For each load ``N:P`` in ``--loads`` (N registers, P ms; default ``100:100,200:10,200:5``) the
script runs itself again in a fresh process (so that peak RSS is that load's alone), which:

1. starts the PLC simulator (``python -m simulators.plc``, a process of its own) whose
   holding registers 100..100+N churn every ``--churn-ms`` (default 10);
2. starts a real Mosquitto (``collector.testing.services.Mosquitto``) and a subscriber in a
   process of its own that counts the measurement records inside the blocks it receives
   (each block once, by its first sequence number);
3. builds a gateway configuration: a plan of N characteristics ``C001..``, one automatic
   station (fixed part number, serials numbered by the station, no operator), one Modbus
   TCP device whose N uint16 points are each bound to a characteristic by channel, polled
   every P ms; Ed25519 signing with a key made for the run;
4. runs ``collector.gateway.daemon.Gateway`` with its drivers, discards ``--warmup`` seconds,
   measures ``--duration`` seconds, then stops the gateway (the stop is timed).

One JSON line per load on stdout (logs on stderr):

* ``points_per_s`` delivered (measurement records counted at the subscriber in the window)
  and ``offered_points_per_s`` (N * 1000 / P);
* ``cpu_us_per_point``: user+system CPU of the gateway process (``getrusage``) over the
  window per delivered point. The process holds only the gateway: its processing thread,
  the publisher, paho's network loop, the Modbus driver thread and an idle main thread that
  samples memory every 0.25 s; the simulator, Mosquitto and the subscriber are other
  processes. ``cpu_us_per_point_by_thread`` splits it (``/proc/self/task``, 10 ms ticks);
* ``peak_rss_mb`` (``ru_maxrss``), ``rss_mb`` at the start and end of the window;
* ``journal_bytes_per_point``: the journal's bytes in use (pages of the SQLite file and its
  WAL in use) over the measurement records it holds, at the end of the window;
* ``polls`` made and ``polls_due`` (window / P), ``overruns`` (the driver's counter: polls
  that could not start on time);
* ``lost``: readings the gateway counted as lost (queue full, stop), ``queue_high``;
  ``stop_s``: how long ``Gateway.stop()`` took, and what it left unjournaled.

Exit status 1 when a load delivered no point or the gateway lost readings without counting.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import logging
import os
import platform
import pstats
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.perf.modbus_poll import rss_mb, start_simulator, thread_cpu  # noqa: E402

log = logging.getLogger("bench.peer_workload")
PREFIX = "peer"
GATEWAY = "gw-peer-01"

CONFIG = """\
gateway:
  id: {gateway}
  site: plant-1
  line: line-a
  journal: {journal}
  signing: {{key_file: {key}}}
mqtt:
  host: {host}
  port: {port}
  topic_prefix: {prefix}
gauges:
  - {{id: PLC-1, type: plc-sensor, calibration_due: "2099-01-01"}}
plans:
  - part_number: PW-1
    revision: A
    characteristics:
{characteristics}
stations:
  - id: st-plc
    plan: PW-1
    part: {{part_number: PW-1, serial: "PW{{n:08d}}", operator: null}}
    require_operator: false     # automatic: the PLC measures, nobody signs in
    devices:
      - id: plc-1
        driver: modbus
        gauge: PLC-1
        transport: tcp
        host: 127.0.0.1
        port: {plc_port}
        timeout: 0.5
        channels: {{{channels}}}
        slaves:
          - unit: 1
            poll_interval: {interval}
            points: [{points}]
"""


def build_config(workdir: Path, broker: Any, plc_port: int, registers: int, interval_s: float) -> Any:
    from collector import config as config_mod
    from collector.chain.keys import generate

    key, _, _ = generate(GATEWAY, workdir / "keys")
    # registers count up from 0 and wrap at 65536: the band holds every value they can take
    chars = "\n".join(
        f'      - {{id: C{i:03d}, name: "register {100 + i}", lsl: "0", usl: "65535", unit: N, decimals: 0}}'
        for i in range(registers)
    )
    text = CONFIG.format(
        gateway=GATEWAY,
        journal=workdir / "journal.sqlite",
        key=key,
        host=broker.host,
        port=broker.port,
        prefix=PREFIX,
        characteristics=chars,
        plc_port=plc_port,
        channels=", ".join(f"r{i}: C{i:03d}" for i in range(registers)),
        interval=interval_s,
        points=", ".join(f"{{name: r{i}, address: {100 + i}, unit: N}}" for i in range(registers)),
    )
    return config_mod.parse(text, "<peer_workload>")


# -- the subscriber (a process of its own) ------------------------------------------------------
def subscriber(host: str, port: int) -> int:
    """Count measurement records in the blocks published under PREFIX; print the total every 0.1 s."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    seen: set[int] = set()
    count = [0]
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        if not message.topic.endswith("/record"):
            return
        n = 0
        for line in message.payload.split(b"\n"):
            block = json.loads(line)
            if block["first_seq"] in seen:
                continue  # sent again (after a reconnect): counted once
            seen.add(block["first_seq"])
            n += sum(1 for r in block["records"] if r.get("kind") == "measurement")
        with lock:
            count[0] += n

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="peer-subscriber")
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/#", qos=1)
    client.connect(host, port)
    client.loop_start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(0.1)
            with lock:
                print(f"{time.monotonic():.4f} {count[0]}", flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    finally:
        client.loop_stop()


class Counted:
    """The subscriber process's running count, read by a thread of ours."""

    def __init__(self, host: str, port: int) -> None:
        cmd = [sys.executable, __file__, "--subscribe", f"{host}:{port}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the subscriber did not start")
        self.count = 0
        self._thread = threading.Thread(target=self._read, name="subscriber-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.count = int(line.split()[1])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- one load ------------------------------------------------------------------------------------
def threads_by_name() -> dict[str, int]:
    out: dict[str, int] = {}
    for t in threading.enumerate():
        if t.native_id is None or t.name == "subscriber-reader":
            continue
        name = t.name.split("-")[0].split(":")[0] if t is not threading.main_thread() else "main"
        name = {"Thread": "paho"}.get(name, name)
        out[name if name not in out else f"{name}{t.native_id}"] = t.native_id
    return out


def cpu_of(tids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, tid in tids.items():
        with contextlib.suppress(OSError):
            out[name] = thread_cpu(tid)
    return out


def one_load(args: argparse.Namespace, registers: int, interval_ms: float) -> dict[str, Any]:
    from collector.gateway.daemon import Gateway
    from collector.testing.services import Mosquitto

    interval_s = interval_ms / 1000
    base = Path(tempfile.mkdtemp(prefix="peer-workload-", dir=args.dir))
    broker = Mosquitto(base / "broker")
    sim, plc_port = start_simulator([1], [], args.churn_ms, registers)
    gateway: Gateway | None = None
    counted: Counted | None = None
    profiles: dict[str, cProfile.Profile] = {}
    result: dict[str, Any] = {
        "benchmark": "peer_workload",
        "registers": registers,
        "interval_ms": interval_ms,
        "offered_points_per_s": round(registers * 1000 / interval_ms),
    }
    try:
        broker.start()
        counted = Counted(broker.host, broker.port)
        (base / "gateway").mkdir()
        config = build_config(base / "gateway", broker, plc_port, registers, interval_s)
        gateway = Gateway(config)
        if args.profile:
            profiles = install_profiles(gateway)
        gateway.start()
        driver: Any = gateway.drivers[0]
        time.sleep(args.warmup)
        tids = threads_by_name()
        rss0 = rss_mb()
        c0, p0, o0 = counted.count, driver.polls, driver.overruns
        lost0, m0 = gateway.stats.lost, gateway.stats.measurements
        th0, ru0, t0 = cpu_of(tids), resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        rss_max = rss0
        end = t0 + args.duration
        while time.monotonic() < end:
            time.sleep(0.25)
            rss_max = max(rss_max, rss_mb())
        th1, ru1, t1 = cpu_of(tids), resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        c1, p1, o1 = counted.count, driver.polls, driver.overruns
        lost1, m1 = gateway.stats.lost, gateway.stats.measurements
        rss1 = rss_mb()
        journal = gateway.journal
        used, measurements = journal.used_bytes, gateway.stats.measurements
        pub = gateway.publisher.stats
        elapsed = t1 - t0
        points = c1 - c0
        cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        stop0 = time.monotonic()
        gateway.stop(timeout=5.0)
        stop_s = time.monotonic() - stop0
        result.update(
            ok=points > 0,
            duration_s=round(elapsed, 2),
            points=points,
            points_per_s=round(points / elapsed),
            judged_per_s=round((m1 - m0) / elapsed),
            cpu_us_per_point=round(cpu_s / points * 1e6, 2) if points else None,
            cpu_user_sys_s=[round(ru1.ru_utime - ru0.ru_utime, 3), round(ru1.ru_stime - ru0.ru_stime, 3)],
            cpu_us_per_point_gateway_threads=round(
                sum(th1[k] - th0[k] for k in th1 if k in th0 and k != "main") / points * 1e6, 2
            )
            if points
            else None,
            cpu_us_per_point_by_thread={
                k: round((th1[k] - th0[k]) / points * 1e6, 2) for k in th1 if k in th0 and points
            },
            peak_rss_mb=round(ru1.ru_maxrss / 1024, 1),
            rss_mb={"start": round(rss0, 1), "end": round(rss1, 1), "max_sampled": round(rss_max, 1)},
            journal_bytes_per_point=round(used / measurements, 1) if measurements else None,
            records_per_block=round(pub.records_sent / pub.blocks_sent, 1) if pub.blocks_sent else None,
            records_per_message=round(pub.records_sent / pub.messages_sent, 1) if pub.messages_sent else None,
            polls=p1 - p0,
            polls_due=round(elapsed / interval_s),
            overruns=o1 - o0,
            lost=lost1 - lost0,
            stop_s=round(stop_s, 2),
            lost_at_stop=gateway.stats.lost - lost1,
            received=gateway.stats.received,
            judged=gateway.stats.readings,
        )
        gateway = None
    finally:
        if gateway is not None:
            gateway.stop(timeout=5.0)
        if counted is not None:
            counted.stop()
        broker.stop()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        if args.profile:
            dump_profiles(profiles, args.profile, f"{registers}x{interval_ms:g}")
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return result


# -- profiling (cProfile sees only the thread it runs in) ----------------------------------------
def install_profiles(gateway: Any) -> dict[str, cProfile.Profile]:
    profiles: dict[str, cProfile.Profile] = {}

    def wrap(name: str, fn: Any) -> Any:
        def profiled(*a: Any, **kw: Any) -> Any:
            prof = profiles.setdefault(name, cProfile.Profile(time.thread_time))
            return prof.runcall(fn, *a, **kw)

        return profiled

    gateway._run = wrap("gateway", gateway._run)
    gateway.publisher._run = wrap("publisher", gateway.publisher._run)
    for driver in gateway.drivers:
        driver._run = wrap("driver", driver._run) if hasattr(driver, "_run") else driver._run
    return profiles


def dump_profiles(profiles: dict[str, cProfile.Profile], prefix: str, tag: str) -> None:
    for name, prof in profiles.items():
        path = f"{prefix}.{tag}.{name}.pstats"
        prof.dump_stats(path)
        out = __import__("io").StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        log.warning("profile of %s (%s):\n%s", name, path, out.getvalue())


def parse_loads(text: str) -> list[tuple[int, float]]:
    out = []
    for part in text.split(","):
        n, p = part.split(":")
        out.append((int(n), float(p)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default="100:100,200:10,200:5", help="N:P (registers:ms), comma-separated")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds discarded at the start of each load")
    parser.add_argument("--churn-ms", type=float, default=10.0, help="the simulator's registers change this often")
    parser.add_argument("--dir", default=None, help="create the working directory under DIR")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--profile", default=None, help="cProfile the gateway's threads into PREFIX.*.pstats")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # one load, in this process
    parser.add_argument("--subscribe", default=None, help=argparse.SUPPRESS)  # the subscriber process
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.subscribe:
        host, port = args.subscribe.rsplit(":", 1)
        return subscriber(host, int(port))
    if args.one:
        ((n, p),) = parse_loads(args.one)
        result = one_load(args, n, p)
        result.update(python=platform.python_version(), cpus=os.cpu_count())
        print(json.dumps(result), flush=True)
        return 0 if result.get("ok") else 1
    rc = 0
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for n, p in parse_loads(args.loads):
        cmd = [sys.executable, __file__, *strip_loads(passthrough), "--one", f"{n}:{p:g}"]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
        line = (
            done.stdout.strip().splitlines()[-1]
            if done.stdout.strip()
            else json.dumps(
                {"benchmark": "peer_workload", "registers": n, "interval_ms": p, "ok": False, "exit": done.returncode}
            )
        )
        print(line, flush=True)
        rc = rc or done.returncode
    return rc


def strip_loads(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--loads":
            skip = True
            continue
        if a.startswith("--loads="):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
