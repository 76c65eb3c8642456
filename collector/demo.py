"""``collector demo``: the whole local stack, with simulated devices, on one machine.

Starts Mosquitto and InfluxDB as child processes on free loopback ports (data under
``./var/demo``), a simulator for every device of ``config/demo.yaml``, a gateway (with a
signing key made for the run) and a recorder (with that key in its register), and prints
records and alerts as they arrive at the broker. The simulated inspectors start only once
the gateway has every device open, so the badge scanned first is on every record.

On Ctrl-C or after ``--duration`` seconds it stops the simulated devices, waits until the
recorder has confirmed every journaled record as stored in InfluxDB, stops the gateway (which
publishes its final checkpoint), traces the first part and runs ``collector verify`` over
everything. It exits 0 on a healthy run and otherwise says in one line why not. The
configuration it ran with is left in the work directory (``demo.yaml``, keys in ``keys/``)
for ``collector trace`` and ``collector verify``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from collector import config as config_mod
from collector.chain import blocks
from collector.chain.keys import KeyRing, generate
from collector.evidence.trace import TraceFilter, trace
from collector.gateway.daemon import Gateway
from collector.inspection import units
from collector.inspection.models import Characteristic, RecordKind, Verdict
from collector.recorder.daemon import Recorder
from collector.store import queries
from collector.store.factory import open_store
from collector.testing.services import InfluxD, Mosquitto, free_port
from simulators.mitutoyo import MitutoyoSimulator, Scenario
from simulators.mt_sics import MtSicsSimulator
from simulators.mt_sics import Scenario as ScaleScenario
from simulators.plc import PlcSimulator
from simulators.plc import Scenario as PlcScenario
from simulators.scanner import ScannerSimulator

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


class Inspector:
    """Plays an inspector at a manual station: badge, part label, then every characteristic.

    Length characteristics are measured with the caliper (values scatter around the
    nominal, a sixth of the tolerance band as standard deviation, now and then one out of
    tolerance, now and then a frame garbled in the cable, which the driver must reject
    without losing its place); weight characteristics by putting the part on the balance,
    which the gateway then asks for a stable weight.
    """

    def __init__(
        self,
        characteristics: tuple[Characteristic, ...],
        *,
        caliper: MitutoyoSimulator | None,
        scale: MtSicsSimulator | None,
        scanner: ScannerSimulator | None,
        interval: float,
        oot_rate: float = 0.06,
        bad_rate: float = 0.03,
        seed: int = 4711,
    ) -> None:
        self.characteristics = characteristics
        self.caliper = caliper
        self.scale = scale
        self.scanner = scanner
        self.interval = interval
        self.oot_rate = oot_rate
        self.bad_rate = bad_rate
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-inspector", daemon=True)
        self.parts = 0

    def value_for(self, c: Characteristic, decimals: int) -> Decimal:
        low, high = c.lower_limit, c.upper_limit
        nominal = c.nominal if c.nominal is not None else (low if low is not None else high)
        assert nominal is not None
        band = (high - low) if (low is not None and high is not None) else Decimal("0.1")
        x = self._rng.gauss(0.0, float(band) / 8)
        if self._rng.random() < self.oot_rate:
            x += float(band) * (0.7 if self._rng.random() < 0.5 else -0.7)
        return (nominal + Decimal(repr(x))).quantize(Decimal(1).scaleb(-decimals))

    def _run(self) -> None:
        if self.scanner is not None:
            self.scanner.scan("B:op-117")  # the inspector signs in with a badge
        serial = 1
        while not self._stop.wait(self.interval):
            if self.scanner is not None:
                self.scanner.scan(f"HX-4711|HX{serial:06d}|L2026-1121")
                serial += 1
            for i, c in enumerate(self.characteristics):
                if self._stop.wait(self.interval):
                    return
                if self._weighed(c):
                    continue  # the gateway asked the balance itself when this became next
                nxt = self.characteristics[i + 1] if i + 1 < len(self.characteristics) else None
                if nxt is not None and self._weighed(nxt) and self.scale is not None:
                    # the part goes on the pan before the last caliper value, so it has settled
                    # by the time the gateway asks for the weight
                    self.scale.load(self.value_for(nxt, self.scale.scenario.decimals))
                if self.caliper is None:
                    continue
                if self._rng.random() < self.bad_rate:
                    self.caliper.send_garbage(b"01A+00?2.3\r")
                self.caliper.send_value(self.value_for(c, self.caliper.scenario.decimals))
            self.parts += 1
            if self.scale is not None:
                self.scale.load(Decimal("0.00"))  # the part comes off the pan

    def _weighed(self, c: Characteristic) -> bool:
        return self.scale is not None and units.dimension(c.unit) == "mass"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Watcher:
    """Prints what a supervisor would see: every record and alert as the broker delivers it."""

    def __init__(self, host: str, port: int, prefix: str, out: Any = sys.stdout) -> None:
        self.out = out
        self.color = hasattr(out, "isatty") and out.isatty()
        self.records = 0
        self.alerts = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-watcher-{os.getpid()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"{prefix}/+/+/+/record", 1), (f"{prefix}/+/+/+/alert", 1), (f"{prefix}/gateways/+/status", 1)]
        )
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        if kind == "record":
            for line in msg.payload.decode().split("\n"):
                for r in blocks.read(line).materialise():
                    self.records += 1
                    print(self._describe(r), file=self.out, flush=True)
        elif kind == "alert":
            a = json.loads(msg.payload)
            self.alerts += 1
            text = f"ALERT {a['kind']} ({a['severity']}): {a['station']} {a['serial'] or ''} {a['message']}"
            print(self._paint(text, "41;37;1"), file=self.out, flush=True)
        elif kind == "status":
            s = json.loads(msg.payload)
            print(f"status: gateway {s['gateway']} is {s['state']}", file=self.out, flush=True)

    def _describe(self, r: dict[str, Any]) -> str:
        head = f"record #{r['seq']:<5} {r['station']} "
        kind = r["kind"]
        if kind == RecordKind.MEASUREMENT:
            verdict = self._paint("PASS", "32") if r["verdict"] == Verdict.PASS else self._paint("FAIL", "31;1")
            return (
                f"{head}{r['serial']} {r['characteristic']:<3} {r['judged_value']:>9} {r['unit']}  "
                f"[{r['lsl']} .. {r['usl']}]  {verdict}  gauge {r['gauge']} op {r['operator'] or '-'}"
            )
        if kind == RecordKind.PART:
            verdict = {"accept": self._paint("ACCEPT", "32;1"), "reject": self._paint("REJECT", "31;1")}.get(
                r["verdict"], r["verdict"].upper()
            )
            by = f" released by {r['released_by']}" if r["released_by"] else ""
            return f"{head}{r['serial']} part {verdict}{by} ({len(r['records'])} values)"
        if kind == RecordKind.NONCONFORMANCE:
            return f"{head}{r['serial']} nonconformance opened for {r['characteristic']} = {r['judged_value']}"
        if kind == RecordKind.REFUSAL:
            return f"{head}reading refused: {r['reason']}"
        if kind == RecordKind.AUDIT:
            return f"{head}audit {r['event']} by {r['by']}"
        return f"{head}{kind}"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _demo_config(
    path: Path, workdir: Path, mqtt_port: int, influx_url: str, plcs: dict[str, int] | None = None
) -> tuple[config_mod.Config, Path]:
    """The demo's configuration pointed at its own services, simulators and keys; (config, file).

    ``plcs`` receives device id -> a free port for each Modbus TCP device. The gateway gets a
    key pair of its own (the private key in ``gateway-keys/``, the public one in ``keys/``,
    the recorder's register); the configuration is written to ``workdir/demo.yaml``.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault("mqtt", {})["port"] = mqtt_port
    data.setdefault("influxdb", {"kind": "v1"})["url"] = influx_url
    gateway_id = data["gateway"]["id"]
    private, public, _ = generate(gateway_id, workdir / "gateway-keys")
    (workdir / "keys").mkdir(exist_ok=True)
    shutil.copy(public, workdir / "keys" / public.name)
    data["gateway"]["journal"] = str(workdir / "journal.sqlite")
    data["gateway"]["signing"] = {"key_file": str(private)}
    data["recorder"]["keys"] = str(workdir / "keys")
    data["recorder"]["dead_letter_file"] = str(workdir / "dead-letter.jsonl")
    for station in data.get("stations", []):
        for dev in station.get("devices", []):
            if dev.get("driver") == "modbus":
                dev["host"] = "127.0.0.1"
                dev["port"] = free_port()
                if plcs is not None:
                    plcs[dev["id"]] = dev["port"]
            elif "port" in dev:
                dev["port"] = str(workdir / "dev" / Path(dev["port"]).name)
    out = workdir / "demo.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return config_mod.load(out), out


class DemoFailed(Exception):
    """Why the demo is not healthy, in one line."""


def _wait(condition: Callable[[], object], timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoFailed(why)
        time.sleep(0.1)


def run_demo(config_path: str | None = None, duration: float | None = None, workdir: str | None = None) -> int:
    try:
        return _run_demo(config_path, duration, workdir)
    except DemoFailed as exc:
        print(f"\nDEMO FAILED: {exc}", flush=True)
        return 1


def _run_demo(config_path: str | None, duration: float | None, workdir: str | None) -> int:
    path = Path(config_path) if config_path else DEFAULT_CONFIG
    config_mod.load(path)  # fail early, with the file's own line numbers
    work = Path(workdir or "var/demo").resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "dev").mkdir(parents=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    started: list[Any] = []
    plc_sims: list[PlcSimulator] = []
    try:
        broker = Mosquitto(work / "mosquitto").start()
        started.append(broker)
        influx = InfluxD(work / "influxdb").start(timeout=30)
        started.append(influx)
        log.info("broker on 127.0.0.1:%d, InfluxDB on %s, data under %s", broker.port, influx.url, work)
        plcs: dict[str, int] = {}
        cfg, cfg_file = _demo_config(path, work, broker.port, influx.url, plcs)
        for plc_port in plcs.values():
            # a part every 3 s, each waiting for the gateway's acknowledgement like a real line
            plc = PlcSimulator([1], PlcScenario(seed=3, cycle_time=3.0, word_order="CDAB"), port=plc_port).start()
            started.append(plc)
            plc_sims.append(plc)
        assert cfg.influxdb is not None and cfg.gateway is not None

        feeders = []
        manual_devices: list[str] = []
        for st in cfg.stations:
            plan = cfg.plan_for(st.plan)
            assert plan is not None
            sims: dict[str, Any] = {}
            for dev in st.devices:
                port = getattr(dev.driver_config, "port", None)
                if port is None:
                    continue
                kind = dev.driver_config.driver
                if kind == "mitutoyo":
                    sims["caliper"] = MitutoyoSimulator(port, Scenario(decimals=3, seed=7))
                elif kind == "mt-sics":
                    sims["scale"] = MtSicsSimulator(
                        port,
                        ScaleScenario(
                            nominal=Decimal("0.00"), noise=0.02, settle_time=0.2, capacity=Decimal("620.00"), seed=7
                        ),
                    )
                elif kind == "scanner":
                    sims["scanner"] = ScannerSimulator(port)
                else:
                    continue
                manual_devices.append(dev.id)
            if not sims:
                continue  # an automatic station: its PLC simulator makes the parts
            for sim in sims.values():
                started.append(sim)
            if "scale" in sims:
                sims["scale"].start()
            feeders.append(
                Inspector(
                    plan.characteristics,
                    caliper=sims.get("caliper"),
                    scale=sims.get("scale"),
                    scanner=sims.get("scanner"),
                    interval=0.4,
                )
            )

        recorder = Recorder(cfg, open_store(cfg.influxdb))
        recorder.start()
        started.append(recorder)
        _wait(recorder.subscribed.is_set, 10, "the recorder did not subscribe at the broker within 10 s")
        watcher = Watcher(broker.host, broker.port, cfg.mqtt.topic_prefix)
        started.append(watcher)
        gateway = Gateway(cfg)
        gateway.start()
        started.append(gateway)
        # the inspector types only once the gateway listens on every device (or the badge is lost)
        events = gateway.stats.device_events
        _wait(
            lambda: all(events.get(f"{d}:connected") for d in manual_devices),
            15,
            "the gateway did not open every simulated device within 15 s: "
            + ", ".join(d for d in manual_devices if not events.get(f"{d}:connected")),
        )
        for f in feeders:
            f.start()
        print(
            f"demo running{f' for {duration:g} s' if duration else ''}; Ctrl-C stops it. "
            f"Records are journaled in {cfg.gateway.journal}",
            flush=True,
        )
        stop.wait(duration)
        return _finish(cfg, cfg_file, work, gateway, feeders, plc_sims, watcher, started)
    finally:
        for thing in reversed(started):
            try:
                if isinstance(thing, MitutoyoSimulator | MtSicsSimulator | ScannerSimulator):
                    thing.close()
                else:
                    thing.stop()
            except Exception as exc:  # keep stopping the rest: leave no process behind
                log.warning("while stopping %s: %s", type(thing).__name__, exc)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _finish(
    cfg: config_mod.Config,
    cfg_file: Path,
    work: Path,
    gateway: Gateway,
    feeders: list[Inspector],
    plc_sims: list[PlcSimulator],
    watcher: Watcher,
    started: list[Any],
) -> int:
    """Drain (devices off, everything confirmed stored), stop the gateway, trace and verify."""
    assert cfg.influxdb is not None and cfg.gateway is not None
    for f in feeders:
        f.stop()
    for plc in plc_sims:
        plc.stop()
        started.remove(plc)
    journal = gateway.journal
    records = gateway.stats.records

    def drained() -> bool:
        nonlocal records
        quiet = gateway.stats.records == records
        records = gateway.stats.records
        return quiet and journal.backlog() == 0 and journal.unconfirmed() == 0

    _wait(
        drained,
        30,
        f"{journal.backlog() + journal.unconfirmed()} journaled record(s) not confirmed as stored in InfluxDB "
        "within 30 s (is the recorder writing? see its log above)",
    )
    if journal.refused() or journal.damaged():
        raise DemoFailed(
            f"{journal.refused()} record(s) refused by the recorder, {journal.damaged()} damaged in the journal "
            f"(see {cfg.recorder.dead_letter_file if cfg.recorder else 'the dead-letter file'})"
        )
    gateway.stop()  # publishes the final checkpoint
    started.remove(gateway)
    head, _ = journal.head
    store = open_store(cfg.influxdb)
    try:
        gw = cfg.gateway.id
        _wait(
            lambda: any(r.get("head_seq") == head for r in queries.checkpoint_rows(store, gw)),
            10,
            "the gateway's final checkpoint did not reach InfluxDB within 10 s",
        )
        stored = queries.count_records(store)
        register = KeyRing.load(cfg.recorder.keys) if cfg.recorder is not None else None
        every_record = trace(store, TraceFilter(start="2000-01-01"), register, related=False)
        first = [r for r in every_record if r.get("station") == cfg.stations[0].id and r.get("serial")][:1]
        history = trace(store, TraceFilter(serial=first[0]["serial"]), register) if first else []
        without_operator = [
            r["seq"] for r in every_record if r["kind"] == RecordKind.MEASUREMENT and not r.get("operator")
        ]
        unverified = [r["seq"] for r in every_record if not r.get("verified")]
    finally:
        store.close()
    bad_frames = sum(n for key, n in gateway.stats.device_events.items() if key.endswith(":bad_frame"))
    print(
        f"\n{head} record(s) journaled by the gateway, {stored} in InfluxDB, "
        f"{watcher.records} seen on the broker, {watcher.alerts} alert(s), "
        f"{bad_frames} garbled frame(s) rejected (counted, never values)."
    )
    if history:
        print(f"\ncollector trace --serial {history[0]['serial']} (read back from InfluxDB):")
        for r in history:
            if r["kind"] == RecordKind.MEASUREMENT:
                print(
                    f"  {r['recorded_at']}  {r['characteristic']} {r['characteristic_name']:<17} "
                    f"{r['judged_value']:>8} {r['unit']} [{r['lsl']} .. {r['usl']}] {r['verdict']:<4}  "
                    f"gauge {r['gauge']} (cal. due {r['gauge_calibration_due']})  op {r['operator']}  "
                    f"lot {r['lot']}  seq {r['seq']}"
                )
            else:
                print(f"  {r['recorded_at']}  {watcher._describe(r)}")
    keys = cfg.recorder.keys if cfg.recorder is not None else work / "keys"
    print(f"\ncollector verify --config {cfg_file} --keys {keys}:", flush=True)
    verified = subprocess.run(
        [sys.executable, "-m", "collector.cli", "verify", "--config", str(cfg_file), "--keys", str(keys)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
    )
    print(verified.stdout + verified.stderr, flush=True)
    if stored != head:
        raise DemoFailed(f"{head} record(s) journaled but {stored} in InfluxDB")
    if unverified:
        raise DemoFailed(f"{len(unverified)} record(s) read back did not verify (seq {unverified[:5]})")
    if without_operator:
        raise DemoFailed(f"{len(without_operator)} measurement(s) without an operator (seq {without_operator[:5]})")
    if verified.returncode != 0:
        raise DemoFailed(f"collector verify found problems or could not run (exit {verified.returncode})")
    return 0
