"""The operator view, tested as a user would use it: keys or clicks in, screen out.

A real gateway (real Mosquitto, InfluxDB, the Mitutoyo caliper simulator on a pty) serves
the view; Debian's Chromium, driven by Playwright, shows the page. A keyboard-wedge scanner
is a keyboard: the tests type codes and press Enter without clicking anything first.
The plain-HTTP tests at the end read the JSON and SSE endpoints directly, so that a
failure there is easy to read.
"""

from __future__ import annotations

import contextlib
import hashlib
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
import yaml

from collector import config as config_mod
from collector.chain.keys import KeyRing
from collector.errors import ConfigError
from collector.evidence.trace import TraceFilter, trace
from collector.gateway.daemon import Gateway
from collector.gateway.operator_view import MAX_BODY, OperatorView
from collector.inspection.commands import parse_request
from collector.inspection.records import uuid7
from collector.people.register import Actor
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD, Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from tests.conftest import require_binary
from tests.helpers import wait_for
from tests.pipeline.conftest import build_config, write_config
from tests.pipeline.people import SECRET, signer, write_register

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
    """One station that waits for a part label and needs an operator signed in by badge and PIN."""
    people = {"register": str(write_register(tmp_path)), "checks_per_second": 50}
    data = build_config(
        tmp_path, broker, influxd, database, prefix, gateway={"operator_view": {"port": 0}, "people": people}
    )
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
    records = (r for block, _ in gateway.journal.iter_blocks() for r in block.materialise())
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


def badge_and_pin(page: Any, expect: Any, badge: str = "B:op-42", pin: str = SECRET["op-42"]) -> None:
    """The badge scanned, then the PIN typed into the dialog that asks for it."""
    scanner(page, badge)
    dialog = page.locator("#dlg-signin")
    expect(dialog).to_be_visible()
    expect(page.locator("#signin-user")).to_have_value(badge.removeprefix("B:"))
    assert page.evaluate("document.activeElement.id") == "signin-secret"
    page.keyboard.type(pin)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    wait_for(lambda: page.evaluate("document.activeElement.id") == "scan", what="the scan field refocused")


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
    expect(page.locator("#dlg-signin")).to_be_visible()  # the badge alone is not enough: the PIN
    page.keyboard.type("1111")
    page.keyboard.press("Enter")
    expect(page.locator("#signin-error")).to_have_text("unknown user or wrong PIN/password")
    expect(page.locator("#operator")).to_have_text("sign in: scan your badge")
    screenshot(page, tmp_path, "operator-view-sign-in.png")
    page.locator("#signin-secret").fill(SECRET["op-42"])
    page.locator("#signin-ok").click()
    expect(page.locator("#dlg-signin")).to_be_hidden()
    expect(page.locator("#operator")).to_have_text("op-42 · Olga Petrova")
    wait_for(lambda: page.evaluate("document.activeElement.id") == "scan", what="the scan field refocused")

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
    journal = [r for block, _ in gateway.journal.iter_blocks() for r in block.materialise()]
    (refused,) = [r for r in journal if r.get("event") == "command_refused"]  # the wrong PIN, on record
    assert (refused["by"], refused["subject"], refused["detail"]) == (
        "op-42",
        "sign_in",
        "sign_in refused: wrong secret",
    )
    (loaded,) = [r for r in journal if r.get("event") == "config_loaded"]  # and the register in force
    register = gateway.settings.people.register_file  # type: ignore[union-attr]
    assert json.loads(loaded["detail"])["register_sha256"] == hashlib.sha256(register.read_bytes()).hexdigest()
    (signed_in,) = [r for r in journal if r.get("event") == "sign_in"]
    assert (signed_in["signed_by"], signed_in["signature_method"]) == ("op-42", "secret")
    (part,) = [r for r in journal if r["kind"] == "part"]
    assert (part["released_by"], part["signature_meaning"], part["signature_method"]) == (
        "op-42",
        "rejected",
        "session",
    )


