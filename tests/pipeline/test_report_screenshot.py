"""The printable part report as a reviewer sees it: rendered by Chromium, screenshot and PDF."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from collector.evidence.report import part_report_html
from tests.conftest import require_binary
from tests.pdftext import pages_text

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dfq" / "hx4711_remeasure_invalidation" / "records.json"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def test_part_report_renders_and_prints(tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    if os.environ.get("CI") == "true":
        from playwright.sync_api import sync_playwright
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    everything = json.loads(GOLDEN.read_text(encoding="utf-8"))
    first = next(r["serial"] for r in everything if r.get("serial"))
    records = [r for r in everything if r.get("serial") == first]
    page_file = tmp_path / "part-report.html"
    page_file.write_text(part_report_html(records), encoding="utf-8")
    out = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:  # launch() gives the browser a fresh temporary profile
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_file.as_uri())
            text = page.inner_text("body")
            serial = next(r["serial"] for r in records if r.get("serial"))
            assert serial in text and "hashes intact" in text
            page.screenshot(path=str(out / "part-report.png"), full_page=True)
            pdf = page.pdf(format="A4", landscape=True)
        finally:
            browser.close()
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    (out / "part-report.pdf").write_bytes(pdf)
    print(f"part report screenshot: {out / 'part-report.png'}")


def test_printed_pages_say_page_x_of_y_and_the_serial(tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    if os.environ.get("CI") == "true":
        from playwright.sync_api import sync_playwright
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    records = [r for r in json.loads(GOLDEN.read_text(encoding="utf-8")) if r.get("serial") == "SN-002"]
    page_file = tmp_path / "part-report-sn-002.html"
    page_file.write_text(part_report_html(records), encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            pdf = page.pdf(format="A4", landscape=True)
        finally:
            browser.close()
    out = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "part-report-sn-002.pdf").write_bytes(pdf)
    pages = pages_text(pdf)
    assert len(pages) >= 2  # a re-measured, disposed part does not fit one landscape page
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text, text[:200]
        assert "Inspection report SN-002" in text
    assert "Reviewed by (name)" in pages[-1]
