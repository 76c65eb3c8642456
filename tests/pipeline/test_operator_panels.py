"""The operator view on the panels it runs on: 800x480 (7"), 1024x600 and 1280x800.

Each size is checked with the element boxes Chromium lays out: no card overlaps another or
leaves the screen, what a card shows is not clipped, and every touch target (buttons,
fields, in the page and in a dialog) is at least 44 px high. Also here, as a user meets
them: a new part starts blank, and a scan typed while a dialog is open goes to the scan
field (or is refused with a message), whether the scanner ends it with Enter or Tab.
"""

from __future__ import annotations

import re
from decimal import Decimal
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from collector.gateway.daemon import Gateway
from simulators.mitutoyo import MitutoyoSimulator
from tests.helpers import wait_for

# the fixtures (browser, labelled_gateway) are the operator view tests': imported, pytest finds them
from tests.pipeline.test_operator_view import (  # noqa: F401
    Client,
    badge_and_pin,
    browser,
    labelled_gateway,
    measurements,
    open_station,
    plain_gateway,
    scanner,
    screenshot,
    view_of,
)

pytestmark = pytest.mark.services

PANELS = [(800, 480), (1024, 600), (1280, 800)]
MIN_TARGET = 44  # px: the smallest touch target a gloved finger hits reliably
#: the blocks of the screen: none may overlap another
CARDS = [
    "header.topbar",
    "section.context",
    "#banner",
    "#next-card",
    "#last-card",
    ".plan-wrap",
    "#verdict",
    ".scan-box",
    ".buttons",
]

BOXES = """(selectors) => selectors.map((s) => {
  const e = document.querySelector(s);
  const r = e.getBoundingClientRect();
  return {name: s, x: r.x, y: r.y, w: r.width, h: r.height,
          clipped: e.scrollHeight > e.clientHeight + 1 && getComputedStyle(e).overflowY === 'hidden'};
})"""

