"""The quality pages of the dashboard: a characteristic's control chart and capability (``/chart``,
updated live), and the material review of nonconformances (``/mrb``); see docs/quality.md.

Functions of the request handler (:class:`.handlers.DashboardHandler` routes to them), kept
apart so that the handler module stays about sign-in, the live page and traceability.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from markupsafe import Markup

from collector import web_charts
from collector.dashboard import records
from collector.dashboard.auth import Session, may_dispose
from collector.errors import StoreError
from collector.web import RequestError

if TYPE_CHECKING:
    from collector.dashboard.handlers import DashboardHandler
    from collector.inspection.record_types import Record

log = logging.getLogger(__name__)

MAX_TEXT = 500

#: the material review board's decisions (the gateway's command knows the same words)
DECISIONS = (
    ("scrap", "Scrap"),
    ("rework", "Rework"),
    ("use_as_is", "Use as is (with concession)"),
    ("return_to_supplier", "Return to supplier"),
)
MRB_DAYS = 30  # how far back the material review page looks
HISTORY_DAYS = 7  # how far back a chart opened with no live values reads the store


# -- charts ----------------------------------------------------------------------------------------
def chart_target(h: DashboardHandler) -> tuple[str, str]:
    station, characteristic = h._q("station"), h._q("characteristic")
    if not station or not characteristic or len(station) > 200 or len(characteristic) > 200:
        raise RequestError(HTTPStatus.BAD_REQUEST, "give station (site/line/station) and characteristic")
    return station, characteristic


def figures_html(h: DashboardHandler, station: str, characteristic: str) -> str:
    dash = h.dash
    points, _ = dash.state.charts.data(station, characteristic)
    if not points and station.count("/") == 2:
        since = int((dash.state.clock() - HISTORY_DAYS * 86400) * 1_000_000)
        try:
            found = records.characteristic_history(
                dash.store, station.rsplit("/", 1)[1], characteristic, since, dash.keys
            )
        except StoreError as exc:
            log.warning("dashboard: chart history: the store did not answer: %s", exc)
            found = []
        dash.state.charts.seed(station, characteristic, found)
    return str(web_charts.figures_html(dash.figures(station, characteristic), title=characteristic))


def chart_page(h: DashboardHandler, session: Session) -> None:
    series = h.dash.state.charts.listing()
    station, characteristic = h._q("station"), h._q("characteristic")
    if not (station and characteristic) and series:
        station, characteristic = series[0]["station_key"], series[0]["characteristic"]
    figures = figures_html(h, station, characteristic) if station and characteristic else ""
    values = {
        **h._signed_in(session),
        "series": [
            {
                **x,
                "href": "/chart?" + urlencode({"station": x["station_key"], "characteristic": x["characteristic"]}),
            }
            for x in series
        ],
        "station": station,
        "characteristic": characteristic,
        "figures": Markup(figures),
    }
    h._page(HTTPStatus.OK, "chart.html", values)


def chart_figures(h: DashboardHandler) -> None:
    station, characteristic = chart_target(h)
    body = figures_html(h, station, characteristic).encode("utf-8")
    h.send(HTTPStatus.OK, "text/html; charset=utf-8", body, cache="no-store")


# -- material review -------------------------------------------------------------------------------
def nonconformances(h: DashboardHandler) -> list[records.Nonconformance]:
    since = int((h.dash.state.clock() - MRB_DAYS * 86400) * 1_000_000)
    try:
        return records.nonconformances(h.dash.store, since, h.dash.keys)
    except StoreError as exc:
        raise h._store_down("material review", exc) from None


def mrb_page(h: DashboardHandler, session: Session) -> None:
    error = ""
    found: list[records.Nonconformance] = []
    try:
        found = nonconformances(h)
    except RequestError as exc:
        error = exc.message
    rows = [mrb_row(n) for n in found]
    values = {
        **h._signed_in(session),
        "error": error,
        "open": [r for r in rows if r["open"]],
        "closed": [r for r in rows if not r["open"]][:100],
        "decisions": DECISIONS,
        "may_dispose": may_dispose(session.role),
        "days": MRB_DAYS,
    }
    h._page(HTTPStatus.OK, "mrb.html", values)


def dispose(h: DashboardHandler, session: Session, nc_id: str) -> None:
    if not may_dispose(session.role):
        log.warning("dashboard: %s (%s) tried to decide a nonconformance: refused", session.user, session.role)
        raise RequestError(HTTPStatus.FORBIDDEN, "only the quality role may decide nonconformances")
    body = h._read_json()
    decision = body.get("decision")
    if decision not in dict(DECISIONS):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"decision must be one of {', '.join(dict(DECISIONS))}")
    concession, comment = text_field(body, "concession"), text_field(body, "comment")
    if decision == "use_as_is" and not concession:
        raise RequestError(HTTPStatus.BAD_REQUEST, "use as is needs a concession (deviation permit) reference")
    nc = next((n for n in nonconformances(h) if n.record.get("id") == nc_id), None)
    if nc is None:
        raise RequestError(HTTPStatus.NOT_FOUND, f"no such nonconformance in the last {MRB_DAYS} days")
    if not nc.open:
        raise RequestError(HTTPStatus.CONFLICT, "this nonconformance is closed already")
    result = h.dash.dispose(nc.record, session.user, str(decision), concession, comment)
    h.send_json(result.status, result.body)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def text_field(body: Record, key: str) -> str | None:
    """An optional text field of a JSON request: trimmed, None when empty, refused when too long."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} must be text")
    value = (value or "").strip() or None
    if value is not None and len(value) > MAX_TEXT:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} is longer than {MAX_TEXT} characters")
    return value


def mrb_row(n: records.Nonconformance) -> dict[str, Any]:
    """What the material review page shows of a nonconformance (plain text: the template escapes it)."""
    r = n.record
    closed_by = ""
    if n.disposition is not None:
        d = n.disposition
        closed_by = f"{d.get('decision')} by {d.get('signed_by') or d.get('by')}" + (
            f", concession {d['concession']}" if d.get("concession") else ""
        )
    elif n.remeasure is not None:
        m = n.remeasure
        closed_by = f"superseded by a re-measure: {m.get('judged_value')} {m.get('unit') or ''} {m.get('verdict')}"
    return {
        "id": _text(r.get("id")),
        "time": str(r.get("recorded_at") or "")[:19].replace("T", " "),
        "station": _text(r.get("station")),
        "serial": _text(r.get("serial")),
        "part_number": _text(r.get("part_number")),
        "characteristic": _text(r.get("characteristic")),
        "value": f"{_text(r.get('judged_value'))} {_text(r.get('unit'))}".strip(),
        "limits": f"{_text(r.get('lsl'))} … {_text(r.get('usl'))}",
        "limit": _text(r.get("limit")),
        "open": n.open,
        "closed_by": closed_by,
    }
