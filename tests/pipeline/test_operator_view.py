"""The operator view, tested as a user would use it: keys or clicks in, screen out.

A real gateway (real Mosquitto, InfluxDB, the Mitutoyo caliper simulator on a pty) serves
the view; Debian's Chromium, driven by Playwright, shows the page. A keyboard-wedge scanner
is a keyboard: the tests type codes and press Enter without clicking anything first.
The plain-HTTP tests at the end read the JSON and SSE endpoints directly, so that a
failure there is easy to read.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from collector import config as config_mod
from collector.gateway.daemon import Gateway
from collector.gateway.operator_view import MAX_BODY, OperatorView
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD, Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from tests.conftest import require_binary
from tests.helpers import wait_for
from tests.pipeline.conftest import build_config, write_config

pytestmark = pytest.mark.services

#: operator badges ``B:op-42`` or part labels ``HX-4711|HX000123|L-7``
SCAN_PATTERN = r"B:(?P<operator>op-\d+)|(?P<part_number>HX-\d{4})\|(?P<serial>HX\d{6})\|(?P<lot>L[\d-]+)"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 5000


# -- the stack -------------------------------------------------------------------------------------
def labelled_station_config(
    tmp_path: Path, broker: Mosquitto, influxd: InfluxD, database: str, prefix: str
) -> config_mod.Config:
    """One station that waits for a part label and needs an operator signed in by badge."""
    data = build_config(tmp_path, broker, influxd, database, prefix, gateway={"operator_view": {"port": 0}})
    station = data["stations"][0]
    station["part"] = None
    station["scan_pattern"] = SCAN_PATTERN
    station["require_operator"] = True
    return config_mod.load(write_config(tmp_path, data))


@contextlib.contextmanager
def running(cfg: config_mod.Config) -> Iterator[Gateway]:
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def labelled_gateway(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    caliper: MitutoyoSimulator,
) -> Iterator[Gateway]:
    with running(labelled_station_config(tmp_path, broker, influxd, database, topic_prefix)) as gateway:
        yield gateway


def view_of(gateway: Gateway) -> OperatorView:
    view = gateway.operator_view
    assert isinstance(view, OperatorView) and view.port > 0
    return view


def measurements(gateway: Gateway) -> list[dict[str, Any]]:
    """The measurement records in the gateway's journal, in order."""
    records = (json.loads(payload) for _, payload, _ in gateway.journal.iter_payloads())
    return [r for r in records if r["kind"] == "measurement"]


# -- the browser -------------------------------------------------------------------------------------
def sync_api() -> Any:
    """Playwright's sync API; missing, it skips the test, except under CI=true where it fails."""
    if os.environ.get("CI") == "true":
        import playwright.sync_api

        return playwright.sync_api
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(page, expect): Debian's Chromium with a fresh profile, one page at 1280x800."""
    chromium = require_binary("chromium")
    api = sync_api()
    profile = tmp_path / "chromium-profile"
    with api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page, api.expect
        finally:
            context.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def scanner(page: Any, code: str) -> None:
    """A keyboard-wedge scanner: the code typed as keys, then Enter, into whatever has focus."""
    page.keyboard.type(code)
    page.keyboard.press("Enter")


def background(page: Any, selector: str) -> tuple[int, int, int]:
    colour = page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor")
    r, g, b = (int(x) for x in re.findall(r"\d+", colour)[:3])
    return r, g, b


