"""Prometheus metrics and the ``collector status`` health report, with the standard library only.

Metrics
    :class:`Metric` is one metric family (name, type, help, samples); :func:`render` writes
    families in the Prometheus text exposition format 0.0.4 (``# HELP``, ``# TYPE``, one
    line per sample, label values escaped). :class:`MetricsServer` serves ``GET /metrics``
    from a callable that builds the families at scrape time, so a scrape always shows the
    counters as they are, and nothing is computed between scrapes.

    :func:`gateway_metrics` and :func:`recorder_metrics` build the families from a running
    :class:`~collector.gateway.daemon.Gateway` / :class:`~collector.recorder.daemon.Recorder`. Every
    gateway family carries a ``gateway`` label and every recorder family a ``recorder``
    label, so that series from several processes stay apart in a federated Prometheus.
    Loss is never silent (DESIGN.md): ``collector_gateway_lost_total``,
    ``collector_gateway_journal_backlog``, ``collector_gateway_journal_oldest_unsent_age_seconds``
    and ``collector_recorder_dead_letters_total`` are the ones to alert on.

Status
    :func:`journal_status` reads a gateway's journal read-only (the gateway may be running,
    stopped, or dead) and :func:`run_status` prints it for ``collector status``: the chain
    head, what the broker has not acknowledged yet (backlog), what no recorder has
    confirmed yet, and how old the oldest of each is. It never writes to the journal: it
    opens it with SQLite's ``mode=ro`` while the gateway has it open, and as ``immutable``
    when the gateway is not running (no ``-wal`` file), so that running it as root never
    leaves root-owned ``-wal``/``-shm`` files behind that the gateway's user could not open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import logging
import math
import re
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TextIO

from collector import clock
from collector.errors import CollectorError
from collector.inspection.records import format_utc_us

if TYPE_CHECKING:
    from collector.config import Config
    from collector.gateway.daemon import Gateway
    from collector.recorder.daemon import Recorder

log = logging.getLogger(__name__)

#: the ``Content-Type`` of the text exposition format this module writes
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MetricKind = Literal["counter", "gauge"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Metric:
    """One metric family: its samples share the name, type and help text.

    A sample is ``(labels, value)``; a family without labels has one sample with ``{}``.
    """

    name: str
    kind: MetricKind
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"not a valid metric name: {self.name!r}")
        if self.kind not in ("counter", "gauge"):
            raise ValueError(f"metric {self.name}: kind must be counter or gauge, not {self.kind!r}")
        for labels, _ in self.samples:
            for key in labels:
                if not _LABEL.match(key) or key.startswith("__"):
                    raise ValueError(f"metric {self.name}: not a valid label name: {key!r}")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as the exposition format writes it (``+Inf``, ``-Inf``, ``NaN``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The families in the text exposition format 0.0.4, each with ``# HELP`` and ``# TYPE``."""
    out: list[str] = []
    seen: set[str] = set()
    for m in metrics:
        if m.name in seen:
            raise ValueError(f"metric family {m.name!r} appears twice")
        seen.add(m.name)
        out.append(f"# HELP {m.name} {_escape_help(m.help)}\n")
        out.append(f"# TYPE {m.name} {m.kind}\n")
        for labels, value in m.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
                out.append(f"{m.name}{{{inner}}} {format_value(value)}\n")
            else:
                out.append(f"{m.name} {format_value(value)}\n")
    return "".join(out)


