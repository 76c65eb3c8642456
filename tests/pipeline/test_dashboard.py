"""The supervisors' dashboard as supervisors use it: a real Chromium (Playwright) against the
real stack (Mosquitto, InfluxDB, recorder, gateway, Mitutoyo simulator), with the Dashboard
in-process.

Chromium is Debian's (``/usr/bin/chromium``), launched headless by Playwright, which gives
each browser a fresh temporary profile (``--user-data-dir``) and removes it on close; each
user signs in in a browser context of their own (separate cookies). Under ``CI=true`` a
missing Chromium or Playwright fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from collector import config as config_mod
from collector.chain.keys import KeyRing
from collector.dashboard.app import Dashboard
from collector.evidence.trace import TraceFilter, trace
from collector.gateway.daemon import Gateway
from collector.people.accounts import DashboardSettings, DashboardUser, hash_password
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from collector.store.influx_v1 import InfluxV1Store
from simulators.mitutoyo import MitutoyoSimulator
from tests.conftest import require_binary
from tests.helpers import wait_for
from tests.pipeline.conftest import count_all

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

pytestmark = pytest.mark.services

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
PASSWORDS = {"sam": "sam-supervises-line-a", "vera": "vera-views-only"}
VIEWPORT: ViewportSize = {"width": 1600, "height": 1000}

StackConfig = Callable[..., tuple[Path, config_mod.Config]]


@pytest.fixture(scope="module")
def users() -> list[DashboardUser]:
    """Hashed once per module: scrypt at its real cost takes a quarter of a second."""
    return [
        DashboardUser(name="sam", role="supervisor", password_hash=hash_password(PASSWORDS["sam"])),
        DashboardUser(name="vera", role="viewer", password_hash=hash_password(PASSWORDS["vera"])),
    ]


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = require_binary("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the playwright package is missing: {exc}")
        pytest.skip(f"playwright is not installed: {exc}")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    where = os.environ.get("SCREENSHOT_DIR")
    path = Path(where) if where else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sign_in(context: BrowserContext, url: str, name: str) -> Page:
    page = context.new_page()
    page.goto(url + "/")
    assert "/login" in page.url, "an anonymous visitor is sent to the sign-in form"
    page.fill("#name", name)
    page.fill("#password", PASSWORDS[name])
    page.click("#login-form button[type=submit]")
    page.wait_for_url(url + "/")
    page.wait_for_selector('body[data-live="1"]', timeout=10_000)
    return page


def register(cfg: config_mod.Config) -> KeyRing:
    """The register of gateways the test's recorder checks against (the dashboard's too)."""
    assert cfg.recorder is not None
    return KeyRing.load(cfg.recorder.keys)


def journal(gateway: Gateway) -> list[dict[str, Any]]:
    return [r for block, _ in gateway.journal.iter_blocks() for r in block.materialise()]


def test_alerts_live_acknowledgement_station_status_and_traceability(
    stack_config: StackConfig,
    caliper: MitutoyoSimulator,
    v1_store: InfluxV1Store,
    browser: Browser,
    users: list[DashboardUser],
    screenshot_dir: Path,
) -> None:
    from playwright.sync_api import expect

    _, cfg = stack_config()
    assert cfg.influxdb is not None
    recorder = Recorder(cfg, open_store(cfg.influxdb))
    recorder.start()
    gateway = Gateway(cfg)
    dashboard = Dashboard(
        cfg, DashboardSettings(port=0, users=users, shift_timezone="UTC"), open_store(cfg.influxdb), keys=register(cfg)
    )
    gateway_running = False
    contexts: list[BrowserContext] = []
    try:
        wait_for(recorder.subscribed.is_set, what="recorder subscribed")
        dashboard.start()
        wait_for(lambda: dashboard.connected, what="dashboard connected to the broker")
        gateway.start()
        gateway_running = True
        wait_for(lambda: gateway.publisher.connected, what="gateway connected")
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")

        sam_ctx, vera_ctx = (browser.new_context(viewport=VIEWPORT) for _ in range(2))
        contexts += [sam_ctx, vera_ctx]
        sam = sign_in(sam_ctx, dashboard.url, "sam")
        vera = sign_in(vera_ctx, dashboard.url, "vera")
        for page in (sam, vera):
            expect(page.locator('.tile[data-station="st-10"] .state')).to_have_text("ONLINE", timeout=10_000)

        # -- an out-of-tolerance value reaches both screens without a reload ----------------------
        injected_ms = time.time() * 1000
        caliper.send_value(Decimal("12.035"))  # D1 of HX000001: above the 12.020 upper limit
        latencies: dict[str, float] = {}
        record_id = ""
        for name, page in (("sam", sam), ("vera", vera)):
            card = page.locator(".alert.kind-out_of_tolerance").first
            card.wait_for(timeout=10_000)
            record_id = str(card.get_attribute("data-record-id"))
            shown = page.evaluate("id => window.__shown[id]", record_id)
            latencies[name] = round(float(shown) - injected_ms, 1)
            expect(card.locator(".sev")).to_have_text("CRITICAL")
            expect(card.locator(".where")).to_have_text("st-10")
            expect(card.locator(".serial .v")).to_have_text("HX000001")
            expect(card.locator(".characteristic .v")).to_have_text("D1")
            expect(card.locator(".value .v")).to_have_text("12.035 mm")
            expect(card.locator(".limits")).to_have_text("11.980 … 12.020")
            expect(card.locator("time")).not_to_be_empty()
        print(json.dumps({"dashboard_alert_latency_ms": max(latencies.values()), "per_page_ms": latencies}))
        assert all(0 < ms < 5000 for ms in latencies.values()), latencies
        tile = sam.locator('.tile[data-station="st-10"]')
        expect(tile.locator(".fails .n")).to_have_text("1")
        expect(tile.locator(".alerts .n")).to_have_text("1")
        expect(sam.locator(f'.station-records tr[data-id="{record_id}"]')).to_contain_text("12.035")

        # -- a viewer cannot acknowledge: no button, and the server refuses a forged request -------
        vera_card = vera.locator(f'.alert[data-record-id="{record_id}"]').first
        expect(vera_card.locator(".unacked-note")).to_be_visible()
        assert vera_card.locator(".ack-button").count() == 0
        forged = vera.evaluate(
            """async id => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const r = await fetch('/alerts/' + id + '/ack', {method: 'POST',
                    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
                    body: JSON.stringify({comment: 'not mine to acknowledge'})});
                return [r.status, await r.json()];
            }""",
            record_id,
        )
        assert forged[0] == 403 and "supervisor" in forged[1]["error"], forged

        # -- the supervisor acknowledges with a comment; every screen shows it -----------------------
        comment = "probe contaminated, part quarantined"
        sam_card = sam.locator(f'.alert[data-record-id="{record_id}"]').first
        sam_card.locator(".ack-comment").fill(comment)
        sam_card.locator(".ack-button").click()
        expected = f"acknowledged by sam: {comment}"
        expect(sam_card.locator(".acked-note")).to_contain_text(expected, timeout=10_000)
        expect(vera_card.locator(".acked-note")).to_contain_text(expected, timeout=10_000)
        acks = wait_for(
            lambda: [r for r in journal(gateway) if r["kind"] == "audit" and r.get("event") == "alert_ack"],
            what="the acknowledgement in the gateway's journal",
        )
        (ack,) = acks
        assert (ack["by"], ack["subject"], ack["station"]) == ("sam", record_id, "st-10")
        assert comment in ack["detail"]
        # a second, lesser alert (L1 is not a critical characteristic) goes on top, open
        caliper.send_value(Decimal("12.080"))  # L1 of HX000001: above 12.05; the part is rejected
        warning = sam.locator(".alert.sev-warning.kind-out_of_tolerance").first
        expect(warning.locator(".characteristic .v")).to_have_text("L1", timeout=10_000)
        expect(sam.locator(".alert").first).to_have_class(re.compile(r"\bsev-warning\b"))  # newest first
        expect(tile.locator(".alerts .n")).to_have_text("2")
        expect(sam.locator("#alert-summary")).to_have_text("1 open · 1 acknowledged")
        sam.wait_for_timeout(1800)  # the new card's highlight fades before the picture
        shot = screenshot_dir / "dashboard-live.png"
        sam.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        # -- traceability: the same records as `collector trace`, and the CSV download ---------------
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=20, what="every record in InfluxDB")
        expected_rows = trace(v1_store, TraceFilter(serial="HX000001"), register(cfg))
        sam.click("nav a[href='/trace']")
        sam.fill("#f-serial", "HX000001")
        sam.click("#search")
        sam.wait_for_selector("#results")
        rows = sam.locator("#results tbody tr")
        expect(rows).to_have_count(len(expected_rows))
        assert [rows.nth(i).get_attribute("data-id") for i in range(len(expected_rows))] == [
            r["id"] for r in expected_rows
        ]
        expect(sam.locator(f'#results tr[data-id="{record_id}"]')).to_contain_text("12.035")
        href = sam.locator("#export-csv").get_attribute("href")
        assert href is not None and "serial=HX000001" in href
        csv = sam.request.get(dashboard.url + href)
        assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
        assert "attachment" in csv.headers["content-disposition"]
        lines = csv.text().splitlines()
        assert lines[0].startswith("recorded_at,kind,serial") and len(lines) == 1 + len(expected_rows)
        assert any(record_id in line and "12.035" in line for line in lines[1:])
        exported = sam.request.get(dashboard.url + str(sam.locator("#export-json").get_attribute("href")))
        assert [r["id"] for r in exported.json()] == [r["id"] for r in expected_rows]
        dfq = sam.request.get(dashboard.url + str(sam.locator("#export-dfq").get_attribute("href")))
        assert dfq.status == 200 and "K1001 HX-4711" in dfq.text(), dfq.text()
        report = sam.request.get(dashboard.url + str(sam.locator("#part-report").get_attribute("href")))
        assert report.status == 200 and "HX000001" in report.text()
        shot = screenshot_dir / "dashboard-trace.png"
        sam.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        # -- the station goes offline with its gateway ---------------------------------------------------
        gateway_running = False
        gateway.stop()
        expect(vera.locator('.tile[data-station="st-10"] .state')).to_have_text("OFFLINE", timeout=10_000)
    finally:
        for context in contexts:
            context.close()
        dashboard.stop()
        if gateway_running:
            gateway.stop()
        recorder.stop()


def test_a_wrong_password_is_refused_and_an_expired_session_goes_back_to_sign_in(
    stack_config: StackConfig,
    browser: Browser,
    users: list[DashboardUser],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from playwright.sync_api import expect

    _, cfg = stack_config()
    assert cfg.influxdb is not None
    settings = DashboardSettings(port=0, users=users, session_ttl=2.0, shift_timezone="UTC")
    dashboard = Dashboard(cfg, settings, open_store(cfg.influxdb), keys=register(cfg))
    dashboard.start()
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(dashboard.url + "/trace?serial=HX1")
        assert page.url.startswith(dashboard.url + "/login?")
        page.fill("#name", "sam")
        page.fill("#password", "not-the-password")
        with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
            page.click("#login-form button[type=submit]")
        assert answer.value.status == 401
        expect(page.locator(".notice.error")).to_have_text("Wrong name or password.")
        assert "/login" in page.url and page.context.cookies() == []
        assert "failed sign-in for 'sam'" in caplog.text
        assert "not-the-password" not in caplog.text

        page.fill("#password", PASSWORDS["sam"])
        page.click("#login-form button[type=submit]")
        page.wait_for_url(dashboard.url + "/trace?serial=HX1")  # back where the visitor wanted to go
        page.goto(dashboard.url + "/")
        page.wait_for_selector('body[data-live="1"]')
        cookie = next(c for c in context.cookies() if c["name"] == dashboard.cookie_name)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # the open live page notices the end of the session by itself...
        page.wait_for_url("**/login?expired=1", timeout=10_000)
        expect(page.locator(".notice")).to_contain_text("session has expired")
        # ...and the cookie left behind no longer opens anything
        page.goto(dashboard.url + "/trace")
        assert "/login?" in page.url and "expired=1" in page.url
        assert context.request.get(dashboard.url + "/api/state").status == 401
    finally:
        context.close()
        dashboard.stop()


def test_live_records_arrive_as_sealed_blocks_through_the_broker(
    stack_config: StackConfig, browser: Browser, users: list[DashboardUser], screenshot_dir: Path
) -> None:
    """The record path on its own: blocks as gateways seal them, published to the real broker."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from playwright.sync_api import expect

    from collector.chain import blocks

    _, cfg = stack_config()
    assert cfg.influxdb is not None
    dashboard = Dashboard(
        cfg, DashboardSettings(port=0, users=users, shift_timezone="UTC"), open_store(cfg.influxdb), keys=register(cfg)
    )
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="block-publisher", protocol=mqtt.MQTTv5)
    context = browser.new_context(viewport=VIEWPORT)
    try:
        dashboard.start()
        wait_for(lambda: dashboard.connected, what="dashboard connected to the broker")
        publisher.connect(cfg.mqtt.host, cfg.mqtt.port)
        publisher.loop_start()
        page = sign_in(context, dashboard.url, "vera")
        now = blocks.format_utc_us(time.time_ns() // 1000)
        measured = [
            {"kind": "measurement", "id": "rb-1", "serial": "HX9", "characteristic": "D1", "judged_value": "12.001"},
            {"kind": "measurement", "id": "rb-2", "serial": "HX9", "characteristic": "L1", "judged_value": "45.120"},
        ]
        for r in measured:
            r.update(unit="mm", verdict="pass" if r["id"] == "rb-1" else "fail")
        block = blocks.seal(
            measured,
            gateway="gw-blocks",
            site="plant-1",
            line="line-a",
            station="st-40",
            first_seq=1,
            recorded_at=now,
            clock_synced=True,
            prev_hash=blocks.GENESIS_HASH,
            signer=None,
        )
        tampered = block.text.replace('"45.120"', '"45.020"')  # its hash no longer matches
        topic = f"{cfg.mqtt.topic_prefix}/plant-1/line-a/st-40/record"
        publisher.publish(topic, (tampered + "\n" + block.text).encode(), qos=1).wait_for_publish(5)
        tile = page.locator('.tile[data-station="st-40"]')
        expect(tile.locator(".records .n")).to_have_text("2", timeout=10_000)
        expect(tile.locator(".fails .n")).to_have_text("1")
        expect(page.locator('.station-records tr[data-id="rb-2"]')).to_contain_text("45.12")
        wait_for(lambda: dashboard.state.malformed == 1, what="the tampered block counted, not shown")
        page.wait_for_timeout(500)
        shot = screenshot_dir / "dashboard-blocks.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
    finally:
        context.close()
        publisher.loop_stop()
        publisher.disconnect()
        dashboard.stop()
