"""The drawn charts carry the limits and flags an independent computation gives (NumPy, textbook formulas)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from collector import web_charts
from collector.inspection import charts

SVG = "{http://www.w3.org/2000/svg}"
RNG = np.random.default_rng(1205)


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def _line_values(root: ET.Element, panel: str) -> dict[str, float]:
    g = next(e for e in root.iter(f"{SVG}g") if e.get("data-panel") == panel)
    return {str(e.get("class")): float(str(e.get("data-value"))) for e in g.iter(f"{SVG}line") if e.get("data-value")}


def _flagged(root: ET.Element, panel: str) -> set[int]:
    g = next(e for e in root.iter(f"{SVG}g") if e.get("data-panel") == panel)
    return {int(str(e.get("data-index"))) for e in g.iter(f"{SVG}circle") if "flagged" in str(e.get("class"))}


def test_the_individuals_chart_draws_the_textbook_limits_and_flags_the_points_beyond_them() -> None:
    base = RNG.normal(10.0, 0.01, 30)
    xs = np.concatenate([base, [10.08, 9.99, 10.0]])
    figures = charts.characteristic_figures(xs.tolist(), lsl=9.95, usl=10.05, baseline=30)
    root = _svg(web_charts.figures_html(figures, title="bore"))
    svg = next(root.iter(f"{SVG}svg")) if root.tag != f"{SVG}svg" else root
    mr_bar = np.abs(np.diff(base)).mean()
    centre, sigma = base.mean(), mr_bar / 1.128
    lines = _line_values(svg, "X")
    assert lines["cl"] == pytest.approx(centre, rel=1e-12)
    assert lines["ucl"] == pytest.approx(centre + 3 * sigma, rel=1e-12)
    assert lines["lcl"] == pytest.approx(centre - 3 * sigma, rel=1e-12)
    assert lines["lsl"] == 9.95 and lines["usl"] == 10.05
    beyond = {i for i, x in enumerate(xs) if abs(x - centre) > 3 * sigma}
    assert 30 in beyond
    assert beyond <= _flagged(svg, "X")
    mr = _line_values(svg, "MR")
    assert mr["cl"] == pytest.approx(mr_bar, rel=1e-12)
    assert mr["ucl"] == pytest.approx(3.267 * mr_bar, rel=1e-12)
    # 30 values are fewer than the AIAG's 100: the chart says its limits are provisional
    assert svg.get("data-baseline-short") == "true"
    assert "provisional" in str(web_charts.figures_html(figures))


def test_a_point_is_drawn_where_its_value_is() -> None:
    xs = [1.0, 2.0, 3.0, 2.0, 1.0, 2.0]
    root = _svg(web_charts.control_chart_svg(charts.individuals_chart(xs)))
    g = next(e for e in root.iter(f"{SVG}g") if e.get("data-panel") == "X")
    ys = {float(str(c.get("data-value"))): float(str(c.get("cy"))) for c in g.iter(f"{SVG}circle")}
    # linear: equal steps in value are equal steps on the screen, higher values higher up
    assert ys[1.0] > ys[2.0] > ys[3.0]
    assert ys[1.0] - ys[2.0] == pytest.approx(ys[2.0] - ys[3.0], abs=0.02)


@pytest.mark.parametrize("method", ["r", "s"])
def test_subgroup_charts_draw_the_factor_limits(method: str) -> None:
    n = 5
    xs = RNG.normal(25.0, 0.05, 30 * n)
    figures = charts.characteristic_figures(xs.tolist(), lsl=24.8, usl=25.2, subgroup_size=n, method=method)  # type: ignore[arg-type]
    assert figures.chart is not None and figures.chart.kind == f"xbar_{method}"
    root = _svg(web_charts.control_chart_svg(figures.chart))
    groups = xs.reshape(30, n)
    grand = groups.mean()
    if method == "r":
        bar = np.ptp(groups, axis=1).mean()
        half, upper = 0.577 * bar, 2.114 * bar
    else:
        bar = groups.std(axis=1, ddof=1).mean()
        half, upper = 1.427 * bar, 2.089 * bar
    loc = _line_values(root, "Xbar")
    assert loc["ucl"] == pytest.approx(grand + half, rel=1e-9)
    assert loc["lcl"] == pytest.approx(grand - half, rel=1e-9)
    disp = _line_values(root, method.upper())
    assert disp["cl"] == pytest.approx(bar, rel=1e-9)
    assert disp["ucl"] == pytest.approx(upper, rel=1e-9)
    assert "lsl" not in loc  # tolerances judge parts, not subgroup means
    # capability with the within-subgroup sigma of the chart: R-bar/d2(5) or s-bar/c4(5)
    assert figures.capability is not None
    sigma_w = bar / (2.326 if method == "r" else 0.9400)
    assert figures.capability.capability.sigma_within == pytest.approx(sigma_w, rel=1e-9)
    assert figures.capability.capability.cp == pytest.approx(0.4 / (6 * sigma_w), rel=1e-9)


def test_the_capability_table_shows_the_textbook_indices_and_intervals() -> None:
    xs = RNG.normal(84.2, 0.05, 200)
    lsl, usl = 84.0, 84.4
    figures = charts.characteristic_figures(xs.tolist(), lsl=lsl, usl=usl)
    assert figures.capability is not None
    html = str(web_charts.capability_html(figures.capability))
    sigma_w = np.abs(np.diff(xs)).mean() / 1.128
    s = xs.std(ddof=1)
    m = xs.mean()
    expected = {
        "Cp": (usl - lsl) / (6 * sigma_w),
        "Cpk": min(usl - m, m - lsl) / (3 * sigma_w),
        "Pp": (usl - lsl) / (6 * s),
        "Ppk": min(usl - m, m - lsl) / (3 * s),
    }
    table = ET.fromstring(html)
    shown = {str(r.get("data-index")): r for r in table.iter("tr") if r.get("data-index")}
    for name, value in expected.items():
        cells = [c.text for c in shown[name].iter("td")]
        assert cells[0] == f"{value:.2f}"
    # Bissell's interval for Ppk, by hand
    ppk = expected["Ppk"]
    half = 1.959964 * math.sqrt(1 / (9 * 200) + ppk**2 / (2 * 199))
    ppk_cells = [c.text for c in shown["Ppk"].iter("td")]
    assert ppk_cells[1] == f"{ppk - half:.2f} … {ppk + half:.2f}"
    assert "n = 200" in html


def test_the_histogram_counts_every_value_and_draws_the_limits() -> None:
    xs = RNG.normal(5.0, 0.1, 57)
    figures = charts.characteristic_figures(xs.tolist(), lsl=4.6, usl=5.4)
    assert figures.histogram is not None
    root = _svg(web_charts.histogram_svg(figures.histogram, lsl=4.6, usl=5.4))
    counts = [int(str(r.get("data-count"))) for r in root.iter(f"{SVG}rect")]
    assert sum(counts) == 57
    assert counts == np.histogram(xs, bins=len(counts), range=(4.6, 5.4))[0].tolist()
    assert {e.get("class") for e in root.iter(f"{SVG}line") if e.get("data-value")} == {"lsl", "usl"}


def test_too_few_values_say_so_instead_of_drawing() -> None:
    figures = charts.characteristic_figures([1.0], lsl=0.0, usl=2.0)
    assert figures.chart is None
    assert "at least 2" in str(web_charts.figures_html(figures))


def test_limits_in_force_from_the_gateway_are_drawn_and_their_basis_shown() -> None:
    xs = RNG.normal(3.0, 0.01, 40).tolist()
    figures = charts.characteristic_figures(xs, lsl=2.9, usl=3.1, centre=3.001, sigma=0.012, limits_from=25)
    assert figures.chart is not None
    root = _svg(web_charts.control_chart_svg(figures.chart))
    lines = _line_values(root, "X")
    assert lines["ucl"] == pytest.approx(3.001 + 3 * 0.012)
    assert root.get("data-baseline") == "25" and root.get("data-baseline-short") == "true"
