"""Prometheus metrics and the ``collector status`` health report.

Metrics
    :class:`Metric` is one metric family as the daemons describe it (name, type, help,
    samples). The exposition is prometheus_client's: :class:`Families` is a custom collector
    that turns the families into the client's at scrape time, and :func:`render` writes them
    with the client's text encoder (format 0.0.4: ``# HELP``, ``# TYPE``, escaping, values).
    :class:`MetricsServer` serves ``GET /metrics`` on the HTTP plumbing the web UIs share
    (:mod:`collector.web`), from a callable that builds the families at scrape time, so a
    scrape always shows the counters as they are and nothing is computed between scrapes.

    :func:`gateway_metrics` and :func:`recorder_metrics` build the families from a running
    :class:`~collector.gateway.daemon.Gateway` / :class:`~collector.recorder.daemon.Recorder`;
    what they read of the daemon is in one function each (:func:`gateway_figures`,
    :func:`recorder_figures`). Every gateway family carries a ``gateway`` label and every
    recorder family a ``recorder`` label, so that series from several processes stay apart
    in a federated Prometheus. Loss is never silent: ``collector_gateway_lost_total``,
    ``collector_gateway_journal_backlog``, ``collector_gateway_journal_unconfirmed`` and
    ``collector_recorder_dead_letters_total`` are the ones to alert on.

Status
    :func:`journal_status` reads a gateway's journal read-only (the gateway may be running,
    stopped, or dead) and :func:`run_status` prints it for ``collector status``: the chain
    head, what the broker has not acknowledged yet (backlog), what no recorder has
    confirmed yet, and how old the oldest of each is. It never writes to the journal: it
    opens it with SQLite's ``mode=ro`` while the gateway has it open, and as ``immutable``
    when the gateway is not running (no ``-wal`` file), so that running it as root never
    leaves root-owned ``-wal``/``-shm`` files behind that the gateway's user could not open.

Why one module of this size: the families both daemons expose, their exposition server and
``collector status`` read the same figures; together, each figure has one definition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TextIO

from prometheus_client import exposition, metrics_core

from collector import clock, web
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

    A sample is ``(labels, value)``; a family without labels has one sample with ``{}``. A
    counter's name ends in ``_total`` (the exposition formats' convention, which the client
    library applies: a counter named otherwise would be exposed under another name).
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
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"metric {self.name}: a counter's name ends in _total")
        for labels, _ in self.samples:
            for key in labels:
                if not _LABEL.match(key) or key.startswith("__"):
                    raise ValueError(f"metric {self.name}: not a valid label name: {key!r}")

    def family(self) -> metrics_core.Metric:
        """This family as prometheus_client's (a counter's samples keep their ``_total`` name)."""
        out: metrics_core.Metric
        if self.kind == "counter":
            out = metrics_core.CounterMetricFamily(self.name, self.help)
        else:
            out = metrics_core.GaugeMetricFamily(self.name, self.help)
        for labels, value in self.samples:
            out.add_sample(self.name, {k: str(v) for k, v in labels.items()}, float(value))
        return out


class Families:
    """A prometheus_client custom collector: ``collect`` builds the families when scraped."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[metrics_core.Metric]:
        seen: set[str] = set()
        for m in self._collect():
            if m.name in seen:
                raise ValueError(f"metric family {m.name!r} appears twice")
            seen.add(m.name)
            yield m.family()


def render(metrics: Iterable[Metric]) -> str:
    """The families in the text exposition format 0.0.4, each with ``# HELP`` and ``# TYPE``."""
    families = list(metrics)
    return exposition.generate_latest(Families(lambda: families)).decode("utf-8")


# -- the HTTP endpoint ----------------------------------------------------------------------


class _MetricsHandler(web.Handler["MetricsServer"]):
    server_version = "inspection-collector-metrics"
    log_refused_from = 600  # a 404 is routine; a collector that fails logs its own line
    internal_error = "collecting metrics failed, see the log"

    def route(self, method: str, path: str) -> None:
        self.need(method, "GET", "HEAD")
        if path == "/metrics":
            try:
                body = render(self.app.collect()).encode("utf-8")
            except Exception as exc:  # a broken collector must not kill the endpoint
                log.exception("metrics: collecting failed")
                raise web.RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"collecting metrics failed: {exc}") from None
            self.send(HTTPStatus.OK, CONTENT_TYPE, body, cache="no-store")
        elif path == "/":
            self.send(HTTPStatus.OK, "text/plain; charset=utf-8", b"inspection collector: metrics at /metrics\n")
        else:
            raise web.RequestError(HTTPStatus.NOT_FOUND, "not found")


