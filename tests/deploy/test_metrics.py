"""collector/metrics.py: the exposition format (prometheus_client's encoder), the HTTP endpoint
on the shared web plumbing, the families of a real gateway and recorder, and the read-only
journal status behind ``collector status``."""

from __future__ import annotations

import http.client
import io
import json
import math
import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from collector import config as config_mod
from collector.gateway.daemon import Gateway
from collector.gateway.journal import Journal
from collector.metrics import (
    CONTENT_TYPE,
    Metric,
    MetricsServer,
    gateway_metrics,
    journal_status,
    recorder_metrics,
    render,
    run_status,
    status_text,
)
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from simulators.mitutoyo import MitutoyoSimulator
from tests.helpers import wait_for

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], text)


def parse(text: str) -> tuple[Samples, dict[str, tuple[str, str]]]:
    """A strict little parser of the text format 0.0.4: samples, and (type, help) per family."""
    samples: Samples = {}
    meta: dict[str, tuple[str, str]] = {}
    helps: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            helps[name] = _unescape(doc)
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name in helps and name not in meta, f"TYPE after HELP, once: {name}"
            meta[name] = (kind, helps[name])
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels_text, value = m.groups()
            assert name in meta, f"sample before its TYPE: {name}"
            labels: list[tuple[str, str]] = []
            if labels_text:
                pos = 0
                while pos < len(labels_text):
                    lm = _LABEL.match(labels_text, pos)
                    assert lm, f"bad labels: {labels_text!r}"
                    labels.append((lm.group(1), _unescape(lm.group(2))))
                    pos = lm.end()
            number = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(value)
            samples.setdefault(name, {})[frozenset(labels)] = float(value) if number is None else number
    return samples, meta