TARGETS = """(root) => [...document.querySelectorAll(root + ' button, ' + root + ' input, ' + root + ' select')]
  .filter((e) => e.offsetParent !== null || e.getClientRects().length > 0)
  .map((e) => { const r = e.getBoundingClientRect();
                return {id: e.id || e.textContent.trim(), w: r.width, h: r.height}; })
  .filter((t) => t.w > 0 && t.h > 0)"""


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two boxes share more than a sub-pixel edge."""
    dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
    dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
    return bool(dx > 0.5 and dy > 0.5)


def check_layout(page: Any, width: int, height: int) -> None:
    shown = page.evaluate("getComputedStyle(document.getElementById('chart-card')).display") != "none"
    boxes = page.evaluate(BOXES, [*CARDS, "#chart-card"] if shown else CARDS)
    for box in boxes:
        assert box["h"] >= MIN_TARGET, f"{width}x{height}: {box['name']} is {box['h']:.0f} px high"
        assert box["x"] >= -0.5 and box["x"] + box["w"] <= width + 0.5, f"{width}x{height}: {box['name']} off screen"
        assert box["y"] >= -0.5 and box["y"] + box["h"] <= height + 0.5, f"{width}x{height}: {box['name']} off screen"
        assert not box["clipped"], f"{width}x{height}: {box['name']} cuts off what it shows"
    for a, b in combinations(boxes, 2):
        assert not overlap(a, b), f"{width}x{height}: {a['name']} overlaps {b['name']}: {a} {b}"
    targets = page.evaluate(TARGETS, "body > .screen")
    assert {t["id"] for t in targets} >= {"scan", "btn-remeasure", "btn-signout"}
    small = [t for t in targets if t["h"] < MIN_TARGET]
    assert not small, f"{width}x{height}: touch targets under {MIN_TARGET} px: {small}"


def test_every_panel_size_lays_out_without_overlaps_and_with_big_enough_targets(
    labelled_gateway: Gateway,  # noqa: F811
    caliper: MitutoyoSimulator,
    browser: tuple[Any, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = labelled_gateway
    page, expect = browser
    open_station(page, expect, gateway)
    badge_and_pin(page, expect)
    scanner(page, "HX-4711|HX000300|L-7")
    expect(page.locator("#serial")).to_have_text("HX000300")
    caliper.send_value(Decimal("12.004"))
    expect(page.locator("#last-value")).to_have_text("12.004")
    for width, height in PANELS:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(50)  # one frame for the big numbers to be fitted to the new size
        check_layout(page, width, height)
        chart = page.locator("#chart")
        if width >= 1200:  # room for the trend card: the next characteristic's values, drawn by the gateway
            expect(chart).to_be_visible()
            expect(chart).to_have_attribute("src", re.compile(r"/chart\.svg\?characteristic=L1&"))
            wait_for(lambda: page.evaluate("document.getElementById('chart').naturalWidth") > 0, what="chart loaded")
        else:
            expect(chart).to_be_hidden()
        screenshot(page, tmp_path, f"operator-view-{width}x{height}.png")
        page.get_by_role("button", name="Re-measure").click()
        dialog = page.locator("#dlg-remeasure")
        expect(dialog).to_be_visible()
        box = dialog.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height + 0.5, (width, height, box)
        small = [t for t in page.evaluate(TARGETS, "#dlg-remeasure") if t["h"] < MIN_TARGET]
        assert not small, f"{width}x{height}: dialog targets under {MIN_TARGET} px: {small}"
        screenshot(page, tmp_path, f"operator-view-{width}x{height}-dialog.png")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        # the other dialogs (abandon, sign-in, release), shown as the page shows them, measured alike
        for name in ("abandon", "signin", "release"):
            other = page.locator(f"#dlg-{name}")
            page.evaluate("(id) => document.getElementById(id).showModal()", f"dlg-{name}")
            expect(other).to_be_visible()
            box = other.bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height + 0.5, (name, box)
            targets = page.evaluate(TARGETS, f"#dlg-{name}")
            assert any(t["id"] == "Cancel" for t in targets), (name, targets)  # measured, not an empty list
            small = [t for t in targets if t["h"] < MIN_TARGET]
            assert not small, f"{width}x{height}: {name} dialog targets under {MIN_TARGET} px: {small}"
            screenshot(page, tmp_path, f"operator-view-{width}x{height}-{name}.png")
            other.get_by_role("button", name="Cancel").click()
            expect(other).to_be_hidden()

    # the finished part, then the next label: verdict and tiles of the first do not carry over
    page.set_viewport_size({"width": 800, "height": 480})
    caliper.send_value(Decimal("12.00"))  # L1, the last characteristic of the plan
    expect(page.locator("#verdict-word")).to_have_text("ACCEPT")
    expect(page.locator('.tile[data-characteristic="D1"]')).to_have_class(re.compile(r"\bpass\b"))
    check_layout(page, 800, 480)
    screenshot(page, tmp_path, "operator-view-800x480-verdict.png")
    scanner(page, "HX-4711|HX000301|L-7")
    expect(page.locator("#serial")).to_have_text("HX000301")
    expect(page.locator("#verdict-word")).to_have_text("—")
    expect(page.locator("#last-value")).to_have_text("no value yet")
    expect(page.locator(".tile.pass, .tile.fail")).to_have_count(0)
    screenshot(page, tmp_path, "operator-view-800x480-new-part.png")


def test_a_scan_while_a_dialog_is_open_goes_to_the_scan_field_and_tab_ends_a_scan(
    labelled_gateway: Gateway,  # noqa: F811
    caliper: MitutoyoSimulator,
    browser: tuple[Any, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = labelled_gateway
    page, expect = browser
    page.set_viewport_size({"width": 800, "height": 480})
    open_station(page, expect, gateway)
    badge_and_pin(page, expect)

    # a Tab-terminated scanner: the code is submitted, the focus stays in the scan field
    page.keyboard.type("HX-4711|HX000400|L-7")
    page.keyboard.press("Tab")
    expect(page.locator("#serial")).to_have_text("HX000400")
    assert page.evaluate("document.activeElement.id") == "scan"
    caliper.send_value(Decimal("12.004"))
    expect(page.locator("#last-value")).to_have_text("12.004")

    # the abandon dialog is open, its comment field focused; the scanner fires a label
    page.get_by_role("button", name="Abandon part").click()
    expect(page.locator("#dlg-abandon")).to_be_visible()
    page.locator("#abandon-text").click()
    scanner(page, "HX-4711|HX000401|L-7")
    # not typed into the comment, and not lost: refused with a message, the dialog stays
    expect(page.locator("#abandon-error")).to_contain_text("scan not taken while this dialog is open")
    assert page.locator("#abandon-text").input_value() == ""
    expect(page.locator("#dlg-abandon")).to_be_visible()
    expect(page.locator("#serial")).to_have_text("HX000400")  # the part in front of the station is unchanged
    screenshot(page, tmp_path, "operator-view-scan-in-dialog.png")
    page.locator("#abandon-text").fill("scratched")  # typing by hand still works
    assert page.locator("#abandon-text").input_value() == "scratched"
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#dlg-abandon")).to_be_hidden()
    wait_for(lambda: page.evaluate("document.activeElement.id") == "scan", what="the scan field refocused")
    scanner(page, "HX-4711|HX000401|L-7")  # scanned again with the dialog closed: taken
    expect(page.locator("#serial")).to_have_text("HX000401")
    assert [r["serial"] for r in measurements(gateway)] == ["HX000400"]


def test_the_trend_chart_draws_the_values_the_gateway_judged(
    plain_gateway: Gateway,  # noqa: F811
    caliper: MitutoyoSimulator,
) -> None:
    """The chart the page shows is the gateway's drawing of the values it judged, re-measures in place."""
    gateway = plain_gateway  # a part context with an operator: every value is judged
    d1 = ["12.004", "12.010", "11.996"]
    for n, value in enumerate(d1):
        caliper.send_value(Decimal(value))  # D1
        caliper.send_value(Decimal("12.00"))  # L1: the part is complete
        expected = 2 * (n + 1)
        wait_for(lambda: gateway.stats.measurements == expected, what=f"part {n + 1} measured")  # noqa: B023 - waited for in this iteration
    client = Client(view_of(gateway))
    status, headers, body = client.request("GET", "/station/st-10/chart.svg?characteristic=D1")
    svg = body.decode()
    assert status == 200 and headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" class="control-chart" data-kind="imr"')
    drawn = re.findall(r'<circle[^>]*data-value="([^"]+)"', svg)
    assert [float(x) for x in drawn[: len(d1)]] == [float(v) for v in d1]  # the X panel, oldest first
    assert gateway.views.history("st-10", "D1") == [float(v) for v in d1]
    assert client.request("GET", "/station/st-10/chart.svg?characteristic=ZZ")[0] == 404
    status, _, body = client.request("GET", "/station/st-10/chart.svg?characteristic=L1")
    assert status == 200 and b"control-chart" in body
