"""The live state: alerts, stations and shift counts as the broker tells them, and the
event stream that carries every change to the open pages.

:class:`LiveState` is fed by the app's MQTT client (alerts, station and gateway status,
records) and read by the pages (a snapshot, then events). Everything here is bounded: the
alerts kept (``max_alerts``), the records per station, the acknowledgements remembered, and
the ring of events a slow page may catch up from (after that it gets a fresh snapshot).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from collector import web
from collector.dashboard.series import Charts
from collector.dashboard.shifts import Shift, iso_us, shift_at
from collector.inspection.records import parse_utc_us
from collector.people.accounts import DashboardSettings

if TYPE_CHECKING:
    from collector.inspection.record_types import Record

log = logging.getLogger(__name__)


class EventHub:
    """Events for the open pages, serialised once, kept in a ring for slow readers."""

    def __init__(self, keep: int = 2000) -> None:
        self.cond = threading.Condition()
        self._events: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=keep)
        self.seq = 0
        self.closed = False

    def emit(self, name: str, data: Any) -> None:
        """Call holding ``cond`` (the state's lock), so snapshots and events stay in order."""
        self.seq += 1
        self._events.append((self.seq, web.sse_event(data, id=self.seq, event=name)))
        self.cond.notify_all()

    def wait(self, after: int, timeout: float) -> tuple[int, list[bytes]] | None:
        """Events after ``after`` (possibly none on timeout); None when the reader fell behind."""
        with self.cond:
            if self.seq <= after and not self.closed:
                self.cond.wait(timeout)
            if self.seq <= after:
                return after, []
            oldest = self._events[0][0] if self._events else self.seq + 1
            if after + 1 < oldest:
                return None
            return self.seq, [body for seq, body in self._events if seq > after]

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class SeqSet:
    """The sequence numbers seen, as merged ranges (records arrive almost always in order)."""

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []

    def add(self, seq: int) -> bool:
        """False when ``seq`` was seen already (a redelivered record)."""
        rs = self._ranges
        if rs and rs[-1][1] + 1 == seq:
            rs[-1][1] = seq
            return True
        lo, hi = 0, len(rs)
        while lo < hi:
            mid = (lo + hi) // 2
            if rs[mid][0] <= seq:
                lo = mid + 1
            else:
                hi = mid
        i = lo - 1  # the last range starting at or before seq
        if i >= 0 and rs[i][0] <= seq <= rs[i][1]:
            return False
        joins_left = i >= 0 and rs[i][1] + 1 == seq
        joins_right = i + 1 < len(rs) and rs[i + 1][0] - 1 == seq
        if joins_left and joins_right:
            rs[i][1] = rs[i + 1][1]
            del rs[i + 1]
        elif joins_left:
            rs[i][1] = seq
        elif joins_right:
            rs[i + 1][0] = seq
        else:
            rs.insert(i + 1, [seq, seq])
        return True

    def __len__(self) -> int:
        return len(self._ranges)


@dataclass
class Station:
    site: str
    line: str
    station: str
    records: collections.deque[Record]
    state: str = "unknown"
    gateway: str | None = None
    since_us: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"records": 0, "fails": 0, "alerts": 0})

    @property
    def key(self) -> str:
        return f"{self.site}/{self.line}/{self.station}"


_ALERT_FIELDS = (
    "kind",
    "severity",
    "record_id",
    "gateway",
    "seq",
    "site",
    "line",
    "station",
    "part_number",
    "serial",
    "characteristic",
    "judged_value",
    "lsl",
    "usl",
    "unit",
    "limit",
    "rules",
    "message",
    "at",
    "episode",
    "state",
    "baseline_n",
    "baseline_short",
    "reaction_plan",
)
_ACK_DETAIL = re.compile(r"^alert acknowledged(?: \(cause: (.*?); action: (.*?)\))?(?:: (.*))?$", re.DOTALL)


def utc_us(text: Any) -> int | None:
    try:
        return parse_utc_us(str(text))
    except (ValueError, TypeError, IndexError):
        return None