def is_green(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return g > 90 and g > r + 40 and g > b + 20


def is_red(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return r > 120 and r > g + 60 and r > b + 60


def open_station(page: Any, expect: Any, gateway: Gateway, path: str = "/station/st-10") -> None:
    page.goto(view_of(gateway).url + path)
    expect(page.locator("#conn")).to_have_text("connected")
    expect(page.locator("#gateway")).to_have_text(gateway.settings.id)


# -- 1. scanner and caliper in, the screen out ---------------------------------------------------------
def test_badge_label_and_caliper_values_show_live_on_the_screen(
    labelled_gateway: Gateway, caliper: MitutoyoSimulator, browser: tuple[Any, Any], tmp_path: Path
) -> None:
    gateway = labelled_gateway
    page, expect = browser
    open_station(page, expect, gateway, "/")  # one station: the list redirects to it
    assert page.url.endswith("/station/st-10")
    expect(page.locator("#operator")).to_have_text("sign in: scan your badge")
    expect(page.locator("#serial")).to_have_text("scan the part label")
    assert page.evaluate("document.activeElement.id") == "scan"

    scanner(page, "B:op-42")  # no click first: the scan field has the focus
    expect(page.locator("#operator")).to_have_text("op-42")

    scanner(page, "HX-4711|HX000123|L-7")
    expect(page.locator("#serial")).to_have_text("HX000123")
    expect(page.locator("#lot")).to_have_text("L-7")
    expect(page.locator("#part-number")).to_have_text("HX-4711")
    expect(page.locator("#plan-revision")).to_have_text("C")
    expect(page.locator("#next")).to_contain_text("D1 Bore diameter")
    expect(page.locator("#next")).to_contain_text("11.980 … 12.020 mm")
    expect(page.locator("#next-nominal")).to_have_text("12.000")

    caliper.send_value(Decimal("12.004"))
    expect(page.locator("#last-value")).to_have_text("12.004")
    expect(page.locator("#last-card")).to_have_class(re.compile(r"\bpass\b"))
    expect(page.locator("#last-verdict")).to_contain_text("PASS")
    expect(page.locator('.tile[data-characteristic="D1"]')).to_have_class(re.compile(r"\bpass\b"))
    assert is_green(background(page, "#last-card"))
    assert is_green(background(page, '.tile[data-characteristic="D1"]'))
    expect(page.locator("#next")).to_contain_text("L1 Overall length")
    expect(page.locator("#next")).to_contain_text("11.95 … 12.05 mm")

    caliper.send_value(Decimal("12.080"))  # L1 is judged to 2 decimals: 12.08, above 12.05
    expect(page.locator("#last-value")).to_have_text("12.08")
    expect(page.locator("#last-card")).to_have_class(re.compile(r"\bfail\b"))
    expect(page.locator("#last-verdict")).to_have_text("FAIL · above upper limit 12.05")
    expect(page.locator('.tile[data-characteristic="L1"]')).to_have_class(re.compile(r"\bfail\b"))
    assert is_red(background(page, "#last-card"))
    assert is_red(background(page, '.tile[data-characteristic="L1"]'))
    expect(page.locator("#verdict-word")).to_have_text("REJECT")
    expect(page.locator("#verdict-detail")).to_contain_text("serial HX000123")
    expect(page.locator("#verdict-detail")).to_contain_text("released by op-42")
    expect(page.locator("#verdict-detail")).to_contain_text("failed: L1")
    assert is_red(background(page, "#verdict"))
    # the next part needs its own label; the screen says so
    expect(page.locator("#serial")).to_have_text("scan the part label")
    screenshot(page, tmp_path, "operator-view.png")

    records = measurements(gateway)
    assert [(r["characteristic"], r["judged_value"], r["verdict"]) for r in records] == [
        ("D1", "12.004", "pass"),
        ("L1", "12.08", "fail"),
    ]
    assert {(r["operator"], r["serial"], r["lot"]) for r in records} == {("op-42", "HX000123", "L-7")}


# -- 2. refusals in the banner -------------------------------------------------------------------------
def test_an_unknown_part_number_is_refused_in_the_banner_and_nothing_is_recorded(
    labelled_gateway: Gateway, caliper: MitutoyoSimulator, browser: tuple[Any, Any], tmp_path: Path
) -> None:
    gateway = labelled_gateway
    page, expect = browser
    open_station(page, expect, gateway)
    scanner(page, "B:op-42")
    expect(page.locator("#operator")).to_have_text("op-42")
    before = gateway.stats.measurements

    scanner(page, "HX-9999|HX000001|L-1")
    banner = page.locator("#banner")
    expect(banner).to_contain_text("no inspection plan for part number 'HX-9999'")
    expect(banner).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#serial")).to_have_text("scan the part label")
    assert gateway.views.get("st-10")["part_number"] == "HX-4711"  # type: ignore[index]

    # a value measured now has no part to belong to: refused, and the screen says why
    refused = gateway.stats.refused
    caliper.send_value(Decimal("12.001"))
    expect(banner).to_contain_text("no part: scan the part's label first")
    expect(banner).to_have_class(re.compile(r"\bwarn\b"))
    expect(page.locator("#last-value")).to_have_text("no value yet")
    screenshot(page, tmp_path, "operator-view-refused.png")
    assert gateway.stats.refused == refused + 1
    assert gateway.stats.measurements == before
    assert measurements(gateway) == []

    # a code that is neither a badge nor a label
    scanner(page, "hello")
    expect(banner).to_contain_text("does not match the label format")

    # the view goes away: the screen says it is no longer live
    view_of(gateway).stop()
    expect(page.locator("#conn")).to_have_text("disconnected")
    expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))


