"""Control charts, histograms and capability tables as inline SVG/HTML, drawn on the server.

Every page that shows a chart (the dashboard's characteristic page, the operator view, the
part report) calls :func:`figures_html` (or the single pieces) with the figures of
:func:`collector.inspection.charts.characteristic_figures`, so a chart on a screen and on
paper are the same drawing of the same numbers.

Why SVG drawn here, not a JavaScript chart library: the dashboard runs on a Pi-class box
and the pages are opened on shop-floor PCs without internet, so nothing may come from a
CDN; a chart library would be a vendored, minified dependency to audit and update, and the
part report must be a self-contained file that prints and archives as is (its CSP allows no
script at all). SVG is text: it prints sharp, it is tested by reading its elements, and a
live page only swaps the fragment when the server pushes that something changed.

Coordinates: a point's ``cy`` is ``top + (high - value) / (high - low) * plot_height``;
every line and point carries ``data-value`` so tests and people can read what was drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from collector.inspection.charts import CapabilitySummary, Chart, Figures, Histogram, Interval, Panel

_FONT = 'font-family="sans-serif"'
_SMALL = _FONT + ' font-size="11"'
_COLOURS = {
    "centre": "#2e7d32",
    "control": "#c62828",
    "spec": "#1565c0",
    "zone": "#bdbdbd",
    "point": "#37474f",
    "flagged": "#d50000",
    "bar": "#90a4ae",
    "curve": "#6a1b9a",
}


_ANCHOR = {"LSL": "end", "USL": "start", "T": "middle"}  # labels beside their line, inside the picture


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}"


@dataclass(frozen=True, slots=True)
class _Scale:
    low: float
    high: float
    top: float
    height: float

    @classmethod
    def around(cls, values: Sequence[float], top: float, height: float) -> _Scale:
        low, high = min(values), max(values)
        pad = (high - low) * 0.06 or abs(high) * 0.01 or 1.0
        return cls(low - pad, high + pad, top, height)

    def y(self, value: float) -> float:
        return self.top + (self.high - value) / (self.high - self.low) * self.height


def _line(cls: str, label: str, value: float, scale: _Scale, left: float, right: float, colour: str, dash: str) -> str:
    y = scale.y(value)
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line class="{cls}" data-value="{value!r}" x1="{left:.1f}" x2="{right:.1f}" y1="{y:.2f}" y2="{y:.2f}" '
        f'stroke="{colour}" stroke-width="1.2"{dash_attr}/>'
        f'<text class="{cls}-label" x="{right + 4:.1f}" y="{y + 4:.2f}" fill="{colour}" {_SMALL}>'
        f"{escape(label)} {_fmt(value)}</text>"
    )


def _panel(
    panel: Panel,
    *,
    top: float,
    height: float,
    left: float,
    right: float,
    specs: Sequence[tuple[str, float]] = (),
    x_offset: int = 0,
    count: int,
) -> list[str]:
    """One panel's lines and points; ``x_offset`` shifts a moving-range panel under the later value."""
    spec_values = [v for _, v in specs]
    scale = _Scale.around([*panel.points, panel.ucl, panel.lcl, panel.centre, *spec_values], top, height)
    step = (right - left) / max(1, count - 1)
    out = [
        f'<g class="panel" data-panel="{escape(panel.name)}">',
        f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{height:.1f}" fill="#fff" '
        'stroke="#cfd8dc"/>',
        f'<text x="{left - 6:.1f}" y="{top + 12:.1f}" text-anchor="end" {_SMALL} font-weight="bold">'
        f"{escape(panel.name)}</text>",
    ]
    for z in panel.zones:
        y = scale.y(z)
        out.append(
            f'<line class="zone" x1="{left:.1f}" x2="{right:.1f}" y1="{y:.2f}" y2="{y:.2f}" '
            f'stroke="{_COLOURS["zone"]}" stroke-width="0.6" stroke-dasharray="2 3"/>'
        )
    out.append(_line("cl", "CL", panel.centre, scale, left, right, _COLOURS["centre"], ""))
    out.append(_line("ucl", "UCL", panel.ucl, scale, left, right, _COLOURS["control"], "6 3"))
    if panel.lcl != 0.0 or panel.name == "X" or panel.name == "Xbar":
        out.append(_line("lcl", "LCL", panel.lcl, scale, left, right, _COLOURS["control"], "6 3"))
    for name, value in specs:
        out.append(_line(name.lower(), name, value, scale, left, right, _COLOURS["spec"], "1 0"))
    coords = [(left + (i + x_offset) * step, scale.y(p)) for i, p in enumerate(panel.points)]
    if coords:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{_COLOURS["point"]}" stroke-width="1"/>')
    for i, ((x, y), p) in enumerate(zip(coords, panel.points, strict=True)):
        rules = panel.flagged.get(i)
        if rules:
            out.append(
                f'<circle class="pt flagged" data-index="{i}" data-value="{p!r}" '
                f'data-rules="{" ".join(map(str, rules))}" cx="{x:.1f}" cy="{y:.1f}" r="4.5" '
                f'fill="{_COLOURS["flagged"]}"><title>#{i + 1}: {_fmt(p)} rule {", ".join(map(str, rules))}'
                "</title></circle>"
            )
        else:
            out.append(
                f'<circle class="pt" data-index="{i}" data-value="{p!r}" cx="{x:.1f}" cy="{y:.1f}" r="2.5" '
                f'fill="{_COLOURS["point"]}"/>'
            )
    out.append("</g>")
    return out