def summarize(r: Record) -> Record:
    """What a station's record list shows of a record."""
    kind = str(r.get("kind"))
    verdict = r.get("verdict")
    if kind == "measurement":
        text = f"{r.get('characteristic')} = {r.get('judged_value')} {r.get('unit') or ''}".strip()
        if r.get("supersedes"):
            text += " (re-measure)"
    elif kind == "part":
        failed = r.get("failed") or []
        missing = r.get("missing") or []
        text = f"part {r.get('verdict')}"
        if failed:
            text += f", failed {' '.join(map(str, failed))}"
        if missing:
            text += f", missing {' '.join(map(str, missing))}"
    elif kind == "refusal":
        verdict = "refused"
        text = str(r.get("reason") or r.get("reason_code") or "refused")
    elif kind == "nonconformance":
        verdict = "nc"
        text = f"nonconformance {r.get('characteristic')} ({r.get('limit')} limit)"
    elif kind == "invalidation":
        text = f"invalidated by {r.get('by')}: {r.get('reason')}"
    elif kind == "disposition":
        text = f"{r.get('decision')} by {r.get('by')}"
    elif kind == "audit":
        text = f"{r.get('event')} by {r.get('by') or 'system'}"
    else:
        text = kind
    return {
        "id": r.get("id"),
        "kind": kind,
        "at": r.get("recorded_at"),
        "seq": r.get("seq"),
        "serial": r.get("serial"),
        "characteristic": r.get("characteristic"),
        "value": r.get("judged_value"),
        "unit": r.get("unit"),
        "verdict": verdict,
        "text": text,
    }


def ack_from_record(r: Record) -> tuple[str, Record] | None:
    """(alert record id, acknowledgement) from an ``alert_ack`` audit record."""
    if r.get("kind") != "audit" or r.get("event") != "alert_ack" or not r.get("subject"):
        return None
    detail = str(r.get("detail") or "")
    m = _ACK_DETAIL.match(detail)
    cause, action, comment = m.groups() if m else (None, None, detail)
    ack = {
        "by": r.get("by"),
        "comment": (comment or "").strip() or None,
        "at": r.get("recorded_at"),
        "record": r.get("id"),
    }
    if cause:
        ack.update(cause=cause, action=action)
    return str(r["subject"]), ack