# -- 2. refusals in the banner -------------------------------------------------------------------------
def test_an_unknown_part_number_is_refused_in_the_banner_and_nothing_is_recorded(
    labelled_gateway: Gateway, caliper: MitutoyoSimulator, browser: tuple[Any, Any], tmp_path: Path
) -> None:
    gateway = labelled_gateway
    page, expect = browser
    open_station(page, expect, gateway)
    badge_and_pin(page, expect)
    expect(page.locator("#operator")).to_have_text("op-42 · Olga Petrova")
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
            badge_and_pin(page, expect)
            expect(page.locator("#operator")).to_have_text("op-42 · Olga Petrova")
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
            # the reason is signed: who signs (the operator, filled in) and the PIN again
            expect(page.locator("#remeasure-signature")).to_be_visible()
            expect(page.locator("#remeasure-signer")).to_have_value("op-42")
            dialog.get_by_role("button", name="Re-measure").click()
            expect(page.locator("#remeasure-error")).to_have_text("enter who signs and the PIN or password")
            page.locator("#remeasure-secret").fill(SECRET["op-42"])
            screenshot(page, tmp_path, "operator-view-remeasure-signed.png")
            dialog.get_by_role("button", name="Re-measure").click()
            expect(dialog).to_be_hidden()
            assert page.locator("#remeasure-secret").input_value() == ""  # the PIN is not kept
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
            assert (second["signed_by"], second["signature_meaning"], second["signature_method"]) == (
                "op-42",
                "remeasured",
                "secret",
            )

            assert cfg.recorder is not None
            register = KeyRing.load(cfg.recorder.keys)

            def stored() -> dict[str, dict[str, Any]]:
                found = trace(v1_store, TraceFilter(serial="HX000200", characteristic="D1"), register)
                assert all(r["verified"] for r in found), [r["verification"] for r in found]
                return {r["id"]: r for r in found}

            wait_for(lambda: {first["id"], second["id"]} <= set(stored()), timeout=15, what="both records in InfluxDB")
            in_db = stored()
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
            # signed out, the page's session has ended: nothing more without signing in again
            scanner(page, "HX-4711|HX000201|L-7")
            expect(page.locator("#banner")).to_contain_text("sign in first")
            assert gateway.views.get("st-10")["serial"] != "HX000201"  # type: ignore[index]
    finally:
        recorder.stop()