# -- 3. re-measure through the dialog ---------------------------------------------------------------
def test_remeasure_through_the_dialog_supersedes_the_first_value(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    v1_store: InfluxV1Store,
    caliper: MitutoyoSimulator,
    browser: tuple[Any, Any],
) -> None:
    cfg = labelled_station_config(tmp_path, broker, influxd, database, topic_prefix)
    recorder = Recorder(cfg, open_store(cfg.influxdb))  # type: ignore[arg-type]
    recorder.start()
    try:
        with running(cfg) as gateway:
            page, expect = browser
            open_station(page, expect, gateway)
            scanner(page, "B:op-42")
            expect(page.locator("#operator")).to_have_text("op-42")
            scanner(page, "HX-4711|HX000200|L-7")
            expect(page.locator("#serial")).to_have_text("HX000200")
            page.get_by_role("button", name="Patrol").click()
            expect(page.locator("#reason")).to_have_text("Patrol")

            caliper.send_value(Decimal("12.031"))  # the gauge was not seated: out of tolerance
            expect(page.locator("#last-value")).to_have_text("12.031")
            expect(page.locator("#last-card")).to_have_class(re.compile(r"\bfail\b"))
            expect(page.locator("#last-verdict")).to_have_text("FAIL · above upper limit 12.020")

            page.get_by_role("button", name="Re-measure").click()
            dialog = page.locator("#dlg-remeasure")
            expect(dialog).to_be_visible()
            expect(page.locator("#remeasure-char")).to_have_value("D1")  # the last measured
            dialog.get_by_role("button", name="Re-measure").click()  # no reason yet: refused here
            expect(page.locator("#remeasure-error")).to_have_text("choose a reason")
            page.locator("#remeasure-reason").select_option("gauge not seated")
            page.locator("#remeasure-text").fill("anvil tilted")
            dialog.get_by_role("button", name="Re-measure").click()
            expect(dialog).to_be_hidden()
            expect(page.locator("#remeasure-flag")).to_be_visible()
            expect(page.locator("#next-id")).to_have_text("D1")
            expect(page.locator("#banner")).to_contain_text("re-measure D1: gauge not seated: anvil tilted")
            wait_for(lambda: page.evaluate("document.activeElement.id") == "scan", what="the scan field refocused")
            screenshot(page, tmp_path, "operator-view-remeasure.png")

            caliper.send_value(Decimal("12.002"))
            expect(page.locator("#last-value")).to_have_text("12.002")
            expect(page.locator("#last-card")).to_have_class(re.compile(r"\bpass\b"))
            expect(page.locator('.tile[data-characteristic="D1"]')).to_have_class(re.compile(r"\bpass\b"))
            expect(page.locator("#remeasure-flag")).to_be_hidden()
            expect(page.locator("#next-id")).to_have_text("L1")

            first, second = measurements(gateway)
            assert (first["characteristic"], first["judged_value"], first.get("supersedes")) == ("D1", "12.031", None)
            assert second["characteristic"] == "D1" and second["judged_value"] == "12.002"
            assert second["supersedes"] == first["id"]
            assert second["reason"] == "gauge not seated: anvil tilted" and second["operator"] == "op-42"

            def stored() -> list[dict[str, Any]]:
                rows = v1_store.query('SELECT "payload" FROM "inspection"')
                return [json.loads(r["payload"]) for r in rows]

            wait_for(lambda: len(stored()) == 2, timeout=15, what="both records in InfluxDB")
            in_db = {r["id"]: r for r in stored()}
            assert in_db[second["id"]]["supersedes"] == first["id"]
            assert second["reason_for_test"] == "patrol"

            # the part is given up half-way, then the operator signs out
            page.get_by_role("button", name="Abandon part").click()
            abandon = page.locator("#dlg-abandon")
            expect(abandon).to_be_visible()
            page.locator("#abandon-reason").select_option("part damaged")
            abandon.get_by_role("button", name="Abandon part").click()
            expect(abandon).to_be_hidden()
            expect(page.locator("#verdict-word")).to_have_text("INCOMPLETE")
            expect(page.locator("#verdict-detail")).to_have_text("serial HX000200 · not released · missing: L1")
            page.get_by_role("button", name="Sign out").click()
            expect(page.locator("#operator")).to_have_text("sign in: scan your badge")
            expect(page.get_by_role("button", name="Sign out")).to_be_disabled()
    finally:
        recorder.stop()


