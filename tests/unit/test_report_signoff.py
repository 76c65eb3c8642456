"""The part report as an auditor signs it: open items only when really open, the signatures
with their meaning, the clock state, page x of y, and capability figures checked against
an independent computation (numpy, textbook formulas)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from collector.evidence import signoff
from collector.evidence.report import part_report_html
from collector.inspection import spc
from tests.unit.test_report import NOW, Page, golden


def records_without_disposition() -> list[dict[str, Any]]:
    """SN-002: D1 out of tolerance (a nonconformance), re-measured in tolerance, part accepted."""
    return [r for r in copy.deepcopy(golden("SN-002")) if r["kind"] != "disposition"]


def nc_rows(page: Page) -> list[str]:
    return [text for a, text in page.find("tr") if a.get("class") == "nc"]


def test_a_remeasured_nonconformance_of_an_accepted_part_is_not_open() -> None:
    records = records_without_disposition()
    (nc,) = [r for r in records if r["kind"] == "nonconformance"]
    assert signoff.nonconformance_state(nc, records) == signoff.NcState(False, "closed: re-measured (12.015 PASS)")
    page = Page(part_report_html(records, generated_at=NOW))
    assert "Open items: 0 of 1." in page.text()
    (row,) = nc_rows(page)
    assert "closed: re-measured (12.015 PASS)" in row and "OPEN" not in row


def test_a_nonconformance_nobody_decided_or_remeasured_is_open() -> None:
    records = [r for r in records_without_disposition() if not (r["kind"] == "measurement" and r.get("supersedes"))]
    page = Page(part_report_html(records, generated_at=NOW))
    assert "Open items: 1 of 1." in page.text()
    (row,) = nc_rows(page)
    assert "OPEN: no disposition recorded" in row


def test_signatures_of_release_and_disposition_with_their_meaning() -> None:
    records = copy.deepcopy(golden("SN-002"))
    release = [r for r in records if r["kind"] == "part" and r.get("supersedes")][-1]
    release.update(
        signed_by="op-117", signer_name="Olga Petrova", signature_meaning="released", signature_method="session"
    )
    (disposition,) = [r for r in records if r["kind"] == "disposition"]
    disposition.update(
        signed_by="qa-7", signer_name="Quinn Ames", signature_meaning="disposed", signature_method="secret"
    )
    page = Page(part_report_html(records, generated_at=NOW))
    rows = {a["data-act"]: text for a, text in page.find("tr") if "data-act" in a}
    assert set(rows) == {"release", "disposition"}  # the superseded verdict is not a release in force
    for text, expected in (
        (rows["release"], ("op-117", "Olga Petrova", "released", "session", "part ACCEPT")),
        (rows["disposition"], ("qa-7", "Quinn Ames", "disposed", "secret")),
    ):
        for piece in expected:
            assert piece in text, (piece, text)


def test_an_unsigned_disposition_is_shown_as_not_signed() -> None:
    records = copy.deepcopy(golden("SN-002"))
    page = Page(part_report_html(records, generated_at=NOW))
    rows = {a["data-act"]: text for a, text in page.find("tr") if "data-act" in a}
    assert "NOT SIGNED" in rows["disposition"]


def test_the_clock_state_is_in_the_header() -> None:
    records = copy.deepcopy(golden("SN-001"))
    page = Page(part_report_html(records, generated_at=NOW))
    (cell,) = page.find("td", id="clock")
    assert cell == ({"colspan": "5", "class": "pass", "id": "clock"}, f"synchronised for all {len(records)} record(s)")
    records[1]["clock_synced"] = False
    page = Page(part_report_html(records, generated_at=NOW))
    (cell,) = page.find("td", id="clock")
    assert cell[0]["class"] == "clock-bad"
    assert cell[1] == f"NOT SYNCHRONISED for 1 of {len(records)} record(s): their times may be off"


def test_page_x_of_y_and_the_serial_are_in_the_printed_margins() -> None:
    records = copy.deepcopy(golden("SN-001"))
    for r in records:
        r["serial"] = 'SN"}x'  # a scanned serial must not end the CSS string or rule
    style = Page(part_report_html(records, generated_at=NOW)).find("style")[0][1]
    assert '@bottom-right { content: "Page " counter(page) " of " counter(pages);' in style
    assert 'content: "Inspection report SN\\000022\\00007dx";' in style


# -- capability -------------------------------------------------------------------------------------
def measurement(cid: str, value: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "measurement",
        "id": f"m-{cid}-{n}",
        "characteristic": cid,
        "value": value,
        "lsl": "11.980",
        "usl": "12.020",
        "nominal": "12.000",
        **extra,
    }


def test_capability_against_an_independent_computation() -> None:
    rng = np.random.default_rng(12)
    xs = [f"{x:.4f}" for x in rng.normal(12.004, 0.005, 40)]
    process = [measurement("D1", x, i) for i, x in enumerate(xs)]
    # a wrong value re-measured and one invalidated: neither may count
    process.append(measurement("D1", "12.500", 100))
    process.append(measurement("D1", "12.001", 101, supersedes="m-D1-100"))
    process.append(measurement("D1", "11.100", 102))
    process.append({"kind": "invalidation", "id": "inv", "target": "m-D1-102"})
    figures = signoff.capability_of(process, ["D1", "L1"])
    assert figures["L1"] == "too few values (0; at least 5)"
    cap = figures["D1"]
    assert isinstance(cap, spc.Capability)
    values = np.array([float(x) for x in [*xs, "12.001"]])
    mean = values.mean()
    sigma_within = np.abs(np.diff(values)).mean() / 1.128  # MR-bar / d2 (n = 2)
    sigma_overall = values.std(ddof=1)
    assert cap.n == 41
    assert cap.mean == pytest.approx(mean, rel=1e-12)
    assert cap.sigma_within == pytest.approx(sigma_within, rel=1e-9)
    assert cap.sigma_overall == pytest.approx(sigma_overall, rel=1e-12)
    assert cap.cp == pytest.approx((12.020 - 11.980) / (6 * sigma_within), rel=1e-9)
    assert cap.cpk == pytest.approx(min(12.020 - mean, mean - 11.980) / (3 * sigma_within), rel=1e-9)
    assert cap.ppk == pytest.approx(min(12.020 - mean, mean - 11.980) / (3 * sigma_overall), rel=1e-9)

    records = copy.deepcopy(golden("SN-001"))
    window = signoff.Process(figures, "test window", {"D1": [float(x) for x in values], "L1": []})
    page = Page(part_report_html(records, generated_at=NOW, process=window))
    rows = {a["data-characteristic"]: text for a, text in page.find("tr") if "data-characteristic" in a}
    assert f"{cap.cpk:.2f}" in rows["D1"] and "41" in rows["D1"] and "rests on few values (under 100)" in rows["D1"]
    assert "too few values" in rows["L1"]
    # the control chart of D1 over the window, the dashboard's drawing of the same values
    assert [a.get("data-characteristic") for a, _ in page.find("figure")] == ["D1"]  # L1 has too few values
    charts = [a for tag, a, _ in page.elements if tag == "svg" and a.get("class") == "control-chart"]
    assert len(charts) == 1 and charts[0]["data-kind"] == "imr"
    drawn = [float(a["data-value"]) for tag, a, _ in page.elements if tag == "circle" and "data-value" in a]
    assert drawn[: len(values)] == [float(x) for x in values]


def test_without_capability_the_report_says_none_was_computed() -> None:
    page = Page(part_report_html(copy.deepcopy(golden("SN-001")), generated_at=NOW))
    assert "Not computed for this report (no process values were given)." in page.text()
