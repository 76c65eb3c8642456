"""Every chart kind as Chromium draws it: I-MR, X̄-R and X̄-S with their limits and flagged points,
the histogram and the capability table; screenshots in the test's temporary directory (or
``SCREENSHOT_DIR``). The figures are checked against NumPy in tests/unit/test_web_charts.py;
here the browser shows that what is drawn is visible where it should be.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from collector import web_charts
from collector.inspection import charts
from tests.pipeline.test_dashboard import browser, screenshot_dir  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Browser

RNG = np.random.default_rng(4711)
PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ font-family: sans-serif; background: #fff; margin: 12px; }}
.figures {{ display: grid; grid-template-columns: 3fr 2fr; gap: 12px; }}
table.capability td, table.capability th {{ padding: 2px 8px; text-align: left; }}
</style></head><body>{}</body></html>"""


@pytest.mark.parametrize(("kind", "size", "method"), [("imr", None, "r"), ("xbar_r", 5, "r"), ("xbar_s", 5, "s")])
def test_each_chart_kind_with_limits_flags_and_capability(
    browser: Browser,  # noqa: F811
    screenshot_dir: Path,  # noqa: F811
    kind: str,
    size: int | None,
    method: str,
) -> None:
    n = (size or 1) * 30
    values = RNG.normal(25.0, 0.02, n)
    values[-(size or 1) :] += 0.08  # the last point (or subgroup) far beyond its control limit
    figures = charts.characteristic_figures(
        values.tolist(),
        lsl=24.9,
        usl=25.1,
        target=25.0,
        subgroup_size=size,
        method=method,  # type: ignore[arg-type]
    )
    assert figures.chart is not None and figures.chart.kind == kind
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    try:
        page.set_content(PAGE.format(web_charts.figures_html(figures, title=f"bore ({kind})")))
        location = "X" if kind == "imr" else "Xbar"
        panel = page.locator(f'g[data-panel="{location}"]')
        for line in ("ucl", "lcl", "cl"):
            assert panel.locator(f"line.{line}").bounding_box() is not None
        last = panel.locator("circle.pt").last
        assert "flagged" in str(last.get_attribute("class"))
        ucl_y = panel.locator("line.ucl").bounding_box()
        point = last.bounding_box()
        assert ucl_y is not None and point is not None and point["y"] < ucl_y["y"]  # drawn above the UCL
        for index in ("Cp", "Cpk", "Pp", "Ppk"):
            assert page.locator(f'tr[data-index="{index}"] td.figure').inner_text() not in ("", "—")
        assert f"n = {n}" in page.locator("table.capability caption").inner_text()
        path = screenshot_dir / f"chart-{kind}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
    finally:
        page.close()