class MetricsServer(web.WebApp):
    """``GET /metrics`` on ``bind:port`` (port 0: a free port, see :attr:`port`), in a thread.

    ``collect`` is called for every scrape, in the request's thread: it must be thread-safe
    (reading counters is; the builders below take the journal's lock for their queries).
    """

    label = "metrics"
    logger = log
    thread_name = "metrics"

    def __init__(self, bind: str, port: int, collect: Callable[[], Iterable[Metric]]) -> None:
        super().__init__(bind, port)
        self.collect = collect

    @property
    def url(self) -> str:
        return web.base_url(self.bind, self.port) + "/metrics"

    def start(self) -> Self:
        if self.start_server(_MetricsHandler):
            log.info("metrics on %s", self.url)
        return self

    def stop(self) -> None:
        self.stop_server()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- what the daemons say --------------------------------------------------------------------


def _counter_items(counter: Mapping[str, int]) -> dict[str, int]:
    # Another thread may add a key while we read: dict() of a dict copies in one step under
    # the GIL, and a retry covers any other interleaving.
    for _ in range(5):
        with contextlib.suppress(RuntimeError):
            return dict(sorted(dict(counter).items()))
    return {}


@dataclass(frozen=True)
class GatewayFigures:
    """What a running gateway's families show, read in one place (:func:`gateway_figures`)."""

    gateway: str
    readings: int
    alerts: int
    refused: int
    unstable: int
    lost: int
    records_by_kind: dict[str, int]
    device_events: dict[str, int]  # "device:event" -> count
    messages_sent: int
    records_sent: int
    records_acked: int
    broker_refused: int
    records_confirmed: int
    records_refused: int  # in blocks a recorder refused: never stored, alarmed
    records_damaged: int  # in journal blocks that failed the gateway's own check
    records_unanswered: int  # sent max_resends times without any recorder answering
    records_resent: int
    probes: int
    connects: int
    disconnects: int
    connected: bool
    ack_latency_ms: float
    journal: JournalFigures | None  # None once the journal is closed


@dataclass(frozen=True)
class JournalFigures:
    last_seq: int
    backlog: int
    unconfirmed: int
    used_bytes: int
    budget_bytes: int
    budget_alarm: bool


def gateway_figures(gateway: Gateway) -> GatewayFigures:
    """The one function that knows which attributes of the gateway hold its counters."""
    stats = gateway.stats
    pub = gateway.publisher.stats
    journal = gateway.journal
    figures: JournalFigures | None
    try:  # the journal is closed once the gateway stopped
        journal.state("-")  # raises once the journal is closed
        figures = JournalFigures(
            last_seq=journal.head[0],
            backlog=journal.backlog(),
            unconfirmed=journal.unconfirmed(),
            used_bytes=journal.used_bytes,
            budget_bytes=journal.budget_bytes,
            budget_alarm=bool(journal.budget_alarm),
        )
    except (sqlite3.Error, CollectorError) as exc:
        log.debug("metrics: journal not readable: %s", exc)
        figures = None
    return GatewayFigures(
        gateway=gateway.settings.id,
        readings=stats.readings,
        alerts=stats.alerts,
        refused=stats.refused,
        unstable=stats.unstable,
        lost=stats.lost,
        records_by_kind=_counter_items(stats.by_kind),
        device_events=_counter_items(stats.device_events),
        messages_sent=pub.messages_sent,
        records_sent=pub.records_sent,
        records_acked=pub.records_acked,
        broker_refused=pub.refused,
        records_confirmed=pub.records_confirmed,
        records_refused=pub.records_refused,
        records_damaged=pub.records_damaged + stats.damaged,
        records_unanswered=pub.records_unanswered,
        records_resent=pub.records_resent,
        probes=pub.probes,
        connects=pub.connects,
        disconnects=pub.disconnects,
        connected=bool(gateway.publisher.connected),
        ack_latency_ms=pub.last_ack_latency_ms,
        journal=figures,
    )


@dataclass(frozen=True)
class RecorderFigures:
    """What a running recorder's families show, read in one place (:func:`recorder_figures`)."""

    client_id: str
    group: str
    messages: int
    records_written: int
    dead_letters: int
    records_refused: int
    write_failures: int
    batches: int
    connected: bool
    subscribed: bool


def recorder_figures(recorder: Recorder) -> RecorderFigures:
    """The one function that knows which attributes of the recorder hold its counters."""
    s = recorder.stats
    return RecorderFigures(
        client_id=recorder.client_id,
        group=recorder.settings.group,
        messages=s.messages,
        records_written=s.records_written,
        dead_letters=s.dead_letters,
        records_refused=s.records_refused,
        write_failures=s.write_failures,
        batches=s.batches,
        connected=recorder.connected.is_set(),
        subscribed=recorder.subscribed.is_set(),
    )


# -- metric families of the daemons -----------------------------------------------------------

_Row = tuple[str, MetricKind, str, float]


def _families(prefix: str, labels: dict[str, str], rows: Iterable[_Row]) -> list[Metric]:
    return [Metric(prefix + name, kind, text, [(dict(labels), value)]) for name, kind, text, value in rows]


