"""Quality people on the dashboard, in a real Chromium against the real stack: the control chart
and capability of a characteristic updated live, an alarm episode opening and closing, an
acknowledgement with a cause and an action from the reaction plan, and a nonconformance
decided on the material review page by a quality user whom the gateway finds in its register.

Screenshots go to the test's temporary directory (or ``SCREENSHOT_DIR``), as in test_dashboard.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from collector import config as config_mod
from collector.dashboard.app import Dashboard
from collector.gateway.daemon import Gateway
from collector.people.accounts import DashboardSettings, DashboardUser, hash_password
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD, Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from tests.helpers import wait_for
from tests.pipeline.conftest import PLAN as BASE_PLAN
from tests.pipeline.conftest import build_config, count_all, write_config
from tests.pipeline.people import write_register
from tests.pipeline.test_dashboard import VIEWPORT, browser, journal, register, screenshot_dir  # noqa: F401
from tests.pipeline.test_workflow import Operator

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.services

PASSWORDS = {"sv-3": "sam-supervises-line-a", "qe-7": "quentin-decides", "op-42": "olga-only-looks"}
REACTION = {"causes": ["tool wear", "material batch"], "actions": ["tool changed", "parts sorted 100 %"]}
# D1 alone (every caliper value is one part's D1), with SPC from a small baseline and a reaction plan
PLAN = {
    **BASE_PLAN,
    "characteristics": [
        {**BASE_PLAN["characteristics"][0], "spc": {"baseline": 6, "min_baseline": 50}, "reaction_plan": REACTION}
    ],
}
IN_CONTROL = ["12.001", "11.999", "12.002", "11.998", "12.000", "12.001", "11.999", "12.000"]


def sign_in(context: BrowserContext, url: str, name: str, path: str = "/") -> Page:
    page = context.new_page()
    page.goto(url + path)
    page.fill("#name", name)
    page.fill("#password", PASSWORDS[name])
    page.click("#login-form button[type=submit]")
    page.wait_for_url(url + path)
    return page


def shot(page: Page, where: Path, name: str) -> None:
    path = where / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_charts_episodes_reaction_plan_and_material_review(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    caliper: MitutoyoSimulator,
    v1_store: InfluxV1Store,
    browser: Browser,  # noqa: F811
    screenshot_dir: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    people = {"register": str(write_register(tmp_path)), "checks_per_second": 50}
    data = build_config(tmp_path, broker, influxd, database, topic_prefix, gateway={"people": people})
    data["plans"] = [PLAN]
    data["stations"][0]["part"]["operator"] = "op-42"
    cfg = config_mod.load(write_config(tmp_path, data))
    assert cfg.influxdb is not None
    # dashboard users named as in the gateways' register: the gateway checks their roles there
    users = [
        DashboardUser(name="sv-3", role="supervisor", password_hash=hash_password(PASSWORDS["sv-3"])),
        DashboardUser(name="qe-7", role="quality", password_hash=hash_password(PASSWORDS["qe-7"])),
        # a dashboard account that claims quality but is an inspector in the register
        DashboardUser(name="op-42", role="quality", password_hash=hash_password(PASSWORDS["op-42"])),
    ]
    recorder = Recorder(cfg, open_store(cfg.influxdb))
    recorder.start()
    gateway = Gateway(cfg)
    dashboard = Dashboard(
        cfg, DashboardSettings(port=0, users=users, shift_timezone="UTC"), open_store(cfg.influxdb), keys=register(cfg)
    )
    contexts: list[BrowserContext] = []
    gateway_running = False
    watcher = Operator(broker, topic_prefix)  # the alerts as the broker carries them
    station = "plant-1/line-a/st-10"
    try:
        wait_for(recorder.subscribed.is_set, what="recorder subscribed")
        dashboard.start()
        wait_for(lambda: dashboard.connected, what="dashboard connected to the broker")
        gateway.start()
        gateway_running = True
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")

        def send(value: str) -> None:
            before = gateway.journal.head[0]
            caliper.send_value(Decimal(value))
            wait_for(lambda: gateway.journal.head[0] > before, what=f"{value} on record")

        for v in IN_CONTROL[:3]:
            send(v)
        sam_ctx, quentin_ctx, olga_ctx = (browser.new_context(viewport=VIEWPORT) for _ in range(3))
        contexts += [sam_ctx, quentin_ctx, olga_ctx]
        chart = sign_in(sam_ctx, dashboard.url, "sv-3", f"/chart?station={station}&characteristic=D1")
        chart.wait_for_selector('body[data-live="1"]', timeout=10_000)
        points = chart.locator('g[data-panel="X"] circle.pt')
        expect(points).to_have_count(3)

        # -- the chart follows the values without a reload --------------------------------------------
        for v in IN_CONTROL[3:]:
            send(v)
        expect(points).to_have_count(len(IN_CONTROL), timeout=10_000)
        limits = [json.loads(r["detail"]) for r in journal(gateway) if r.get("event") == "spc_limits"]
        assert [x["n"] for x in limits] == [6] and limits[0]["provisional"]
        ucl = float(str(chart.locator('g[data-panel="X"] line.ucl').get_attribute("data-value")))
        assert ucl == pytest.approx(limits[0]["ucl"], rel=1e-12)  # the limits the gateway put in force
        expect(chart.locator("svg.control-chart")).to_have_attribute("data-baseline-short", "true")
        expect(chart.locator(".chart-note")).to_contain_text("provisional")

        # -- a run beyond the control limits (in tolerance): one trend episode, opened then updated -----
        live = sam_ctx.new_page()
        live.goto(dashboard.url + "/")
        live.wait_for_selector('body[data-live="1"]', timeout=10_000)
        send("12.012")
        trend = live.locator(".alert.kind-trend").first
        expect(trend).to_have_attribute("data-state", "opened", timeout=10_000)
        expect(trend.locator(".baseline-short .v")).to_contain_text("provisional: from 6 values")
        shot(live, screenshot_dir, "quality-episode-opened.png")
        send("12.013")
        expect(trend).to_have_attribute("data-points", "2", timeout=10_000)
        assert live.locator(".alert.kind-trend").count() == 1  # one card per episode, not per point
        flagged = chart.locator('g[data-panel="X"] circle.flagged')
        expect(flagged).to_have_count(2, timeout=10_000)
        assert flagged.first.get_attribute("data-rules") is not None
        send("12.000")  # back inside: the episode closes
        expect(trend).to_have_attribute("data-state", "closed", timeout=10_000)
        expect(trend.locator(".episode-state")).to_have_text("EPISODE CLOSED")
        expect(points).to_have_count(len(IN_CONTROL) + 3, timeout=10_000)
        cap = chart.locator("table.capability")
        expect(cap).to_contain_text(f"n = {len(IN_CONTROL) + 3}")
        for index in ("Cp", "Cpk", "Pp", "Ppk"):
            expect(cap.locator(f'tr[data-index="{index}"] td.figure')).not_to_have_text("—")
        chart.wait_for_timeout(300)
        shot(chart, screenshot_dir, "quality-chart-imr-capability.png")
        live.locator("#filter-status").select_option("closed")
        expect(live.locator(".alert.kind-trend")).to_be_visible()
        shot(live, screenshot_dir, "quality-episode-closed.png")
        live.locator("#filter-status").select_option("")
        alerts = [a for a in watcher.alerts if a["kind"] == "trend"]
        assert [a["state"] for a in alerts] == ["opened", "updated", "closed"]
        assert len({a["episode"] for a in alerts}) == 1 and alerts[0]["baseline_short"]

        # -- out of tolerance: acknowledged with a cause and an action from the reaction plan ----------
        send("12.035")
        oot = live.locator(".alert.kind-out_of_tolerance").first
        oot.wait_for(timeout=10_000)
        oot_id = str(oot.get_attribute("data-record-id"))
        oot.locator(".ack-button").click()
        expect(oot.locator(".ack-result")).to_contain_text("choose the cause")
        oot.locator("select.ack-cause").select_option("tool wear")
        oot.locator("select.ack-action").select_option("tool changed")
        oot.locator(".ack-comment").fill("insert 3 chipped")
        oot.locator(".ack-button").click()
        expect(oot.locator(".acked-note")).to_contain_text("cause: tool wear · action: tool changed", timeout=10_000)
        ack = wait_for(
            lambda: [r for r in journal(gateway) if r.get("event") == "alert_ack" and r["subject"] == oot_id],
            what="the acknowledgement on record",
        )[0]
        assert ack["detail"] == "alert acknowledged (cause: tool wear; action: tool changed): insert 3 chipped"
        assert ack["signed_by"] == "sv-3"
        shot(live, screenshot_dir, "quality-reaction-plan-ack.png")
        # without a choice the gateway refuses too (a forged request, past the page)
        forged = dashboard.acknowledge("0195-not-on-screen", "sv-3", "x")
        assert forged.status == 404
        # the value was wrong (gauge not square): the inspector re-measures, the episode closes, and
        # the nonconformance is superseded by the re-measure
        assert watcher.send("remeasure", "op-42", reason="gauge_not_square")["ok"]
        send("12.004")
        expect(oot).to_have_attribute("data-state", "closed", timeout=10_000)
        send("12.036")  # the next part is really out: a new episode, a nonconformance to decide
        expect(live.locator(".alert.kind-out_of_tolerance")).to_have_count(2, timeout=10_000)
        send("12.001")

        # -- material review: the quality user decides; the gateway checks the role in its register ------
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) >= head, timeout=20, what="every record in InfluxDB")
        sam_mrb = sam_ctx.new_page()
        sam_mrb.goto(dashboard.url + "/mrb")
        expect(sam_mrb.locator(".nc")).to_have_count(1)
        assert sam_mrb.locator(".dispose-form").count() == 0  # a supervisor sees, does not decide
        quentin = sign_in(quentin_ctx, dashboard.url, "qe-7", "/mrb")
        nc = quentin.locator(".nc").first
        expect(nc).to_contain_text("12.036")
        superseded = quentin.locator("tr.nc-closed .closed-by")
        expect(superseded).to_contain_text("superseded by a re-measure: 12.004 mm pass")
        nc_id = str(nc.get_attribute("data-id"))
        nc.locator("select[name=decision]").select_option("use_as_is")
        nc.locator("button").click()
        expect(nc.locator(".dispose-result")).to_contain_text("concession")
        nc.locator("select[name=decision]").select_option("rework")
        nc.locator("input[name=comment]").fill("re-bore to 12.000")
        nc.locator("button").click()
        expect(nc.locator(".decided-note")).to_contain_text("rework by qe-7", timeout=10_000)
        shot(quentin, screenshot_dir, "quality-mrb-decided.png")
        disposition = next(r for r in journal(gateway) if r["kind"] == "disposition")
        assert (disposition["nonconformance_id"], disposition["decision"], disposition["signed_by"]) == (
            nc_id,
            "rework",
            "qe-7",
        )
        assert disposition["signature_meaning"] == "dispositioned"
        # decided: shown closed once stored, and a second decision is refused by the gateway
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) >= head, timeout=20, what="the disposition in InfluxDB")
        quentin.reload()
        expect(quentin.locator("#no-open")).to_be_visible()
        expect(quentin.locator(f'tr.nc-closed[data-id="{nc_id}"] .closed-by')).to_contain_text("rework by qe-7")
        nc_record = next(r for r in journal(gateway) if r["kind"] == "nonconformance" and r["id"] == nc_id)
        again = dashboard.dispose(nc_record, "qe-7", "scrap", None, None)
        assert again.status == 502 and "decided already" in again.body["error"], again.body
        # a dashboard account claiming quality is refused by the gateway's register
        olga = dashboard.dispose(nc_record, "op-42", "scrap", None, None)
        assert olga.status == 502 and "needs the role quality" in olga.body["error"], olga.body
        assert sum(r["kind"] == "disposition" for r in journal(gateway)) == 1
        shot(quentin, screenshot_dir, "quality-mrb-closed.png")
    finally:
        watcher.close()
        for context in contexts:
            context.close()
        dashboard.stop()
        if gateway_running:
            gateway.stop()
        recorder.stop()
