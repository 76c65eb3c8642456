"""Benchmark: gateway throughput and CPU cost per record, against a real Mosquitto.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/gateway_throughput.py [--records N]
        [--max-records-per-message M] [--max-inflight K] [--max-message-bytes B]
        [--max-queued Q] [--keep] [--profile PREFIX [--profile-clock cpu|wall]]

What it does:

1. starts a real Mosquitto (``collector.testing.services.Mosquitto``) on a free loopback port,
   with its data in a temporary directory;
2. builds a gateway configuration (one station, a plan of five characteristics, one
   gauge, one Mitutoyo device with a dummy port) and a ``Gateway(config,
   start_drivers=False)``: no serial port, no driver thread;
3. pre-builds the readings (``drivers.base.Reading``, Decimal values with 3 decimals
   around the nominals, about 2 % out of tolerance), starts the gateway and waits until
   it is connected to the broker;
4. times from the first ``gateway.submit()`` until every record is journaled (SQLite,
   ``synchronous=FULL``) and acknowledged by the broker (PUBACK, marked delivered in the
   journal: every reading processed, ``gateway.journal.backlog() == 0``).

A reading gives one measurement record, and the workflow may add others (a part record
when the plan is complete, a nonconformance per value out of tolerance): ``records`` and
``records_per_s`` and ``cpu_us_per_record`` count readings, i.e. measurement records, the
unit of the design targets; ``records_journaled`` and ``cpu_us_per_journaled_record``
count every record the run journaled, ``journaled_by_kind`` says which. The run fails
unless every reading became exactly one measurement record (none refused or lost).

No recorder runs, so the broker holds nothing for anybody: this measures what the gateway
process costs, not the rest of the pipeline. Mosquitto is another process and its CPU
time is not included in ``cpu_us_per_record``.

It prints exactly one JSON line of figures on stdout (logs go to stderr) and exits 1 if
not every record was acknowledged within ``--timeout`` seconds (the JSON line then says
``"ok": false``), 2 if the broker could not be started.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import platform
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from a checkout, installed or not
    sys.path.insert(0, str(REPO))

from collector import config as config_mod  # noqa: E402
from collector.chain.keys import generate  # noqa: E402
from collector.gateway.daemon import Gateway  # noqa: E402
from collector.testing.services import Mosquitto, ServiceError  # noqa: E402
from drivers.base import DeviceEvent, EventKind, Reading  # noqa: E402

log = logging.getLogger("bench.gateway_throughput")

DEVICE = "caliper-1"


@dataclass(frozen=True)
class Spec:
    """A characteristic of the benchmark plan, and how its readings are generated (in mm)."""

    id: str
    name: str
    nominal: str | None
    lsl: str | None
    usl: str | None
    unit: str
    decimals: int
    criticality: str
    centre_mm: Decimal  # where the generated readings are centred
    spread_mm: Decimal  # half-width of an in-tolerance reading's scatter
    out_mm: Decimal  # how far out an out-of-tolerance reading lands


# Five characteristics: two-sided, a coarser rounding (2 decimals from a 3-decimal gauge),
# an asymmetric band, a one-sided limit and a unit conversion (mm reading, µm spec), so
# that every branch of tolerance.judge and records.dec is in the mix.
SPECS = (
    Spec("D1", "Bore diameter", "12.000", "11.980", "12.020", "mm", 3, "critical",
         Decimal("12.000"), Decimal("0.015"), Decimal("0.030")),
    Spec("L1", "Overall length", "45.00", "44.95", "45.05", "mm", 2, "major",
         Decimal("45.000"), Decimal("0.040"), Decimal("0.080")),
    Spec("T1", "Flange thickness", "6.350", "6.340", "6.380", "mm", 3, "minor",
         Decimal("6.360"), Decimal("0.015"), Decimal("0.030")),
    Spec("R1", "Runout", None, None, "0.030", "mm", 3, "major",
         Decimal("0.015"), Decimal("0.012"), Decimal("0.025")),
    Spec("F1", "Flatness", None, None, "15.0", "um", 1, "minor",
         Decimal("0.008"), Decimal("0.006"), Decimal("0.010")),
)  # fmt: skip

CONFIG_YAML = """\
gateway:
  id: gw-bench-01
  site: plant-1
  line: line-a
  journal: {journal}
{signing}mqtt:
  host: {host}
  port: {port}
  topic_prefix: bench
  max_records_per_message: {max_records_per_message}
  max_inflight: {max_inflight}
  max_message_bytes: {max_message_bytes}