def gateway_metrics(gateway: Gateway) -> list[Metric]:
    """The gateway's counters and gauges (``collector_gateway_*``), labelled with its id."""
    f = gateway_figures(gateway)
    gw = {"gateway": f.gateway}
    p = "collector_gateway_"
    rows: list[_Row] = [
        ("readings_total", "counter", "Readings received from devices.", f.readings),
        ("alerts_total", "counter", "Alerts published (out of tolerance, refusals, rules).", f.alerts),
        ("refused_total", "counter", "Readings refused (calibration, wrong gauge, no station).", f.refused),
        ("unstable_total", "counter", "Readings the device marked unsettled (not recorded).", f.unstable),
        (
            "lost_total",
            "counter",
            "Readings that could not be journaled (queue or journal full, journal error, stop).",
            f.lost,
        ),
        ("messages_sent_total", "counter", "Record messages handed to MQTT.", f.messages_sent),
        ("records_sent_total", "counter", "Records sent (a record sent again counts again).", f.records_sent),
        ("records_acked_total", "counter", "Records acknowledged by the broker (PUBACK).", f.records_acked),
        (
            "records_broker_refused_total",
            "counter",
            "Records the broker refused (PUBACK reason >= 0x80, e.g. not authorised); retried.",
            f.broker_refused,
        ),
        ("records_confirmed_total", "counter", "Records a recorder confirmed stored in InfluxDB.", f.records_confirmed),
        (
            "records_refused_total",
            "counter",
            "Records in blocks a recorder refused (dead-lettered, never stored, not sent again).",
            f.records_refused,
        ),
        (
            "records_damaged_total",
            "counter",
            "Records in journal blocks that failed the gateway's own check (never published).",
            f.records_damaged,
        ),
        (
            "records_unanswered_total",
            "counter",
            "Records sent max_resends times without any recorder answering (not sent again).",
            f.records_unanswered,
        ),
        (
            "records_resent_total",
            "counter",
            "Records sent again: the broker acknowledged them, no recorder confirmed them.",
            f.records_resent,
        ),
        ("probes_total", "counter", "Probes sent to find a lost tail of records.", f.probes),
        ("mqtt_connects_total", "counter", "Successful connections to the broker.", f.connects),
        ("mqtt_disconnects_total", "counter", "Broker connections lost.", f.disconnects),
        ("mqtt_reconnects_total", "counter", "Connections to the broker after the first.", max(f.connects - 1, 0)),
        ("mqtt_connected", "gauge", "1 while connected to the broker.", int(f.connected)),
        (
            "publish_ack_latency_ms",
            "gauge",
            "Milliseconds from publishing the last acknowledged record message to its PUBACK.",
            f.ack_latency_ms,
        ),
    ]
    synced = clock.kernel_synchronised()
    if synced is not None:
        rows.append(("clock_synchronised", "gauge", "1 while the kernel says the clock is synchronised.", int(synced)))
    if f.journal is not None:
        j = f.journal
        rows += [
            ("journal_last_seq", "gauge", "Sequence number of the newest journaled record.", j.last_seq),
            ("journal_backlog", "gauge", "Journaled records not yet acknowledged by the broker.", j.backlog),
            (
                "journal_unconfirmed",
                "gauge",
                "Records acknowledged by the broker but not yet confirmed in InfluxDB.",
                j.unconfirmed,
            ),
            ("journal_bytes", "gauge", "Bytes of the journal in use.", j.used_bytes),
            ("journal_budget_bytes", "gauge", "The journal's disk budget.", j.budget_bytes),
            (
                "journal_budget_alarm",
                "gauge",
                "1 while unsettled records fill the journal beyond its alarm level.",
                int(j.budget_alarm),
            ),
        ]
    metrics = _families(p, gw, rows)
    metrics.append(
        Metric(
            p + "records_total",
            "counter",
            "Records sealed into the journal, by record kind.",
            [({**gw, "kind": kind}, n) for kind, n in f.records_by_kind.items()],
        )
    )
    metrics.append(
        Metric(
            p + "device_events_total",
            "counter",
            "Device events (connected, disconnected, errors), by device and event.",
            [
                ({**gw, "device": device, "event": event}, n)
                for key, n in f.device_events.items()
                for device, _, event in [key.rpartition(":")]
            ],
        )
    )
    return metrics


def recorder_metrics(recorder: Recorder) -> list[Metric]:
    """The recorder's counters (``collector_recorder_*``), labelled with its MQTT client id."""
    f = recorder_figures(recorder)
    rows: list[_Row] = [
        ("messages_total", "counter", "Record messages received from the broker.", f.messages),
        ("records_written_total", "counter", "Records written to InfluxDB.", f.records_written),
        ("dead_letters_total", "counter", "Payloads refused into the dead-letter file.", f.dead_letters),
        ("records_refused_total", "counter", "Records in blocks refused (never stored).", f.records_refused),
        ("write_failures_total", "counter", "InfluxDB writes that failed (retried).", f.write_failures),
        ("batches_total", "counter", "InfluxDB write batches.", f.batches),
        ("mqtt_connected", "gauge", "1 while connected to the broker.", int(f.connected)),
        ("subscribed", "gauge", "1 once the broker confirmed the shared subscription.", int(f.subscribed)),
    ]
    return _families("collector_recorder_", {"recorder": f.client_id, "group": f.group}, rows)


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