def test_render_writes_help_type_and_escaped_labels() -> None:
    text = render(
        [
            Metric("demo_total", "counter", 'Things\\counted\nover "lines".', [({}, 3)]),
            Metric(
                "demo_level",
                "gauge",
                "A level.",
                [
                    ({"station": 'st "10"', "path": "C:\\gauges\nline"}, 1.5),
                    ({"station": "st-20", "path": ""}, math.inf),
                    ({"station": "st-30", "path": "x"}, math.nan),
                ],
            ),
            Metric("demo_empty", "gauge", "No samples yet.", []),
        ]
    )
    assert text.startswith('# HELP demo_total Things\\\\counted\\nover "lines".\n# TYPE demo_total counter\n')
    # label order carries no meaning; the client library writes them sorted by name
    assert 'demo_level{path="C:\\\\gauges\\nline",station="st \\"10\\""} 1.5\n' in text
    samples, meta = parse(text)
    assert meta["demo_total"] == ("counter", 'Things\\counted\nover "lines".')
    assert meta["demo_empty"] == ("gauge", "No samples yet.")
    assert samples["demo_total"] == {frozenset(): 3}
    level = samples["demo_level"]
    assert level[frozenset({("station", 'st "10"'), ("path", "C:\\gauges\nline")})] == 1.5
    assert level[frozenset({("station", "st-20"), ("path", "")})] == math.inf
    assert math.isnan(level[frozenset({("station", "st-30"), ("path", "x")})])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: Metric("bad-name", "gauge", "x"), "not a valid metric name: 'bad-name'"),
        (lambda: Metric("ok", "histogram", "x"), "kind must be counter or gauge"),  # type: ignore[arg-type]
        (lambda: Metric("ok", "gauge", "x", [({"bad-label": "v"}, 1)]), "not a valid label name: 'bad-label'"),
        (lambda: Metric("ok", "gauge", "x", [({"__reserved": "v"}, 1)]), "not a valid label name: '__reserved'"),
        # the client would expose it as ok_total
        (lambda: Metric("ok", "counter", "x"), "a counter's name ends in _total"),
    ],
)
def test_invalid_metrics_are_refused(make: Callable[[], Metric], reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        make()


def test_a_family_may_appear_once() -> None:
    with pytest.raises(ValueError, match="twice"):
        render([Metric("a", "gauge", "x"), Metric("a", "gauge", "y")])


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_server_scrapes_over_http_on_a_free_port() -> None:
    calls: list[int] = []

    def collect() -> list[Metric]:
        calls.append(1)
        return [Metric("scrapes_total", "counter", "Scrapes so far.", [({}, len(calls))])]

    with MetricsServer("127.0.0.1", 0, collect) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
        status, ctype, body = _get(server.url)
        assert status == 200 and ctype == CONTENT_TYPE
        assert parse(body)[0]["scrapes_total"] == {frozenset(): 1}
        assert parse(_get(server.url)[2])[0]["scrapes_total"] == {frozenset(): 2}  # built at scrape time
        assert _get(f"http://127.0.0.1:{server.port}/other")[0] == 404
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("HEAD", "/metrics")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        conn.close()


def test_a_failing_collector_answers_500_and_the_server_lives_on() -> None:
    state = {"fail": True}

    def collect() -> list[Metric]:
        if state["fail"]:
            raise RuntimeError("journal unreadable")
        return []

    with MetricsServer("127.0.0.1", 0, collect) as server:
        status, _, body = _get(server.url)
        assert status == 500 and "journal unreadable" in body
        state["fail"] = False
        assert _get(server.url)[:2] == (200, CONTENT_TYPE)


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


def test_counters_of_a_real_gateway_and_recorder_move(
    stack_config: Callable[..., tuple[Path, config_mod.Config]], caliper: MitutoyoSimulator
) -> None:
    _, cfg = stack_config()
    assert cfg.influxdb is not None
    gateway = Gateway(cfg)
    recorder = Recorder(cfg, open_store(cfg.influxdb))
    gw = {"gateway": "gw-test-1"}
    rec = {"recorder": "rec-" + cfg.mqtt.topic_prefix, "group": "rec"}
    gateway.start()
    server = MetricsServer("127.0.0.1", 0, lambda: [*gateway_metrics(gateway), *recorder_metrics(recorder)]).start()
    try:
        wait_for(lambda: gateway.publisher.connected, what="gateway connected")
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        before, meta = parse(_get(server.url)[2])
        assert meta["collector_gateway_readings_total"][0] == "counter"
        assert meta["collector_gateway_journal_backlog"][0] == "gauge"
        assert _value(before, "collector_gateway_readings_total", **gw) == 0
        assert _value(before, "collector_gateway_mqtt_connected", **gw) == 1
        assert _value(before, "collector_gateway_device_events_total", device="caliper-1", event="connected", **gw) >= 1
        assert _value(before, "collector_recorder_records_written_total", **rec) == 0

        recorder.start()  # the recorder comes late: records wait unconfirmed meanwhile
        for value in ("12.001", "12.002", "12.090"):  # D1, L1 (out of tolerance: an alert), D1
            caliper.send_value(Decimal(value))
        wait_for(lambda: gateway.stats.measurements == 3, what="three measurements")
        wait_for(
            lambda: gateway.publisher.stats.records_confirmed >= gateway.stats.records,
            timeout=20,
            what="every record confirmed",
        )
        after, _ = parse(_get(server.url)[2])
    finally:
        server.stop()
        gateway.stop()
        recorder.stop()
    records = gateway.stats.records
    assert _value(after, "collector_gateway_readings_total", **gw) == 3
    assert _value(after, "collector_gateway_records_total", kind="measurement", **gw) == 3
    assert sum(v for k, v in after["collector_gateway_records_total"].items()) == records
    assert _value(after, "collector_gateway_alerts_total", **gw) >= 1
    assert _value(after, "collector_gateway_records_acked_total", **gw) >= records
    assert _value(after, "collector_gateway_records_confirmed_total", **gw) >= records
    assert _value(after, "collector_gateway_journal_last_seq", **gw) == records
    assert _value(after, "collector_gateway_journal_backlog", **gw) == 0
    assert _value(after, "collector_gateway_journal_unconfirmed", **gw) == 0
    assert _value(after, "collector_gateway_lost_total", **gw) == 0
    assert _value(after, "collector_gateway_publish_ack_latency_ms", **gw) > 0
    assert _value(after, "collector_recorder_records_written_total", **rec) >= records
    assert _value(after, "collector_recorder_messages_total", **rec) >= 1
    assert _value(after, "collector_recorder_subscribed", **rec) == 1
    assert _value(after, "collector_recorder_dead_letters_total", **rec) == 0
    for name, series in after.items():  # counters only go up between scrapes
        if name.endswith("_total") and name in before:
            for labels, earlier in before[name].items():
                assert series.get(labels, 0) >= earlier, name
    # once the gateway stopped (journal closed) the builder still answers, without journal gauges
    stopped = {m.name for m in gateway_metrics(gateway)}
    assert "collector_gateway_readings_total" in stopped and "collector_gateway_journal_backlog" not in stopped


# -- collector status -------------------------------------------------------------------------


def _journal_with(path: Path, n: int, delivered: int, stored: int) -> None:
    journal = Journal(
        path, "gw-9", clock_us=iter(range(1_700_000_000_000_000, 1_800_000_000_000_000, 1_000_000)).__next__
    )
    try:
        drafts = [
            {"id": f"r{i}", "kind": "audit", "site": "s", "line": "l", "station": "st-10", "event": "x"}
            for i in range(n)
        ]
        for draft in drafts:  # one block each
            journal.append([draft])
        if delivered:
            journal.mark_delivered([(1, delivered)])
        if stored:
            journal.mark_stored([(1, stored)])
    finally:
        journal.close()


def test_status_of_a_closed_journal_creates_no_files(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _journal_with(path, 5, delivered=4, stored=2)
    before = sorted(p.name for p in tmp_path.iterdir())
    st = journal_status(path, now_us=1_700_000_000_000_000 + 600_000_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["journal.sqlite"]
    assert (st.gateway, st.last_seq, st.records, st.backlog, st.unconfirmed) == ("gw-9", 5, 5, 1, 2)
    assert not st.running
    assert st.oldest_unsent_us == 1_700_000_000_000_000 + 4_000_000  # record 5
    assert st.oldest_unsettled_us == 1_700_000_000_000_000 + 2_000_000  # record 3
    assert st.age_s(st.oldest_unsent_us) == 596.0
    text = status_text(st, max_age=300)
    assert "seq 5" in text and "1 record(s) not acknowledged" in text and "unsent for" in text
    assert "unconfirmed for" in text


def test_status_while_the_journal_is_open_reads_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path, "gw-9")
    try:
        journal.append([{"id": "a", "kind": "audit", "site": "s", "line": "l", "station": "st-10", "event": "x"}])
        assert Path(f"{path}-wal").exists()
        st = journal_status(path)
        assert st.running and st.last_seq == 1 and st.backlog == 1
        # the read-only reader did not disturb the writer
        journal.append([{"id": "b", "kind": "audit", "site": "s", "line": "l", "station": "st-10", "event": "x"}])
        assert journal_status(path).last_seq == 2
    finally:
        journal.close()


def test_run_status_exit_codes_and_json(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _journal_with(path, 3, delivered=3, stored=3)
    cfg = config_mod.parse(f"gateway: {{id: gw-9, site: s, line: l, journal: {path}}}\n")
    out = io.StringIO()
    assert run_status(cfg, max_age=300, out=out) == 0  # everything settled
    assert "state        OK" in out.getvalue()
    _journal_with(tmp_path / "j2.sqlite", 2, delivered=0, stored=0)  # old and unsent
    cfg2 = config_mod.parse(f"gateway: {{id: gw-9, site: s, line: l, journal: {tmp_path / 'j2.sqlite'}}}\n")
    out = io.StringIO()
    assert run_status(cfg2, as_json=True, max_age=60, out=out) == 1
    body = json.loads(out.getvalue())
    assert body["backlog"] == 2 and body["oldest_unsent_age_s"] > 60 and body["problems"]
    other = config_mod.parse(f"gateway: {{id: gw-other, site: s, line: l, journal: {path}}}\n")
    with pytest.raises(Exception, match="belongs to gateway 'gw-9'"):
        run_status(other, out=io.StringIO())
    missing = config_mod.parse(f"gateway: {{id: gw-9, site: s, line: l, journal: {tmp_path / 'none.sqlite'}}}\n")
    with pytest.raises(Exception, match="does not exist"):
        run_status(missing, out=io.StringIO())
    assert not (tmp_path / "none.sqlite").exists()
    with sqlite3.connect(path) as db:  # not a journal at all
        db.execute("DROP TABLE blocks")
    with pytest.raises(Exception, match="not readable as a gateway journal"):
        run_status(cfg, out=io.StringIO())