# -- plain HTTP: JSON, SSE, errors ---------------------------------------------------------------------
class Client:
    def __init__(self, view: OperatorView) -> None:
        self.host, self.port = "127.0.0.1", view.port

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _, data = self.request("GET", path)
        return status, json.loads(data)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, _, data = self.request("POST", path, raw, {"Content-Type": "application/json", **(headers or {})})
        return status, json.loads(data)


class Events:
    """An SSE stream read line by line."""

    def __init__(self, view: OperatorView, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=5)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()

    def next(self) -> tuple[str, dict[str, Any] | None]:
        """The next event's data (``("data", view)``) or a comment (``("comment", None)``)."""
        fields: list[str] = []
        while True:
            line = self.resp.readline()
            if not line:
                return "eof", None
            text = line.decode().rstrip("\n")
            if text == "":
                if any(f.startswith("data: ") for f in fields):
                    return "data", json.loads(next(f for f in fields if f.startswith("data: "))[6:])
                if any(f.startswith(":") for f in fields):
                    return "comment", None
                fields.clear()
                continue
            fields.append(text)

    def close(self) -> None:
        self.resp.close()  # the response holds the socket open too
        self.conn.close()


def streams() -> list[threading.Thread]:
    """The view's request threads still running (open event streams)."""
    return [t for t in threading.enumerate() if t.name == "operator-view-request" and t.is_alive()]


@pytest.fixture
def plain_gateway(
    stack_config: Callable[..., tuple[Path, config_mod.Config]], caliper: MitutoyoSimulator
) -> Iterator[Gateway]:
    _, cfg = stack_config(gateway={"operator_view": {"port": 0}})
    with running(cfg) as gateway:
        yield gateway