gauges:
  - {{id: CAL-0042, type: caliper, resolution: "0.001", unit: mm, calibration_due: "2027-06-30"}}
plans:
  - part_number: HX-4711
    revision: C
    description: benchmark plan
    characteristics:
{characteristics}
stations:
  - id: st-10
    plan: HX-4711
    part:
      part_number: HX-4711
      serial: "HX{{n:06d}}"
      lot: L2026-1121
      work_order: WO-88123
      operator: op-117
    devices:
      - id: {device}
        driver: mitutoyo
        gauge: CAL-0042
        port: {port_path}
        unit: mm
"""


def _characteristic_yaml(s: Spec) -> str:
    fields = {"id": s.id, "name": s.name, "unit": s.unit, "decimals": s.decimals, "criticality": s.criticality}
    for key in ("nominal", "lsl", "usl"):
        value = getattr(s, key)
        if value is not None:
            fields[key] = f'"{value}"'  # quoted: YAML would read 12.000 as the float 12.0
    body = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return f"      - {{{body}}}"


def signing_yaml(workdir: Path, signing: str) -> str:
    """The gateway's signing settings: a fresh Ed25519 key, an HMAC secret, or none."""
    if signing == "ed25519":
        private, _, _ = generate("gw-bench-01", workdir / "keys")
        return f"  signing: {{key_file: {private}}}\n"
    if signing == "hmac":
        return "  signing_key: benchmark-secret\n"
    return ""


def build_config(
    workdir: Path,
    broker: Mosquitto,
    max_records_per_message: int,
    max_inflight: int,
    max_message_bytes: int,
    signing: str = "ed25519",
) -> Any:
    text = CONFIG_YAML.format(
        journal=workdir / "journal.sqlite",
        signing=signing_yaml(workdir, signing),
        host=broker.host,
        port=broker.port,
        max_records_per_message=max_records_per_message,
        max_inflight=max_inflight,
        max_message_bytes=max_message_bytes,
        characteristics="\n".join(_characteristic_yaml(s) for s in SPECS),
        device=DEVICE,
        port_path=workdir / "dev" / DEVICE,  # never opened: the gateway starts no driver
    )
    return config_mod.parse(text, "<gateway_throughput>")


def mitutoyo_frame(value: Decimal) -> bytes:
    """The frame a Mitutoyo adapter sends for ``value``: ``01A+0012.345`` + CR."""
    sign = "-" if value < 0 else "+"
    return f"01A{sign}{abs(value):08.3f}\r".encode("ascii")