# -- plain HTTP: JSON, SSE, errors ---------------------------------------------------------------------
class Client:
    """A plain HTTP client that keeps the view's session cookie, as a browser would."""

    def __init__(self, view: OperatorView) -> None:
        self.host, self.port = "127.0.0.1", view.port
        self.cookie: str | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        sent = dict(headers or {})
        if self.cookie is not None:
            sent.setdefault("Cookie", self.cookie)
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            got = {k.lower(): v for k, v in resp.getheaders()}
            if "set-cookie" in got:
                pair = got["set-cookie"].split(";", 1)[0]
                self.cookie = None if "Max-Age=0" in got["set-cookie"] else pair
            return resp.status, got, resp.read()
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
    """Without a user register: scans, patrol, abandon and sign-out only; the rest needs a signature."""
    gateway = plain_gateway
    client = Client(view_of(gateway))
    cmd = "/station/st-10/command"

    status, body = client.post("/station/st-10/scan", {"code": "HX-4711|HX000001|L-1"})
    assert status == 400 and body == {"ok": False, "error": "station st-10: no scan pattern configured"}
    caliper.send_value(Decimal("12.001"))
    wait_for(lambda: gateway.stats.measurements == 1, what="one measurement")
    status, body = client.post(cmd, {"command": "remeasure", "args": {"reason": "suspect value"}})
    assert status == 403 and body["error"] == (
        "remeasure needs a signature, and this gateway has no user register: nobody can be authenticated "
        "here (gateway.people.register)"
    )
    status, body = client.post(cmd, {"command": "patrol"})
    assert status == 200 and len(body["records"]) == 1

    bad: list[tuple[Any, int, str]] = [
        ({"command": "remeasure", "args": {}}, 400, "remeasure needs reason"),
        ({"command": "remeasure", "args": {"reason": "x", "timeout": "0"}}, 400, "remeasure takes no timeout"),
        ({"command": "invalidate", "args": {"reason": "x"}}, 400, "invalidate needs record_id"),
        ({"command": "patrol", "args": {"by": "op-1"}}, 400, "patrol takes no by"),
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
    assert status == 421 and "own host names only" in body["error"]
    status, body = client.post(cmd, {"command": "patrol"}, {"Origin": f"http://127.0.0.1:{client.port}"})
    assert status == 200
    assert gateway.stats.measurements == 1


def journal_of(gateway: Gateway) -> list[dict[str, Any]]:
    return [r for block, _ in gateway.journal.iter_blocks() for r in block.materialise()]


def refusals(gateway: Gateway) -> list[tuple[str | None, str, str]]:
    """(by, command, reason) of every refused command on record."""
    return [
        (r["by"], r["subject"], r["detail"].split(" refused: ", 1)[1])
        for r in journal_of(gateway)
        if r["kind"] == "audit" and r["event"] == "command_refused"
    ]


@pytest.fixture
def people_gateway(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    caliper: MitutoyoSimulator,
) -> Iterator[Gateway]:
    """Two stations with a user register; nobody signed in; st-10 has the caliper."""
    with running(people_config(tmp_path, broker, influxd, database, topic_prefix)) as gateway:
        yield gateway


def people_config(
    tmp_path: Path, broker: Mosquitto, influxd: InfluxD, database: str, prefix: str, **people: Any
) -> config_mod.Config:
    people = {"register": str(write_register(tmp_path)), "checks_per_second": 50, **people}
    data = build_config(
        tmp_path,
        broker,
        influxd,
        database,
        prefix,
        gateway={"operator_view": {"port": 0, "allowed_hosts": ["qc-panel.example"]}, "people": people},
    )
    data["stations"][0]["part"]["operator"] = None
    data["stations"][0]["scan_pattern"] = r"B:(?P<operator>[\w-]+)"  # badges only: the part is numbered
    data["stations"].append({"id": "st-20", "plan": "HX-4711", "part": {"part_number": "HX-4711"}})
    return config_mod.load(write_config(tmp_path, data))


def test_where_a_badge_alone_signs_in_the_page_that_scanned_it_is_the_operators(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    caliper: MitutoyoSimulator,
) -> None:
    with running(people_config(tmp_path, broker, influxd, database, topic_prefix, secret_required=[])) as gateway:
        client = Client(view_of(gateway))
        status, body = client.post("/station/st-10/scan", {"code": "B:nobody"})
        assert status == 403 and "unknown badge" in body["error"] and client.cookie is None
        status, body = client.post("/station/st-10/scan", {"code": "B:op-42"})
        assert (status, body["operator"]) == (200, "op-42") and client.cookie is not None
        (signed_in,) = [r for r in journal_of(gateway) if r.get("event") == "sign_in"]
        assert (signed_in["signed_by"], signed_in["signature_method"]) == ("op-42", "badge")
        cmd = "/station/st-10/command"
        assert client.post(cmd, {"command": "patrol"})[0] == 200
        caliper.send_value(Decimal("12.001"))
        wait_for(lambda: gateway.stats.measurements == 1, what="a measurement")
        status, body = client.post(cmd, {"command": "remeasure", "args": {"reason": "suspect value"}})
        assert (status, body["error"]) == (401, "remeasure needs the signer's PIN or password")  # always


def test_people_sign_in_with_badge_and_pin_and_sign_what_they_do(
    people_gateway: Gateway, caliper: MitutoyoSimulator
) -> None:
    gateway = people_gateway
    client = Client(view_of(gateway))
    cmd = "/station/st-10/command"
    status, body = client.post(cmd, {"command": "sign_in", "signer": {"user": "op-42", "secret": "1111"}})
    assert (status, body["error"]) == (401, "unknown user or wrong PIN/password") and client.cookie is None
    status, body = client.post(cmd, {"command": "sign_in", "signer": signer("op-42")})
    assert status == 200 and body["operator"] == "op-42" and client.cookie is not None
    caliper.send_value(Decimal("12.031"))
    wait_for(lambda: gateway.stats.measurements == 1, what="one measurement")
    first = next(r for r in journal_of(gateway) if r["kind"] == "measurement")
    assert first["operator"] == "op-42"
    # the session is enough for a patrol; a re-measure's reason needs the PIN again
    assert client.post(cmd, {"command": "patrol"})[0] == 200
    status, body = client.post(cmd, {"command": "remeasure", "args": {"reason": "gauge not seated"}})
    assert (status, body["error"]) == (401, "remeasure needs the signer's PIN or password")
    remeasure = {"command": "remeasure", "args": {"reason": "gauge not seated"}, "signer": signer("op-42")}
    assert client.post(cmd, remeasure)[0] == 200
    caliper.send_value(Decimal("12.002"))
    wait_for(lambda: gateway.stats.measurements == 2, what="the re-measure")
    second = [r for r in journal_of(gateway) if r["kind"] == "measurement"][1]
    assert (second["supersedes"], second["signed_by"], second["signer_name"], second["signature_meaning"]) == (
        first["id"],
        "op-42",
        "Olga Petrova",
        "remeasured",
    )
    # a supervisor walks up and invalidates the first value with her own PIN
    invalidate = {"command": "invalidate", "args": {"record_id": first["id"], "reason": "probe contaminated"}}
    assert client.post(cmd, {**invalidate, "signer": signer("sv-3")})[0] == 200
    (inv,) = [r for r in journal_of(gateway) if r["kind"] == "invalidation"]
    assert (inv["by"], inv["signed_by"], inv["signature_method"], inv["signature_meaning"]) == (
        "sv-3",
        "sv-3",
        "secret",
        "invalidated",
    )
    # someone else signs in at the station (here, as a badge at the station's scanner would):
    # the page's session is over, and what it sends is refused
    sam = gateway.config.register.get("sv-3")
    assert sam is not None
    gateway.command("st-10", parse_request({"command": "sign_in"}), Actor.of(sam, "badge", "scanner"))
    status, body = client.post(cmd, {"command": "patrol"})
    assert (status, body["error"]) == (401, "station st-10: the sign-in of op-42 has ended: sign in again")
    # but a badge scanned on that page still starts the next sign-in
    status, body = client.post("/station/st-10/scan", {"code": "B:op-42"})
    assert (status, body["message"]) == (200, "badge scanned: enter the PIN or password to sign in")
    wait_for(lambda: gateway.views.get("st-10")["pending_sign_in"] == "op-42", what="the PIN asked for")
    other = Client(view_of(gateway))
    assert other.post(cmd, {"command": "sign_in", "signer": signer("sv-3")})[0] == 200
    status, body = client.post(cmd, {"command": "patrol"})
    assert status == 401 and "sign in first" in body["error"]  # a new sign-in ends the station's sessions
    status, body = other.post(cmd, {"command": "sign_out"})
    assert status == 200 and other.cookie is None
    assert other.post(cmd, {"command": "patrol"})[0] == 401


def test_the_attacks_on_the_view_are_refused_and_leave_a_record(
    people_gateway: Gateway, caliper: MitutoyoSimulator
) -> None:
    """Nobody acts as anyone: no credentials, the wrong role, another station's record, bad text."""
    gateway = people_gateway
    anyone = Client(view_of(gateway))
    cmd = "/station/st-10/command"
    # 1. no credentials: sign in as the plant manager
    status, body = anyone.post(cmd, {"command": "sign_in", "args": {"operator": "plant-manager"}})
    assert (status, body["error"]) == (400, "sign_in takes no operator")
    status, body = anyone.post(cmd, {"command": "sign_in", "signer": {"user": "plant-manager", "secret": "x"}})
    assert (status, body["error"]) == (401, "unknown user or wrong PIN/password")
    assert gateway.views.get("st-10")["operator"] is None  # type: ignore[index]
    # an inspector signs in and measures a value out of tolerance (an NC, the andon)
    olga = Client(view_of(gateway))
    assert olga.post(cmd, {"command": "sign_in", "signer": signer("op-42")})[0] == 200
    caliper.send_value(Decimal("12.031"))
    wait_for(lambda: gateway.stats.by_kind["nonconformance"] == 1, what="the nonconformance")
    value = next(r for r in journal_of(gateway) if r["kind"] == "measurement")
    nc = next(r for r in journal_of(gateway) if r["kind"] == "nonconformance")
    # 2. invalidate "by auditor": no such argument, and nobody signed in on that page
    invalidate: dict[str, Any] = {"command": "invalidate", "args": {"record_id": value["id"], "reason": "x"}}
    status, body = anyone.post(cmd, {**invalidate, "args": {**invalidate["args"], "by": "auditor"}})
    assert (status, body["error"]) == (400, "invalidate takes no by")
    status, body = anyone.post(cmd, invalidate)
    assert (status, body["error"]) == (401, "sign in first: invalidate needs someone signed in")
    # the inspector's session is not a supervisor's signature
    status, body = olga.post(cmd, {**invalidate, "signer": signer("op-42")})
    assert (status, body["error"]) == (403, "invalidate needs the role quality or supervisor (op-42 has inspector)")
    # 3. a disposition needs quality (the MRB), not a supervisor
    dispose = {"command": "dispose", "args": {"nonconformance_id": nc["id"], "decision": "scrap"}}
    status, body = olga.post(cmd, {**dispose, "signer": signer("sv-3")})
    assert (status, body["error"]) == (403, "dispose needs the role quality (sv-3 has supervisor)")
    status, body = olga.post(cmd, {**dispose, "signer": {"user": "qe-7", "secret": "guess"}})
    assert (status, body["error"]) == (401, "unknown user or wrong PIN/password")
    assert olga.post(cmd, {**dispose, "signer": signer("qe-7")})[0] == 200
    # 4. the andon: not by anyone, not by an inspector
    assert anyone.post(cmd, {"command": "andon_off"})[0] == 401
    status, body = olga.post(cmd, {"command": "andon_off"})
    assert (status, body["error"]) == (403, "andon_off needs the role quality or supervisor (op-42 has inspector)")
    # 5. one station's view acts on its own records only: not st-10's, not another gateway's
    st20 = "/station/st-20/command"
    status, body = anyone.post(st20, {**invalidate, "signer": signer("sv-3")})
    assert status == 403 and body["error"] == (
        f"station st-20: record {value['id']} is not this station's: a station acts on its own records only"
    )
    elsewhere = uuid7()
    status, body = olga.post(
        cmd, {"command": "invalidate", "args": {"record_id": elsewhere, "reason": "x"}, "signer": signer("sv-3")}
    )
    assert (status, body["error"]) == (404, f"station st-10: no record {elsewhere} in this gateway's journal")
    status, body = anyone.post(
        st20, {"command": "ack_alert", "args": {"record_id": value["id"]}, "signer": signer("sv-3")}
    )
    assert status == 403 and "not this station's" in body["error"]
    # 6. text the record schema would refuse is refused before anything is journaled
    head = gateway.journal.head[0]
    long_reason = {"command": "invalidate", "args": {"record_id": value["id"], "reason": "x" * 300}}
    status, body = olga.post(cmd, {**long_reason, "signer": signer("sv-3")})
    assert (status, body["error"]) == (400, "reason is longer than 200 characters")
    status, body = anyone.post(cmd, {"command": "sign_in", "signer": {"user": "op-42\nplant-manager", "secret": "1"}})
    assert (status, body["error"]) == (400, "signer.user contains a control character or a line break")
    assert gateway.journal.head[0] == head
    # and every refusal of who may do what is on record, in the station's chain, in order
    foreign = f"record {value['id']} is not this station's: a station acts on its own records only"
    expected = [
        ("plant-manager", "sign_in", "unknown user or badge"),
        (None, "invalidate", "sign in first: invalidate needs someone signed in"),
        ("op-42", "invalidate", "invalidate needs the role quality or supervisor (op-42 has inspector)"),
        ("sv-3", "dispose", "dispose needs the role quality (sv-3 has supervisor)"),
        ("qe-7", "dispose", "wrong secret"),
        (None, "andon_off", "sign in first: andon_off needs someone signed in"),
        ("op-42", "andon_off", "andon_off needs the role quality or supervisor (op-42 has inspector)"),
        ("sv-3", "invalidate", f"station st-20: {foreign}"),
        ("sv-3", "invalidate", f"station st-10: no record {elsewhere} in this gateway's journal"),
        ("sv-3", "ack_alert", f"station st-20: {foreign}"),
    ]
    wait_for(lambda: len(refusals(gateway)) == len(expected), what="the refusals on record")
    assert refusals(gateway) == expected
    stations = [r["station"] for r in journal_of(gateway) if r.get("event") == "command_refused"]
    assert stations == ["st-10"] * 7 + ["st-20", "st-10", "st-20"]


def test_the_competence_gate_refuses_a_sign_in_records_and_alerts_it(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    caliper: MitutoyoSimulator,
) -> None:
    people = {"register": str(write_register(tmp_path, expires="2001-01-31")), "checks_per_second": 50}
    data = build_config(
        tmp_path, broker, influxd, database, topic_prefix, gateway={"operator_view": {"port": 0}, "people": people}
    )
    data["stations"][0]["part"]["operator"] = None
    with running(config_mod.load(write_config(tmp_path, data))) as gateway:
        client = Client(view_of(gateway))
        alerts = gateway.stats.alerts
        status, body = client.post("/station/st-10/command", {"command": "sign_in", "signer": signer("op-42")})
        assert (status, body["error"]) == (
            403,
            "station st-10: sign-in refused: op-42's qualification for HX-4711 expired on 2001-01-31",
        )
        assert client.cookie is None and gateway.views.get("st-10")["operator"] is None  # type: ignore[index]
        (refused,) = [r for r in journal_of(gateway) if r.get("event") == "sign_in_refused"]
        assert (refused["by"], refused["subject"]) == ("op-42", "op-42") and "expired" in refused["detail"]
        wait_for(lambda: gateway.stats.alerts == alerts + 1, what="the alert about the refused sign-in")


def test_the_view_answers_to_its_own_host_names_only_on_any_bind_address(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    caliper: MitutoyoSimulator,
) -> None:
    data = build_config(
        tmp_path, broker, influxd, database, topic_prefix, gateway={"operator_view": {"bind": "0.0.0.0"}}
    )
    with pytest.raises(ConfigError, match="the view needs allowed_hosts"):
        config_mod.parse(yaml.safe_dump(data), "gateway.yaml")
    data["gateway"]["operator_view"] = {"bind": "0.0.0.0", "port": 0, "allowed_hosts": ["qc-panel.example"]}
    with running(config_mod.load(write_config(tmp_path, data))) as gateway:
        client = Client(view_of(gateway))
        port = client.port
        for host, expected in (
            (f"qc-panel.example:{port}", 200),
            (f"127.0.0.1:{port}", 200),  # the box's own browser
            (f"evil.example:{port}", 421),  # a DNS-rebinding page
            (f"10.9.8.7:{port}", 421),  # an address nobody named
            ("", 421),
        ):
            status, _, _ = client.request("GET", "/station/st-10/view", headers={"Host": host})
            assert status == expected, host
        patrol = {"command": "patrol"}
        behind_a_proxy = {"Origin": "https://qc-panel.example", "X-Forwarded-Host": "qc-panel.example"}
        assert client.post("/station/st-10/command", patrol, behind_a_proxy)[0] == 200
        forwarded_evil = {"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example"}
        status, body = client.post("/station/st-10/command", patrol, forwarded_evil)
        assert status == 421 and "own host names only" in body["error"]


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