def test_pages_and_json_endpoints(plain_gateway: Gateway) -> None:
    view = view_of(plain_gateway)
    client = Client(view)
    assert view.url == f"http://127.0.0.1:{view.port}"

    status, headers, _ = client.request("GET", "/")
    assert status == 303 and headers["location"] == "/station/st-10"

    status, headers, body = client.request("GET", "/station/st-10")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-cache" and "default-src 'self'" in headers["content-security-policy"]
    page = body.decode()
    assert 'data-station="st-10"' in page and 'data-gateway="gw-test-1"' in page
    assert "{{" not in page and "://" not in page  # every asset is served by the view itself

    for asset, ctype in (("operator.js", "text/javascript"), ("operator.css", "text/css")):
        status, headers, body = client.request("GET", f"/static/operator/{asset}")
        assert status == 200 and headers["content-type"].startswith(ctype) and body
        assert headers["cache-control"] == "no-cache"
    for missing in (
        "/static/operator/nope.js",
        "/static/operator/../operator_view.py",
        "/static/operator/station.html",
    ):
        assert client.request("GET", missing)[0] == 404, missing

    status, data = client.get_json("/station/st-10/view")
    assert status == 200
    assert data["station"] == "st-10" and data["operator"] == "op-117" and data["serial"] == "HX000001"
    assert data["next"] == {
        "characteristic": "D1",
        "name": "Bore diameter",
        "nominal": "12.000",
        "lsl": "11.980",
        "usl": "12.020",
        "unit": "mm",
        "remeasure": False,
    }
    assert [t["characteristic"] for t in data["plan"]] == ["D1", "L1"] and data["version"] >= 1

    for path in ("/station/st-99", "/station/st-99/view", "/station/st-99/events", "/nope"):
        status, _, body = client.request("GET", path)
        assert status == 404, path
        assert json.loads(body)["ok"] is False
    assert client.post("/station/st-99/scan", {"code": "x"})[0] == 404
    status, headers, _ = client.request("DELETE", "/station/st-10")
    assert status == 501  # http.server's answer to a method it has no handler for
    status, headers, _ = client.request("POST", "/station/st-10/view", b"{}", {"Content-Type": "application/json"})
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_commands_answer_ok_or_a_readable_error(plain_gateway: Gateway, caliper: MitutoyoSimulator) -> None:
    gateway = plain_gateway
    client = Client(view_of(gateway))
    cmd = "/station/st-10/command"

    status, body = client.post("/station/st-10/scan", {"code": "HX-4711|HX000001|L-1"})
    assert status == 400 and body == {"ok": False, "error": "station st-10: no scan pattern configured"}
    status, body = client.post(cmd, {"command": "remeasure", "args": {"reason": "suspect value"}})
    assert status == 400 and body["error"] == "station st-10: nothing measured yet to re-measure"

    caliper.send_value(Decimal("12.001"))
    wait_for(lambda: gateway.stats.measurements == 1, what="one measurement")
    status, body = client.post(cmd, {"command": "remeasure", "args": {"reason": "suspect value", "by": "op-117"}})
    assert status == 200 and body["ok"] is True and body["message"] == "re-measure D1: suspect value"
    wait_for(lambda: gateway.views.get("st-10")["next"]["remeasure"], what="the view shows the re-measure")  # type: ignore[index]
    status, body = client.post(cmd, {"command": "patrol", "args": {"by": "op-117"}})
    assert status == 200 and len(body["records"]) == 1

    bad: list[tuple[Any, int, str]] = [
        ({"command": "remeasure", "args": {}}, 400, "remeasure needs reason"),
        ({"command": "remeasure", "args": {"reason": "x", "timeout": "0"}}, 400, "remeasure takes no timeout"),
        ({"command": "invalidate", "args": {"reason": "x", "by": "op-1"}}, 400, "invalidate needs record_id"),
        ({"command": "patrol", "args": {"by": 17}}, 400, "by must be a string"),
        ({"command": "patrol", "args": ["op-1"]}, 400, "args must be an object"),
        (["scan"], 400, "the body must be a JSON object"),
        (b"{not json", 400, "the body is not valid JSON"),
        (b"{" + b" " * MAX_BODY + b"}", 413, f"request body over {MAX_BODY} bytes"),
    ]
    status, body = client.post(cmd, {"command": "format_disk"})
    assert status == 400 and body["error"].startswith("unknown command 'format_disk' (known: scan, sign_in")
    for body_in, want_status, want_error in bad:
        status, body = client.post(cmd, body_in)
        assert (status, body) == (want_status, {"ok": False, "error": want_error}), body_in
    status, body = client.post("/station/st-10/scan", {"code": "  "})
    assert (status, body["error"]) == (400, "scan needs a code")

    # another web page in the workstation's browser cannot send commands
    patrol = json.dumps({"command": "patrol"}).encode()
    status, _, data = client.request("POST", cmd, patrol, {"Content-Type": "text/plain"})
    assert status == 415 and json.loads(data)["ok"] is False
    status, body = client.post(cmd, {"command": "patrol"}, {"Origin": "http://evil.example"})
    assert status == 403 and "own pages" in body["error"]
    status, body = client.post(cmd, {"command": "patrol"}, {"Host": "evil.example:80"})
    assert status == 421 and "loopback" in body["error"]
    status, body = client.post(cmd, {"command": "patrol"}, {"Origin": f"http://127.0.0.1:{client.port}"})
    assert status == 200
    behind_a_proxy = {"Origin": "https://qc-panel.example", "X-Forwarded-Host": "qc-panel.example"}
    assert client.post(cmd, {"command": "patrol"}, behind_a_proxy)[0] == 200
    assert gateway.stats.measurements == 1