def control_chart_svg(chart: Chart, *, title: str = "", width: int = 760, height: int = 380) -> Markup:
    """The location panel (X or X̄, with the specification for individuals) over its dispersion panel."""
    left, right = 52.0, width - 96.0
    gap, head = 26.0, 22.0
    loc_h = (height - head - gap - 16) * 0.62
    disp_h = height - head - gap - 16 - loc_h
    specs = []
    if chart.subgroup_size == 1:  # tolerances apply to single parts, not to subgroup means
        specs = [(n, v) for n, v in (("LSL", chart.lsl), ("USL", chart.usl)) if v is not None]
    count = len(chart.location.points)
    names = {"imr": "I-MR", "xbar_r": "X̄-R", "xbar_s": "X̄-S"}
    caption = f"{names[chart.kind]} chart" + (f": {title}" if title else "")
    note = f"limits from {chart.baseline_count} {'values' if chart.subgroup_size == 1 else 'subgroups'}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="control-chart" data-kind="{chart.kind}" '
        f'data-baseline="{chart.baseline_count}" data-baseline-short="{str(chart.baseline_short).lower()}" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(caption)}">',
        f'<text x="{left:.1f}" y="14" {_FONT} font-size="13" font-weight="bold">{escape(caption)}</text>',
        f'<text class="baseline-note" x="{right:.1f}" y="14" text-anchor="end" {_SMALL} '
        f'fill="{"#e65100" if chart.baseline_short else "#546e7a"}">{escape(note)}'
        + (" — provisional: below the AIAG minimum" if chart.baseline_short else "")
        + "</text>",
    ]
    parts += _panel(chart.location, top=head, height=loc_h, left=left, right=right, specs=specs, count=count)
    offset = 1 if chart.kind == "imr" else 0
    parts += _panel(
        chart.dispersion, top=head + loc_h + gap, height=disp_h, left=left, right=right, x_offset=offset, count=count
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram_svg(
    hist: Histogram,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    target: float | None = None,
    width: int = 480,
    height: int = 260,
) -> Markup:
    """Bars of the values, the fitted normal curve, and the specification limits as vertical lines."""
    left, right, top, bottom = 80.0, width - 80.0, 22.0, height - 28.0
    lo, hi = hist.edges[0], hist.edges[-1]
    span = hi - lo

    def x(v: float) -> float:
        return left + (v - lo) / span * (right - left)

    peak = max(max(hist.counts), max(hist.density(hist.mean), 0.0)) * 1.1 or 1.0

    def y(c: float) -> float:
        return bottom - c / peak * (bottom - top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="histogram" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="histogram">',
        f'<text x="{left:.1f}" y="14" {_FONT} font-size="13" font-weight="bold">Histogram (n = {sum(hist.counts)})'
        "</text>",
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#90a4ae"/>',
    ]
    for i, c in enumerate(hist.counts):
        x0, x1 = x(hist.edges[i]), x(hist.edges[i + 1])
        parts.append(
            f'<rect class="bar" data-count="{c}" x="{x0 + 0.5:.1f}" y="{y(c):.1f}" width="{max(0.0, x1 - x0 - 1):.1f}" '
            f'height="{bottom - y(c):.1f}" fill="{_COLOURS["bar"]}"/>'
        )
    if hist.sigma > 0:
        samples = [lo + span * k / 80 for k in range(81)]
        path = " ".join(f"{x(v):.1f},{y(hist.density(v)):.1f}" for v in samples)
        parts.append(f'<polyline class="normal" points="{path}" fill="none" stroke="{_COLOURS["curve"]}"/>')
    for name, value, colour in (("LSL", lsl, _COLOURS["spec"]), ("USL", usl, _COLOURS["spec"]), ("T", target, "#555")):
        if value is None:
            continue
        xv = x(value)
        parts.append(
            f'<line class="{name.lower()}" data-value="{value!r}" x1="{xv:.1f}" x2="{xv:.1f}" y1="{top}" '
            f'y2="{bottom}" stroke="{colour}" stroke-width="1.5"/>'
            f'<text x="{xv:.1f}" y="{bottom + 14:.1f}" text-anchor="{_ANCHOR[name]}" fill="{colour}" {_SMALL}>'
            f"{name} {_fmt(value)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _index(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _interval(iv: Interval | None) -> str:
    return "" if iv is None else f"{iv.low:.2f} … {iv.high:.2f}"


def capability_html(summary: CapabilitySummary) -> Markup:
    """A small table: each index, its confidence interval, and the number of values behind it."""
    cap = summary.capability
    rows = (
        ("Cp", cap.cp, summary.cp),
        ("Cpk", cap.cpk, summary.cpk),
        ("Pp", cap.pp, summary.pp),
        ("Ppk", cap.ppk, summary.ppk),
    )
    pct = f"{summary.confidence * 100:g} %"
    body = "".join(
        f'<tr data-index="{name}"><th>{name}</th><td class="figure">{_index(v)}</td><td>{_interval(iv)}</td></tr>'
        for name, v, iv in rows
    )
    return Markup(
        '<table class="capability">'
        f"<caption>Capability (n = {cap.n}, σ within {cap.sigma_within:.4g} by {escape(cap.sigma_method)}, "
        f"σ overall {cap.sigma_overall:.4g})</caption>"
        f"<thead><tr><th>Index</th><th>Value</th><th>{pct} confidence</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def figures_html(figures: Figures, *, title: str = "", compact: bool = False) -> Markup:
    """Chart, histogram and capability of one characteristic (``compact``: the chart only, smaller)."""
    if figures.chart is None:
        return Markup(f'<p class="chart-empty">{escape(figures.note or "not enough values for a chart yet")}</p>')
    if compact:
        return control_chart_svg(figures.chart, title=title, width=520, height=260)
    parts = [Markup('<div class="figures">'), control_chart_svg(figures.chart, title=title)]
    parts.append(Markup('<div class="figures-side">'))
    if figures.histogram is not None:
        c = figures.chart
        parts.append(histogram_svg(figures.histogram, lsl=c.lsl, usl=c.usl, target=c.target))
    if figures.capability is not None:
        parts.append(capability_html(figures.capability))
    if figures.note:
        parts.append(Markup('<p class="chart-note">{}</p>').format(figures.note))
    parts.append(Markup("</div></div>"))
    return Markup("").join(parts)


__all__ = ["capability_html", "control_chart_svg", "figures_html", "histogram_svg"]