def build_readings(n: int, distinct: int, fail_rate: float, seed: int) -> tuple[list[Reading], int]:
    """A pool of pre-built readings in plan order; returns (pool, failures among the first ``n``).

    The benchmark submits ``n`` readings by cycling through the pool. Readings are
    immutable and the gateway keeps no reference to them, so reusing a pool keeps the
    benchmark's own memory small (``peak_rss_mb`` is then mostly the gateway's, not the
    test data's). The pool is a whole number of plan cycles, so characteristic i of the
    plan always receives a reading meant for it.
    """
    k = len(SPECS)
    size = max(k, min(n, distinct) // k * k)
    rng = random.Random(seed)
    quantum = Decimal("0.001")
    base_ns = time.time_ns()
    pool: list[Reading] = []
    fails_in_pool: list[bool] = []
    for i in range(size):
        s = SPECS[i % k]
        out = rng.random() < fail_rate
        if out:
            offset = s.out_mm if rng.random() < 0.5 else -s.out_mm
            if s.lsl is None:  # one-sided: only the upper side fails
                offset = abs(offset)
            value = s.centre_mm + offset
        else:
            value = s.centre_mm + Decimal(rng.uniform(-1, 1)) * s.spread_mm
        value = value.quantize(quantum)
        pool.append(
            Reading(
                device=DEVICE,
                channel="01",
                value=value,
                unit="mm",
                raw=mitutoyo_frame(value),
                timestamp_ns=base_ns + i * 1_000_000,
            )
        )
        fails_in_pool.append(out)
    failures = sum(fails_in_pool[i % size] for i in range(n))
    return pool, failures


def thread_cpu_s(native_id: int | None) -> float | None:
    """User+system CPU seconds of one thread of this process (Linux), or None."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def filesystem_of(path: Path) -> str | None:
    """The file system type holding ``path`` (fsync cost differs a lot: ext4 vs tmpfs)."""
    best, fstype = "", None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            target = str(path.resolve())
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, fstype = mount, parts[2]
    return fstype


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "arch": platform.machine(),
        "nproc": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return info


def versions() -> dict[str, str]:
    out = {"sqlite": __import__("sqlite3").sqlite_version}
    for dist in ("paho-mqtt", "pydantic", "PyYAML"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def journal_synchronous(gateway: Gateway) -> str:
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    journal = gateway.journal
    with journal._lock:  # read back what is in force, not what we believe the default is
        value = journal._db.execute("PRAGMA synchronous").fetchone()[0]
    return names.get(int(value), str(value))


def wait_connected(gateway: Gateway, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not gateway.publisher.connected:
        if time.monotonic() > deadline:
            raise ServiceError(f"the gateway did not connect to the broker within {timeout:g} s")
        time.sleep(0.01)


def barrier(gateway: Gateway, n: int, deadline: float, poll: float) -> bool:
    """Return once every item submitted before this call has been processed and journaled.

    A reading may give more than one record (a part record when the plan is complete, a
    nonconformance for a value out of tolerance), so the number of records to wait for is
    not known in advance. Instead two marker events go through the gateway's queue, which
    is processed in order: the gateway counts a device event the moment it meets it, and
    journals a batch before it takes the next one from the queue, so once the second
    marker (submitted after the first was counted) is counted, the batch that held the
    first marker, and everything before it, is journaled. Only public API is used.
    """
    while gateway.stats.readings < n:  # coarse first: watching costs CPU that is measured too
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    events = gateway.stats.device_events
    for i in (1, 2):
        device = f"bench-barrier-{i}"
        key = f"{device}:{EventKind.CONNECTED.value}"
        gateway.submit(DeviceEvent(device, EventKind.CONNECTED, "benchmark barrier"))
        while events.get(key, 0) < 1:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)
    return True


def wait_delivered(gateway: Gateway, records0: int, acked0: int, deadline: float, poll: float) -> bool:
    """After :func:`barrier`: until every record journaled since ``records0`` is acknowledged.

    ``records0`` and ``acked0`` are the gateway's record count and the publisher's
    acknowledged count before the first reading was submitted.

    The cheap counters are polled first; the journal's ``backlog()`` (a query under the
    journal's lock, which the gateway and publisher threads need) only once the broker
    has acknowledged as many records, so that watching does not slow what is watched.
    """
    pub = gateway.publisher.stats
    while time.monotonic() < deadline:
        if pub.records_acked - acked0 >= gateway.stats.records - records0 and gateway.journal.backlog() == 0:
            return True
        time.sleep(poll)
    return False


def io_write_bytes() -> int | None:
    """Bytes this process caused to be written to storage (/proc/self/io write_bytes)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the gateway's code differed from it (a dirty tree)."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = functools.partial(subprocess.run, cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
        head = git(["git", "rev-parse", "--short=12", "HEAD"])
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            status = git(["git", "status", "--porcelain", "--untracked-files=no", "--", "collector", "drivers"])
            out["dirty"] = bool(status.stdout.strip())
            if out["dirty"]:  # identifies the uncommitted state measured
                diff = git(["git", "diff", "HEAD", "--", "collector", "drivers"])
                out["diff_sha256"] = hashlib.sha256(diff.stdout.encode()).hexdigest()[:12]
    return out


class ThreadProfiles:
    """cProfile for the gateway's own threads (cProfile sees only the thread it runs in).

    Each thread's entry point is wrapped on the instance before the thread starts; the
    statistics are written after the threads ended. Profiling slows everything down
    several times: use it to see where the time goes, never for the figures.
    """

    def __init__(self, prefix: Path, clock: str = "cpu") -> None:
        self.prefix = prefix
        # cpu: each thread's own CPU time, so a call that gives up the GIL (os.urandom,
        # SQLite, sockets) is not charged for the time other threads held it; wall: time
        # spent in the call, waits included (shows where a thread stalls)
        self.timer = time.thread_time if clock == "cpu" else time.perf_counter
        self.profiles: dict[str, cProfile.Profile] = {}

    def wrap(self, name: str, fn: Any) -> Any:
        def profiled(*a: Any, **kw: Any) -> Any:
            prof = cProfile.Profile(self.timer)
            self.profiles[name] = prof
            prof.enable()
            try:
                return fn(*a, **kw)
            finally:
                prof.disable()

        return profiled

    def install(self, gateway: Gateway) -> None:
        gateway._run = self.wrap("gateway", gateway._run)  # type: ignore[method-assign]
        pub = gateway.publisher
        pub._run = self.wrap("publisher", pub._run)  # type: ignore[method-assign]
        pub.client._thread_main = self.wrap("paho", pub.client._thread_main)  # type: ignore[method-assign]

    def dump(self, top: int = 30) -> None:
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        for name, prof in self.profiles.items():
            path = Path(f"{self.prefix}.{name}.pstats")
            prof.dump_stats(path)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
            log.info("profile of the %s thread (%s), top %d by own time:\n%s", name, path, top, out.getvalue())


def run(args: argparse.Namespace) -> int:  # noqa: C901 - a benchmark: its modes and their clean-up in one function
    n = args.records
    timeout = args.timeout if args.timeout is not None else 60.0 + n / 500
    base = Path(tempfile.mkdtemp(prefix="gw-throughput-", dir=args.dir))
    log.info("working directory %s", base)
    broker = Mosquitto(base / "broker")
    gateway: Gateway | None = None
    profiles = ThreadProfiles(Path(args.profile).resolve(), args.profile_clock) if args.profile else None
    result: dict[str, Any] = {"benchmark": "gateway_throughput", "records": n, "ok": False}
    try:
        try:
            broker.start()
        except ServiceError as exc:
            log.error("cannot start Mosquitto: %s", exc)
            result.update(ok=False, error=f"broker: {exc}")
            return 2
        log.info("mosquitto pid %s on %s:%s", broker.pid, broker.host, broker.port)
        (base / "gateway").mkdir()
        config = build_config(
            base / "gateway",
            broker,
            args.max_records_per_message,
            args.max_inflight,
            args.max_message_bytes,
            args.signing,
        )
        assert config.gateway is not None

        pool, failures = build_readings(n, args.distinct, args.fail_rate, args.seed)
        log.info("%d distinct readings pre-built for %d (%d expected out of tolerance)", len(pool), n, failures)

        gateway = Gateway(config, start_drivers=False)
        if profiles is not None:
            profiles.install(gateway)
        gateway.start()
        wait_connected(gateway, 10.0)
        time.sleep(0.2)  # let the 'online' status messages go out and be acknowledged
        sync = journal_synchronous(gateway)
        threads = {
            "gateway": getattr(gateway._thread, "native_id", None),
            "publisher": getattr(gateway.publisher._thread, "native_id", None),
            "paho": getattr(getattr(gateway.publisher.client, "_thread", None), "native_id", None),
            "main": threading.current_thread().native_id,
        }
        rss_start = rss_mb()

        submit = gateway.submit
        records0 = gateway.stats.records  # the gateway may journal a record of its own at start
        acked0 = gateway.publisher.stats.records_acked
        kinds0 = dict(gateway.stats.by_kind)
        commits0 = dict(gateway.journal.commits)
        written0 = io_write_bytes()
        if args.poll_cycle > 1:  # a PLC: one item per poll cycle of that many readings
            k = args.poll_cycle
            pool = [tuple(pool[i : i + k]) for i in range(0, len(pool) - k + 1, k)]  # type: ignore[misc]
        cpu0 = {name: thread_cpu_s(tid) for name, tid in threads.items()}
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        if args.poll_cycle > 1:
            for cycle in itertools.islice(itertools.cycle(pool), n // args.poll_cycle):
                submit(cycle)
        elif args.max_queued <= 0:  # as fast as possible: the gateway's bounded queue makes this wait
            for reading in itertools.islice(itertools.cycle(pool), n):
                submit(reading)
        else:  # as fast as the gateway takes them, never more than max_queued ahead
            stats, ahead, sent = gateway.stats, args.max_queued, 0
            readings = itertools.islice(itertools.cycle(pool), n)
            while sent < n:
                room = min(ahead - (sent - stats.readings), n - sent)
                if room <= 0:
                    time.sleep(0.0005)
                    continue
                for reading in itertools.islice(readings, room):
                    submit(reading)
                sent += room
        t_submitted = time.perf_counter()
        ok = barrier(gateway, n, deadline, args.poll) and wait_delivered(gateway, records0, acked0, deadline, args.poll)
        t1 = time.perf_counter()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu1 = {name: thread_cpu_s(tid) for name, tid in threads.items()}
        written1 = io_write_bytes()
        commits1 = dict(gateway.journal.commits)

        seconds = t1 - t0
        cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        done = gateway.stats.readings  # every reading is to become a measurement record
        journaled = gateway.stats.records - records0
        pub = gateway.publisher.stats
        by_thread = {}
        for name in threads:
            a, b = cpu0[name], cpu1[name]
            if a is not None and b is not None:
                by_thread[name] = round((b - a) / max(done, 1) * 1e6, 2)
        result.update(
            ok=ok,
            seconds=round(seconds, 3),
            records_per_s=round(done / seconds, 1) if seconds > 0 else None,
            cpu_us_per_record=round(cpu_s / max(done, 1) * 1e6, 2),
            records_journaled=journaled,
            records_journaled_per_s=round(journaled / seconds, 1) if seconds > 0 else None,
            cpu_us_per_journaled_record=round(cpu_s / max(journaled, 1) * 1e6, 2),
            cpu_user_s=round(ru1.ru_utime - ru0.ru_utime, 3),
            cpu_sys_s=round(ru1.ru_stime - ru0.ru_stime, 3),
            cpu_us_per_record_by_thread=by_thread,
            peak_rss_mb=round(ru1.ru_maxrss / 1024, 1),
            rss_at_start_mb=None if rss_start is None else round(rss_start, 1),
            journal_synchronous=sync,
            journal_fs=filesystem_of(base / "gateway"),
            journal_bytes_per_record=round(gateway.journal.used_bytes / max(gateway.journal.head[0], 1), 1),
            journal_commits={k: commits1[k] - commits0[k] for k in commits1},
            journal_commits_per_s=round((commits1["append"] - commits0["append"]) / seconds, 1) if seconds else None,
            storage_bytes_written_per_record=(
                None if written0 is None or written1 is None else round((written1 - written0) / max(journaled, 1), 1)
            ),
            signing=args.signing,
            poll_cycle=args.poll_cycle,
            blocks_sent=pub.blocks_sent,
            records_per_block=round(pub.records_sent / pub.blocks_sent, 1) if pub.blocks_sent else None,
            submit_seconds=round(t_submitted - t0, 3),
            max_queued=args.max_queued or None,
            readings_processed=done,
            records_acked=pub.records_acked,
            messages_sent=pub.messages_sent,
            records_per_message=round(pub.records_sent / pub.messages_sent, 1) if pub.messages_sent else None,
            alerts=gateway.stats.alerts,
            readings_out_of_tolerance=failures,
            refused=gateway.stats.refused,
            lost=gateway.stats.lost,
            python=f"{platform.python_implementation()} {platform.python_version()}",
            versions=versions(),
            machine=machine_info(),
            max_records_per_message=config.mqtt.max_records_per_message,
            max_inflight=config.mqtt.max_inflight,
            max_message_bytes=config.mqtt.max_message_bytes,
            git=git_state(),
        )
        kinds = dict(gateway.stats.by_kind)
        result["journaled_by_kind"] = {k: v - kinds0.get(k, 0) for k, v in kinds.items() if v - kinds0.get(k, 0)}
        measurements = result["journaled_by_kind"].get("measurement", 0)
        if profiles is not None:
            result["profiled"] = True  # the figures are not comparable with unprofiled runs
        if not ok:
            result["error"] = (
                f"not every record was journaled and acknowledged within {timeout:g} s "
                f"(readings processed {done} of {n}, records journaled {journaled}, "
                f"acknowledged {pub.records_acked})"
            )
            log.error("%s", result["error"])
        elif measurements != n or gateway.stats.refused or gateway.stats.lost:
            result["ok"] = ok = False
            result["error"] = (
                f"{measurements} measurement records for {n} readings "
                f"({gateway.stats.refused} refused, {gateway.stats.lost} lost)"
            )
            log.error("%s", result["error"])
        return 0 if ok else 1
    except Exception as exc:  # reported in the JSON line too, then cleaned up below
        log.exception("benchmark failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
        return 1
    finally:
        if gateway is not None:
            try:
                gateway.stop()
            except Exception as exc:  # the broker must still be stopped
                log.error("gateway did not stop cleanly: %s", exc)
            if profiles is not None:
                profiles.dump()
        try:
            broker.stop()
        except Exception as exc:
            log.error("mosquitto did not stop cleanly: %s; killing it", exc)
            with contextlib.suppress(Exception):
                broker.kill()
        if args.keep:
            log.info("kept %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
        print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=100_000, help="readings to push through (default 100000)")
    p.add_argument(
        "--max-records-per-message",
        "--batch",
        type=int,
        default=500,
        help="mqtt.max_records_per_message (default 500, the configuration default)",
    )
    p.add_argument("--max-inflight", type=int, default=32, help="mqtt.max_inflight (default 32, the default)")
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=256 * 1024,
        help="mqtt.max_message_bytes (default 262144, the default; at about 1 KB per record it caps a message "
        "at about 250 records before --max-records-per-message does)",
    )
    p.add_argument(
        "--max-queued",
        type=int,
        default=0,
        help="keep at most this many readings queued ahead of the gateway (default 0: submit all at once; "
        "the queue then holds up to N references, which peak_rss_mb includes)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (journal, broker log)")
    p.add_argument("--dir", default=None, help="where to create the temporary directory (default: $TMPDIR)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for every ack (default 60 + N/500)")
    p.add_argument("--distinct", type=int, default=10_000, help="distinct pre-built readings, reused in turn")
    p.add_argument("--fail-rate", type=float, default=0.02, help="share of out-of-tolerance readings")
    p.add_argument("--seed", type=int, default=4711)
    p.add_argument("--poll", type=float, default=0.01, help="seconds between completion checks")
    p.add_argument(
        "--profile",
        metavar="PREFIX",
        default=None,
        help="cProfile the gateway, publisher and paho threads; write PREFIX.<thread>.pstats (slows the run)",
    )
    p.add_argument(
        "--profile-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="what --profile measures: each thread's CPU time (default) or wall time including GIL and I/O waits",
    )
    p.add_argument(
        "--signing",
        choices=("ed25519", "hmac", "none"),
        default="ed25519",
        help="how the gateway signs its blocks (default ed25519, a key made for the run)",
    )
    p.add_argument(
        "--poll-cycle",
        type=int,
        default=1,
        help="hand the gateway this many readings per item, as a PLC driver hands a poll cycle (default 1)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log the gateway's info messages too")
    args = p.parse_args(argv)
    if args.records < 1:
        p.error("--records must be at least 1")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.setLevel(logging.INFO)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