def test_events_stream_the_view_and_end_when_the_view_stops(
    stack_config: Callable[..., tuple[Path, config_mod.Config]], caliper: MitutoyoSimulator
) -> None:
    _, cfg = stack_config(gateway={"operator_view": {"port": 0}})
    gateway = Gateway(cfg)
    gateway.start()
    events: Events | None = None
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        events = Events(view_of(gateway), "/station/st-10/events")
        assert events.resp.status == 200
        assert events.resp.getheader("Content-Type", "").startswith("text/event-stream")
        kind, first = events.next()
        assert kind == "data" and first is not None and first["station"] == "st-10" and first["last"] is None

        caliper.send_value(Decimal("11.950"))
        kind, fresh = events.next()
        assert kind == "data" and fresh is not None and fresh["version"] > first["version"]
        assert fresh["last"]["judged_value"] == "11.950" and fresh["last"]["verdict"] == "fail"
        assert fresh["last"]["limit"] == "lower" and fresh["plan"][0]["verdict"] == "fail"
        assert fresh["next"]["characteristic"] == "L1"

        started = time.monotonic()
        assert events.next() == ("comment", None)  # a keepalive while nothing happens
        assert time.monotonic() - started < 2.5

        # a page that goes away ends its stream (the next keepalive finds the socket closed)
        other = Events(view_of(gateway), "/station/st-10/events")
        assert other.next()[0] == "data"
        assert len(streams()) == 2
        other.close()
        wait_for(lambda: len(streams()) == 1, timeout=3, what="the closed page's stream to end")
    finally:
        started = time.monotonic()
        gateway.stop()
        stopped_in = time.monotonic() - started
        if events is not None:
            tail = [events.next()[0] for _ in range(5)]
            assert "eof" in tail  # the stream ended with the view (after a keepalive at most)
            events.close()
    assert stopped_in < 3.0


def test_the_station_list_links_every_station(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    caliper: MitutoyoSimulator,
) -> None:
    data = build_config(tmp_path, broker, influxd, database, topic_prefix, gateway={"operator_view": {"port": 0}})
    data["stations"].append({"id": "st-20", "plan": "HX-4711", "part": {"part_number": "HX-4711"}})
    with running(config_mod.load(write_config(tmp_path, data))) as gateway:
        client = Client(view_of(gateway))
        status, headers, body = client.request("GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        page = body.decode()
        assert '<a href="/station/st-10">st-10</a>' in page and '<a href="/station/st-20">st-20</a>' in page
        assert "Gateway gw-test-1" in page
        status, data_20 = client.get_json("/station/st-20/view")
        assert status == 200 and data_20["station"] == "st-20"