class LiveState:
    """Alerts, stations and shift counts as the broker tells them; events for the pages."""

    def __init__(self, settings: DashboardSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.zone = ZoneInfo(settings.shift_timezone) if settings.shift_timezone else None
        self.hub = EventHub()
        self._lock = self.hub.cond
        self.alerts: collections.OrderedDict[str, Record] = collections.OrderedDict()
        self.acks: collections.OrderedDict[str, Record] = collections.OrderedDict()
        self.stations: dict[str, Station] = {}
        self.gateways: dict[str, Record] = {}
        self.broker = False
        self.started_us = int(clock() * 1_000_000)
        self.shift = self._shift_now()
        self._seen: dict[str, SeqSet] = {}
        self._alerts_counted: set[str] = set()
        self._dirty: set[str] = set()
        self.malformed = 0
        #: each characteristic's latest points and the limits in force, for its chart
        self.charts = Charts()

    def _shift_now(self) -> Shift:
        return shift_at(dt.datetime.fromtimestamp(self.clock(), dt.UTC), self.settings.shift_starts, self.zone)

    # -- what the broker says ------------------------------------------------------------------
    def count_malformed(self, n: int) -> None:
        """Messages (or record lines) that could not be read: counted, and logged sparingly."""
        with self._lock:
            before, self.malformed = self.malformed, self.malformed + n
        if before.bit_length() != self.malformed.bit_length():  # at 1, 2, 4, 8, ...
            log.warning("dashboard: %d malformed message(s) or record line(s) ignored so far", self.malformed)

    def set_broker(self, connected: bool) -> None:
        with self._lock:
            if self.broker != connected:
                self.broker = connected
                self.hub.emit("broker", {"connected": connected})

    def on_alert(self, body: Record, retained: bool = False) -> None:
        try:
            record_id = str(body["record_id"])
            kind = str(body["kind"])
            site, line, station = str(body["site"]), str(body["line"]), str(body["station"])
        except (KeyError, TypeError):
            self.count_malformed(1)
            return
        episode = str(body.get("episode") or record_id)
        key = f"{episode}:{kind}"
        now_us = int(self.clock() * 1_000_000)
        with self._lock:
            self._roll_shift()
            st = self._station(site, line, station)
            at_us = utc_us(body.get("at"))
            if key not in self._alerts_counted and at_us is not None and self.shift.contains_us(at_us):
                self._alerts_counted.add(key)
                st.counts["alerts"] += 1
                self._dirty.add(st.key)
            known = self.alerts.get(key)
            if known is not None:
                self._update_episode(known, body)
                return
            alert = {k: body.get(k) for k in _ALERT_FIELDS}
            # the episode's alarm is acknowledged on the record that opened it
            alert.update(
                key=key,
                record_id=episode,
                last_record_id=record_id,
                last_seq=body.get("seq"),
                points=1,
                state=body.get("state") or "opened",
                opened_at=body.get("at") if body.get("state") in (None, "opened") else None,
                closed_at=body.get("at") if body.get("state") == "closed" else None,
                station_key=st.key,
                received_at=iso_us(now_us),
                retained=retained,
                ack=self.acks.get(episode),
            )
            self.alerts[key] = alert
            while len(self.alerts) > self.settings.max_alerts:
                self.alerts.popitem(last=False)
            self.hub.emit("alert", alert)

    def _update_episode(self, alert: Record, body: Record) -> None:
        """A further alert of an episode on screen: its latest value, its rules, open or closed."""
        seq = body.get("seq")
        last = alert.get("last_seq")
        if body.get("record_id") == alert.get("last_record_id") or (
            isinstance(seq, int) and isinstance(last, int) and seq <= last
        ):
            return  # redelivered, or the retained copy after a reconnect
        alert.update(last_record_id=body.get("record_id"), last_seq=seq, message=body.get("message"))
        alert["state"] = body.get("state") or alert.get("state")
        if body.get("state") == "closed":
            alert["closed_at"] = body.get("at")  # the value that ended it is not one of its points
        else:
            alert["points"] = int(alert.get("points") or 1) + 1
            alert.update(judged_value=body.get("judged_value"), at=body.get("at"), limit=body.get("limit"))
            alert["rules"] = sorted({*(alert.get("rules") or []), *(body.get("rules") or [])})
            if body.get("baseline_n") is not None:
                alert.update(baseline_n=body.get("baseline_n"), baseline_short=body.get("baseline_short"))
        self.alerts.move_to_end(str(alert["key"]))
        self.hub.emit("alert", alert)

    def on_station_status(self, site: str, line: str, station: str, body: Record) -> None:
        with self._lock:
            st = self._station(site, line, station)
            state = str(body.get("state") or "unknown")
            if state != st.state:
                st.since_us = int(self.clock() * 1_000_000)
            st.state = state
            if body.get("gateway"):
                st.gateway = str(body["gateway"])
            self._dirty.add(st.key)

    def on_gateway_status(self, gateway: str, body: Record) -> None:
        with self._lock:
            previous = self.gateways.get(gateway, {}).get("state")
            self.gateways[gateway] = {
                "state": str(body.get("state") or "unknown"),
                "reason": body.get("reason"),
                "backlog": body.get("backlog"),
                "at_us": body.get("at_us"),
            }
            site, line = body.get("site"), body.get("line")
            names = body.get("stations") or []
            if isinstance(site, str) and isinstance(line, str) and isinstance(names, list):
                for name in names:
                    st = self._station(site, line, str(name))
                    st.gateway = gateway
            now_us = int(self.clock() * 1_000_000)
            for st in self.stations.values():
                if st.gateway == gateway:
                    if previous != self.gateways[gateway]["state"]:
                        st.since_us = now_us
                    self._dirty.add(st.key)

    def on_records(self, site: str, line: str, station: str, records: list[Record]) -> None:
        acks: list[tuple[str, Record]] = []
        with self._lock:
            self._roll_shift()
            st = self._station(site, line, station)
            fresh: list[Record] = []
            touched: set[tuple[str, str]] = set()
            for r in records:
                gateway, seq = r.get("gateway"), r.get("seq")
                seen = self._seen.setdefault(gateway, SeqSet()) if isinstance(gateway, str) else None
                if seen is not None and isinstance(seq, int) and not seen.add(seq):
                    continue  # at-least-once delivery: this one was counted already
                fresh.append(r)
                t_us = utc_us(r.get("recorded_at"))
                if t_us is not None and self.shift.contains_us(t_us):
                    st.counts["records"] += 1
                    if r.get("kind") == "measurement" and r.get("verdict") == "fail":
                        st.counts["fails"] += 1
                charted = self.charts.add(st.key, r)
                if charted is not None:
                    touched.add(charted)
                if r.get("kind") == "audit":
                    found = ack_from_record(r)
                    if found is not None:
                        acks.append(found)
            # a backlog comes hundreds to a message: only the ones the list keeps are summarised
            for r in fresh[-self.settings.records_per_station :]:
                st.records.appendleft(summarize(r))
            self._dirty.add(st.key)
            for record_id, ack in acks:
                self._apply_ack(record_id, ack)
            if touched:
                self.hub.emit("series", [self.charts.describe(k) for k in sorted(touched)])

    def on_ack(self, record_id: str, ack: Record) -> None:
        with self._lock:
            self._apply_ack(record_id, ack)

    def _apply_ack(self, record_id: str, ack: Record) -> None:
        known = self.acks.get(record_id)
        same = known is not None and (known.get("by"), known.get("comment")) == (ack.get("by"), ack.get("comment"))
        if same and known is not None and (known.get("record") or not ack.get("record")):
            return  # nothing new (the audit record may add the id of the acknowledgement record)
        self.acks[record_id] = ack
        self.acks.move_to_end(record_id)
        while len(self.acks) > 10_000:
            self.acks.popitem(last=False)
        touched = False
        for alert in self.alerts.values():
            if alert["record_id"] == record_id:
                alert["ack"] = ack
                touched = True
        if touched:
            self.hub.emit("ack", {"record_id": record_id, "ack": ack})

    # -- time ------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Called a few times a second: shift change, and coalesced station updates."""
        with self._lock:
            self._roll_shift()
            if self._dirty:
                changed = [self._station_dict(self.stations[k]) for k in sorted(self._dirty) if k in self.stations]
                self._dirty.clear()
                if changed:
                    self.hub.emit("stations", changed)

    def _roll_shift(self) -> None:
        if self.clock() < self.shift.end.timestamp():
            return
        self.shift = self._shift_now()
        for st in self.stations.values():
            st.counts = {"records": 0, "fails": 0, "alerts": 0}
            self._dirty.add(st.key)
        self._seen.clear()
        self._alerts_counted.clear()
        self.hub.emit("shift", self._shift_dict())

    def _shift_dict(self) -> Record:
        d = self.shift.as_dict()
        # counts cover the whole shift only if the dashboard was running since it began
        d["counting_since"] = iso_us(max(self.started_us, self.shift.start_us))
        d["timezone"] = self.settings.shift_timezone
        return d

    # -- reading -----------------------------------------------------------------------------------
    def _station(self, site: str, line: str, station: str) -> Station:
        key = f"{site}/{line}/{station}"
        st = self.stations.get(key)
        if st is None:
            st = Station(site, line, station, collections.deque(maxlen=self.settings.records_per_station))
            self.stations[key] = st
            self._dirty.add(key)
        return st

    def effective_state(self, st: Station) -> tuple[str, str | None]:
        gw = self.gateways.get(st.gateway or "")
        if gw is not None and gw["state"] == "offline":
            return "offline", str(gw.get("reason") or f"gateway {st.gateway} is offline")
        if st.state == "unknown" and gw is not None:
            return str(gw["state"]), None
        return st.state, None

    def _station_dict(self, st: Station) -> Record:
        state, reason = self.effective_state(st)
        return {
            "key": st.key,
            "site": st.site,
            "line": st.line,
            "station": st.station,
            "state": state,
            "reason": reason,
            "gateway": st.gateway,
            "since": iso_us(st.since_us) if st.since_us else None,
            "counts": dict(st.counts),
            "records": list(st.records),
        }

    def snapshot(self) -> tuple[int, Record]:
        """The whole state and the event number it is current to, taken atomically."""
        with self._lock:
            self._roll_shift()
            alerts = sorted(self.alerts.values(), key=lambda a: (str(a.get("at") or ""), a.get("seq") or 0))
            return self.hub.seq, {
                "shift": self._shift_dict(),
                "broker": self.broker,
                "stations": [self._station_dict(self.stations[k]) for k in sorted(self.stations)],
                "alerts": list(reversed(alerts)),
            }

    def alert_target(self, record_id: str) -> tuple[Station, Record | None] | None:
        """The station an alert about ``record_id`` came from, and its acknowledgement."""
        with self._lock:
            for alert in reversed(self.alerts.values()):
                if alert["record_id"] == record_id:
                    return self.stations[str(alert["station_key"])], self.acks.get(record_id)
            return None

    def retained_alerts(self) -> list[Record]:
        with self._lock:
            return [dict(a) for a in self.alerts.values() if a.get("retained") and a.get("ack") is None]