# -- the HTTP endpoint ----------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    collect: Callable[[], Iterable[Metric]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "inspection-collector-metrics"
    protocol_version = "HTTP/1.0"

    def _reply(self, code: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = render(self.server.collect()).encode("utf-8")
            except Exception as exc:  # a broken collector must not kill the endpoint
                log.exception("metrics: collecting failed")
                self._reply(500, f"collecting metrics failed: {exc}\n".encode(), "text/plain; charset=utf-8", head)
                return
            self._reply(200, body, CONTENT_TYPE, head)
        elif path == "/":
            self._reply(200, b"inspection collector: metrics at /metrics\n", "text/plain; charset=utf-8", head)
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8", head)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.client_address[0], *args)


class MetricsServer:
    """``GET /metrics`` on ``bind:port`` (port 0: a free port, see :attr:`port`), in a thread.

    ``collect`` is called for every scrape, in the request's thread: it must be thread-safe
    (reading counters is; the builders below take the journal's lock for their queries).
    """

    def __init__(self, bind: str, port: int, collect: Callable[[], Iterable[Metric]]) -> None:
        self.bind = bind
        self._requested_port = port
        self._collect = collect
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the metrics server has no port until it is started")
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> Self:
        if self._server is not None:
            return self
        server_cls: type[_Server] = _Server
        if ":" in self.bind:  # an IPv6 address

            class _Server6(_Server):
                address_family = socket.AF_INET6

            server_cls = _Server6
        server = server_cls((self.bind, self._requested_port), _Handler)
        server.collect = self._collect
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- metric families of the daemons -----------------------------------------------------------


def _counter_items(counter: Mapping[str, int]) -> list[tuple[str, int]]:
    # Another thread may add a key while we read: dict() of a dict copies in one step under
    # the GIL, and a retry covers any other interleaving.
    for _ in range(5):
        with contextlib.suppress(RuntimeError):
            return sorted(dict(counter).items())
    return []


_Row = tuple[str, MetricKind, str, float]


def _families(prefix: str, labels: dict[str, str], rows: Iterable[_Row]) -> list[Metric]:
    return [Metric(prefix + name, kind, text, [(dict(labels), value)]) for name, kind, text, value in rows]


def gateway_metrics(gateway: Gateway) -> list[Metric]:
    """The gateway's counters and gauges (``collector_gateway_*``), labelled with its id."""
    gw = {"gateway": gateway.settings.id}
    stats = gateway.stats
    pub = gateway.publisher.stats
    p = "collector_gateway_"
    rows: list[_Row] = [
        ("readings_total", "counter", "Readings received from devices.", stats.readings),
        ("alerts_total", "counter", "Alerts published (out of tolerance, refusals, rules).", stats.alerts),
        ("refused_total", "counter", "Readings refused (calibration, wrong gauge, no station).", stats.refused),
        ("unstable_total", "counter", "Readings the device marked unsettled (not recorded).", stats.unstable),
        (
            "lost_total",
            "counter",
            "Readings that could not be journaled (queue or journal full, journal error, stop).",
            stats.lost,
        ),
        ("messages_sent_total", "counter", "Record messages handed to MQTT.", pub.messages_sent),
        ("records_sent_total", "counter", "Records sent (a record sent again counts again).", pub.records_sent),
        ("records_acked_total", "counter", "Records acknowledged by the broker (PUBACK).", pub.records_acked),
        (
            "records_broker_refused_total",
            "counter",
            "Records the broker refused (PUBACK reason >= 0x80, e.g. not authorised); retried.",
            pub.refused,
        ),
        (
            "records_confirmed_total",
            "counter",
            "Records a recorder confirmed stored in InfluxDB.",
            pub.records_confirmed,
        ),
        (
            "records_refused_total",
            "counter",
            "Records in blocks a recorder refused (dead-lettered, never stored, not sent again).",
            pub.records_refused,
        ),
        (
            "records_damaged_total",
            "counter",
            "Records in journal blocks that failed the gateway's own check (never published).",
            pub.records_damaged + stats.damaged,
        ),
        (
            "records_unanswered_total",
            "counter",
            "Records sent max_resends times without any recorder answering (not sent again).",
            pub.records_unanswered,
        ),
        (
            "records_resent_total",
            "counter",
            "Records sent again: the broker acknowledged them, no recorder confirmed them.",
            pub.records_resent,
        ),
        ("probes_total", "counter", "Probes sent to find a lost tail of records.", pub.probes),
        ("mqtt_connects_total", "counter", "Successful connections to the broker.", pub.connects),
        ("mqtt_disconnects_total", "counter", "Broker connections lost.", pub.disconnects),
        ("mqtt_reconnects_total", "counter", "Connections to the broker after the first.", max(pub.connects - 1, 0)),
        ("mqtt_connected", "gauge", "1 while connected to the broker.", int(gateway.publisher.connected)),
        (
            "publish_ack_latency_ms",
            "gauge",
            "Milliseconds from publishing the last acknowledged record message to its PUBACK.",
            pub.last_ack_latency_ms,
        ),
    ]
    synced = clock.kernel_synchronised()
    if synced is not None:
        rows.append(("clock_synchronised", "gauge", "1 while the kernel says the clock is synchronised.", int(synced)))
    journal = gateway.journal
    try:  # the journal is closed once the gateway stopped
        backlog, unconfirmed, (seq, _) = journal.backlog(), journal.unconfirmed(), journal.head
        journal.state("-")  # raises once the journal is closed
    except (sqlite3.Error, CollectorError) as exc:
        log.debug("metrics: journal not readable: %s", exc)
    else:
        rows += [
            ("journal_last_seq", "gauge", "Sequence number of the newest journaled record.", seq),
            ("journal_backlog", "gauge", "Journaled records not yet acknowledged by the broker.", backlog),
            (
                "journal_unconfirmed",
                "gauge",
                "Records acknowledged by the broker but not yet confirmed in InfluxDB.",
                unconfirmed,
            ),
            ("journal_bytes", "gauge", "Bytes of the journal in use.", journal.used_bytes),
            ("journal_budget_bytes", "gauge", "The journal's disk budget.", journal.budget_bytes),
            (
                "journal_budget_alarm",
                "gauge",
                "1 while unsettled records fill the journal beyond its alarm level.",
                int(journal.budget_alarm),
            ),
        ]
    metrics = _families(p, gw, rows)
    metrics.append(
        Metric(
            p + "records_total",
            "counter",
            "Records sealed into the journal, by record kind.",
            [({**gw, "kind": kind}, n) for kind, n in _counter_items(stats.by_kind)],
        )
    )
    metrics.append(
        Metric(
            p + "device_events_total",
            "counter",
            "Device events (connected, disconnected, errors), by device and event.",
            [
                ({**gw, "device": device, "event": event}, n)
                for key, n in _counter_items(stats.device_events)
                for device, _, event in [key.rpartition(":")]
            ],
        )
    )
    return metrics


def recorder_metrics(recorder: Recorder) -> list[Metric]:
    """The recorder's counters (``collector_recorder_*``), labelled with its MQTT client id."""
    client_id = str(getattr(recorder, "client_id", None) or getattr(recorder, "_client_id", "recorder"))
    s = recorder.stats
    rows: list[_Row] = [
        ("messages_total", "counter", "Record messages received from the broker.", s.messages),
        ("records_written_total", "counter", "Records written to InfluxDB.", s.records_written),
        ("dead_letters_total", "counter", "Payloads refused into the dead-letter file.", s.dead_letters),
        ("records_refused_total", "counter", "Records in blocks refused (never stored).", s.records_refused),
        ("write_failures_total", "counter", "InfluxDB writes that failed (retried).", s.write_failures),
        ("batches_total", "counter", "InfluxDB write batches.", s.batches),
        ("mqtt_connected", "gauge", "1 while connected to the broker.", int(recorder.connected.is_set())),
        (
            "subscribed",
            "gauge",
            "1 once the broker confirmed the shared subscription.",
            int(recorder.subscribed.is_set()),
        ),
    ]
    return _families("collector_recorder_", {"recorder": client_id, "group": recorder.settings.group}, rows)


# -- collector status: the journal, read-only ------------------------------------------------


@dataclass(frozen=True)
class JournalStatus:
    """What a gateway's journal says, read without the gateway's help (see ``journal.read_status``)."""

    path: str
    gateway: str | None
    last_seq: int
    last_hash: str | None
    last_recorded_us: int | None
    records: int  # still in the journal (settled blocks are pruned after keep_delivered_days)
    blocks: int
    bytes: int  # of the journal file in use (its budget is in the configuration)
    backlog: int  # not acknowledged by the broker
    unconfirmed: int  # acknowledged by the broker, not answered by a recorder
    refused: int  # refused by a recorder: never stored (alarmed)
    damaged: int  # failed the gateway's own check: never published (alarmed)
    oldest_unsent_us: int | None
    oldest_unsettled_us: int | None
    last_delivered_us: int | None
    last_confirmed_us: int | None
    refusals: list[dict[str, Any]]  # the newest refusals, with the recorders' reasons
    running: bool  # a -wal file exists: the gateway has the journal open (or died with it open)
    at_us: int

    def age_s(self, us: int | None) -> float | None:
        return None if us is None else max(0.0, (self.at_us - us) / 1e6)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["oldest_unsent_age_s"] = self.age_s(self.oldest_unsent_us)
        out["oldest_unsettled_age_s"] = self.age_s(self.oldest_unsettled_us)
        return out


def journal_status(path: str | Path, now_us: int | None = None) -> JournalStatus:
    """Read a journal's head, backlog, refusals and ages, read-only (see ``journal.read_status``)."""
    from collector.gateway.journal import read_status

    r = read_status(path)
    by_state = r["by_state"]
    return JournalStatus(
        path=str(path),
        gateway=r["gateway"],
        last_seq=r["last_seq"],
        last_hash=r["last_hash"],
        last_recorded_us=r["last_recorded_us"],
        records=r["records"],
        blocks=r["blocks"],
        bytes=r["bytes"],
        backlog=by_state["new"],
        unconfirmed=by_state["sent"],
        refused=by_state["refused"],
        damaged=by_state["damaged"],
        oldest_unsent_us=r["oldest_unsent_us"],
        oldest_unsettled_us=r["oldest_unsettled_us"],
        last_delivered_us=r["last_delivered_us"],
        last_confirmed_us=r["last_confirmed_us"],
        refusals=r["refusals"],
        running=r["running"],
        at_us=time.time_ns() // 1000 if now_us is None else now_us,
    )


def _when(st: JournalStatus, us: int | None) -> str:
    if us is None:
        return "-"
    age = st.age_s(us) or 0.0
    return f"{format_utc_us(us)} ({_duration(age)} ago)"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def status_text(st: JournalStatus, max_age: float | None = None) -> str:
    """The human-readable report of ``collector status``."""
    lines = [
        f"journal      {st.path} ({'open by a gateway' if st.running else 'not open'}), {st.bytes / 1e6:.1f} MB in use",
        f"gateway      {st.gateway or '?'}",
        f"last record  seq {st.last_seq}"
        + (f", hash {st.last_hash[:16]}…, recorded {_when(st, st.last_recorded_us)}" if st.last_hash else ""),
        f"in journal   {st.records} record(s) in {st.blocks} block(s)",
        f"unsent       {st.backlog} record(s) not acknowledged by the broker"
        + (f", oldest recorded {_when(st, st.oldest_unsent_us)}" if st.oldest_unsent_us is not None else ""),
        f"unconfirmed  {st.unconfirmed} record(s) acknowledged but not yet confirmed in InfluxDB",
        f"unsettled    oldest recorded {_when(st, st.oldest_unsettled_us)}",
        f"refused      {st.refused} record(s) refused by a recorder (never stored)",
        f"damaged      {st.damaged} record(s) that failed the gateway's own check (never published)",
        f"last ack     {_when(st, st.last_delivered_us)}",
        f"last confirm {_when(st, st.last_confirmed_us)}",
    ]
    for r in st.refusals[:3]:
        lines.append(f"  refused seq {r['first_seq']}..{r['last_seq']} by {r['recorder'] or '?'}: {r['reason']}")
    problems = status_problems(st, max_age)
    lines.append("state        " + ("; ".join(problems) if problems else "OK"))
    return "\n".join(lines) + "\n"


def status_problems(st: JournalStatus, max_age: float | None) -> list[str]:
    """Why the journal looks unhealthy: refused or damaged blocks, records waiting longer than ``max_age`` s."""
    problems = []
    if st.refused:
        problems.append(f"{st.refused} record(s) refused by a recorder (see its dead-letter file)")
    if st.damaged:
        problems.append(f"{st.damaged} record(s) damaged in the journal (edited or corrupted)")
    if max_age is None:
        return problems
    unsent = st.age_s(st.oldest_unsent_us)
    if unsent is not None and unsent > max_age:
        problems.append(f"records unsent for {_duration(unsent)} (broker unreachable or refusing?)")
    unsettled = st.age_s(st.oldest_unsettled_us)
    if unsettled is not None and unsettled > max_age and (unsent is None or unsettled > unsent):
        problems.append(f"records unconfirmed for {_duration(unsettled)} (recorders or InfluxDB down?)")
    return problems


def run_status(cfg: Config, *, as_json: bool = False, max_age: float | None = 300.0, out: TextIO | None = None) -> int:
    """``collector status --config FILE``: print the journal's state; 1 if records are stuck.

    Exit status 0: every record is settled or younger than ``max_age`` seconds; 1: some
    record has waited longer (for the broker's acknowledgement or for a recorder's
    confirmation), or a recorder refused blocks, or blocks failed the gateway's own check.
    A journal that cannot be read raises :class:`CollectorError`.
    """
    out = sys.stdout if out is None else out
    if cfg.gateway is None:
        raise CollectorError("collector status needs a configuration with a gateway section")
    st = journal_status(cfg.gateway.journal)
    if st.gateway is not None and st.gateway != cfg.gateway.id:
        raise CollectorError(f"journal {st.path} belongs to gateway {st.gateway!r}, not {cfg.gateway.id!r}")
    problems = status_problems(st, max_age)
    if as_json:
        body = st.as_dict()
        body["problems"] = problems
        out.write(json.dumps(body, indent=2) + "\n")
    else:
        out.write(status_text(st, max_age))
    return 1 if problems else 0
