"""The dashboard application: its web server, its MQTT client and the live state, in daemon threads.

``collector dashboard --config FILE`` serves a small web application to the quality
supervisors and the control room:

- ``/``: the live page. Out-of-tolerance, trend, calibration and refusal alerts appear the
  moment the gateway publishes them (Server-Sent Events, no reload), newest first and
  coloured by severity; a tile per station says whether it is online (a gateway's last
  will takes all of its stations offline), and counts the records, failed values and
  alerts of the current shift; the last records of each station scroll by. A supervisor
  acknowledges an alert with a comment: the dashboard sends ``ack_alert`` to the station's
  command topic, waits for the gateway's reply, and every open page shows "acknowledged by
  X: comment". The gateway journals the acknowledgement in its hash chain.
- ``/trace``: the same search as ``collector trace`` (serial, lot, work order, part number,
  station, characteristic, gauge, time range), the records as a table, downloads as JSON,
  CSV and Q-DAS DFQ, and the printable part report of a serial.

The dashboard only listens to the broker with a plain, non-shared subscription (it takes
no records away from the recorders) and only reads the store; it never writes to InfluxDB.

Why the standard library's HTTP server: the dashboard runs on a Raspberry-Pi-class box
next to the line or on a small central server, usually for a handful of screens. Shop
floors have no internet, so every asset (CSS, plain JavaScript, icon) is served from
``collector/static/dashboard/`` and every page from ``collector/templates/dashboard/``:
no CDN, no web fonts, no framework and no build step. ``ThreadingHTTPServer`` gives each
connection its own thread, which suits a few long-lived event streams; events are
serialised once and shared by every stream.

The package: :mod:`.auth` (sign-in, sessions, CSRF) and :mod:`.throttle`, :mod:`.shifts`,
:mod:`.live` (the live state and its event hub), :mod:`.records` (the record format and
the evidence tools, the only module that touches them), :mod:`.handlers` (the HTTP routes
and pages), and this module. Bound to a loopback address the server refuses foreign
``Host`` names (DNS rebinding); for access from other machines, put a TLS reverse proxy in
front, list it in ``trusted_proxies`` and set ``secure_cookie`` (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector import forwarded, web
from collector.dashboard import handlers, records
from collector.dashboard.auth import Auth
from collector.dashboard.live import LiveState, utc_us
from collector.dashboard.shifts import iso_us
from collector.errors import StoreError
from collector.inspection.charts import Figures, characteristic_figures
from collector.inspection.spc import RuleSet
from collector.mqtt import client as mqtt_client
from collector.mqtt import topics
from collector.people.accounts import DashboardSettings
from collector.store.base import Store

if TYPE_CHECKING:
    from collector.chain.keys import KeyRing
    from collector.config import Config
    from collector.inspection.models import Characteristic
    from collector.inspection.record_types import Record

log = logging.getLogger(__name__)


@dataclass
class AckResult:
    status: HTTPStatus
    body: Record


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    reply: Record | None = None


class Dashboard(web.WebApp):
    """The web server, its MQTT subscription and the live state, in daemon threads.

    The dashboard owns ``store`` from here on and closes it in :meth:`stop`.
    """

    label = "dashboard"
    logger = log
    thread_name = "dashboard"

    def __init__(
        self,
        config: Config,
        settings: DashboardSettings,
        store: Store,
        *,
        keys: KeyRing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings.bind, settings.port, forwarded.networks(settings.trusted_proxies))
        self.config = config
        self.settings = settings
        self.store = store
        #: the register of gateways: what is read back from the store is verified against it
        self.keys = keys
        self.prefix = config.mqtt.topic_prefix
        self.auth = Auth(settings.users, settings.session_ttl, sleep=self.stopping.wait)
        self.state = LiveState(settings, clock)
        #: the downloads the traceability page offers (format name -> how)
        self.exporters: dict[str, records.ExportFormat] = dict(records.EXPORTS)
        # the site's time zone (the shifts') and the plans' descriptions for the DFQ download
        zone = ZoneInfo(settings.shift_timezone) if settings.shift_timezone else None
        descriptions = {p.part_number: p.description for p in config.plans if p.description}
        self.exporters["dfq"] = records.dfq_export(descriptions, zone)
        self._threads: list[threading.Thread] = []
        self._pending: dict[str, _Pending] = {}
        self._acking: set[str] = set()
        self._pending_lock = threading.Lock()
        self._connected = threading.Event()
        client_id = settings.client_id or f"dashboard-{socket.gethostname()[:20]}-{secrets.token_hex(4)}"
        self.client, self._props = mqtt_client.make_client(config.mqtt, client_id)
        # a plain subscription in a short-lived session: it rides over a reconnect, and a
        # dashboard that is gone leaves nothing queued on the broker for long
        self._props.SessionExpiryInterval = 300
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if keys is None:
            log.warning("dashboard: no register of gateways (recorder.keys): records read back are marked unverified")
        if not settings.users:
            log.warning("dashboard: no users are configured, nobody can sign in")

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def cookie_name(self) -> str:
        # cookies are not separated by port: two dashboards on one host must not share one
        return f"qc_dashboard_{self.port}"

    @property
    def device_cookie_name(self) -> str:
        """The cookie that marks a browser that signed in here before (see :mod:`.throttle`)."""
        return f"qc_dashboard_device_{self.port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if not self.start_server(handlers.DashboardHandler):
            return
        mqtt_client.connect_async(self.client, self.config.mqtt, self._props)
        targets: list[tuple[Callable[[], None], str]] = [
            (self._ticker, "dashboard-ticker"),
            (self._load_acks, "dashboard-acks"),
        ]
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("dashboard on %s/ (broker %s:%s)", self.url, self.config.mqtt.host, self.config.mqtt.port)

    def stop(self) -> None:
        """Stop serving (open event streams end at once), leave the broker, close the store."""
        self.stopping.set()
        self.state.hub.close()
        with self._pending_lock:
            for pending in self._pending.values():
                pending.done.set()
        self.stop_server()
        for thread in self._threads:
            thread.join(web.STOP_JOIN)
        self._threads = []
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        self.store.close()
        log.info("dashboard stopped")

    def _ticker(self) -> None:
        last_prune = time.monotonic()
        while not self.stopping.wait(0.2):
            try:
                self.state.tick()
                if time.monotonic() - last_prune > 60:
                    last_prune = time.monotonic()
                    self.auth.prune()
            except Exception:
                log.exception("dashboard: internal error in the ticker")

    def _load_acks(self) -> None:
        """Acknowledgements, from the store, of the alerts the broker kept from before our start.

        The broker keeps each station's latest alert; a dashboard started later would show
        it as unacknowledged although a supervisor dealt with it yesterday.
        """
        if self.settings.ack_lookback_days <= 0:
            return
        while not self._connected.is_set():
            if self.stopping.wait(0.1):
                return
        if self.stopping.wait(1.0):  # the retained alerts arrive right after subscribing
            return
        self.load_earlier_acks()

    def load_earlier_acks(self) -> None:
        """Look the retained (pre-start) alerts' acknowledgements up in the store."""
        alerts = self.state.retained_alerts()
        times = [t for a in alerts if (t := utc_us(a.get("at"))) is not None]
        if not times:
            return
        floor = int((self.state.clock() - self.settings.ack_lookback_days * 86400) * 1_000_000)
        try:
            for record_id, ack in records.stored_acknowledgements(self.store, max(min(times), floor), self.keys):
                if self.stopping.is_set():
                    return
                self.state.on_ack(record_id, ack)
        except StoreError as exc:
            log.warning("dashboard: could not look up earlier acknowledgements: %s", exc)

    # -- MQTT (paho's network thread) -------------------------------------------------------------
    def _filters(self) -> list[tuple[str, int]]:
        p = self.prefix
        return [
            (f"{p}/+/+/+/alert", 1),
            (f"{p}/+/+/+/status", 1),
            (f"{p}/+/+/+/record", 1),
            (f"{p}/+/+/+/ack/reply", 1),
            (f"{p}/gateways/+/status", 1),
        ]

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if mqtt_client.reason_failed(reason):
            log.error("dashboard: broker %s refused the connection: %s", self.config.mqtt.host, reason)
            return
        client.subscribe(self._filters())
        self._connected.set()
        self.state.set_broker(True)
        log.info("dashboard: connected to broker %s:%s", self.config.mqtt.host, self.config.mqtt.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.state.set_broker(False)
        if was and not self.stopping.is_set():
            log.warning("dashboard: lost the broker connection (%s)", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.handle_message(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception:  # a bad message must never stop paho's thread
            log.exception("dashboard: could not handle a message on %s", msg.topic)

    def handle_message(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One message from the broker (public for tests that feed the state directly)."""
        if not topic.startswith(self.prefix + "/"):
            return
        parts = topic[len(self.prefix) + 1 :].split("/")
        if not payload:
            return  # a retained message being cleared
        if parts[0] == "gateways" and len(parts) == 3 and parts[2] == "status":
            body = _json_object(payload)
            if body is not None:
                self.state.on_gateway_status(parts[1], body)
            return
        if len(parts) == 4:
            site, line, station, kind = parts
            if kind == "record":
                found, bad = records.records_in_message(payload)
                if bad:
                    self.state.count_malformed(bad)
                if found:
                    self.state.on_records(site, line, station, found)
                return
            body = _json_object(payload)
            if body is None:
                self.state.count_malformed(1)
                return
            if kind == "alert":
                body["reaction_plan"] = self.reaction_plan(body.get("part_number"), body.get("characteristic"))
                self.state.on_alert(body, retained)
            elif kind == "status":
                self.state.on_station_status(site, line, station, body)
            return
        if len(parts) == 5 and parts[3] == "ack" and parts[4] == "reply":
            body = _json_object(payload)
            request_id = str(body.get("request_id")) if body else None
            if body is None or request_id is None:
                return
            with self._pending_lock:
                pending = self._pending.get(request_id)
            if pending is not None:
                pending.reply = body
                pending.done.set()

    # -- what the configuration says about a characteristic ------------------------------------------
    def characteristic(self, part_number: Any, characteristic: Any) -> Characteristic | None:
        plan = next((p for p in self.config.plans if p.part_number == part_number), None)
        if plan is None:
            return None
        return next((c for c in plan.characteristics if c.id == characteristic), None)

    def reaction_plan(self, part_number: Any, characteristic: Any) -> Record | None:
        """The causes and actions to choose from when acknowledging an alarm about ``characteristic``."""
        plan = next((p for p in self.config.plans if p.part_number == part_number), None)
        if plan is None or not isinstance(characteristic, str):
            return None
        found = plan.reaction_plan_for(characteristic)
        return None if found is None else {"causes": list(found.causes), "actions": list(found.actions)}

    def figures(self, station_key: str, characteristic: str) -> Figures:
        """The chart, histogram and capability of a characteristic, from the points on hand."""
        points, limits = self.state.charts.data(station_key, characteristic)
        if not points:
            return Figures(None, None, None, "no values of this characteristic yet")
        last = points[-1]
        spec = self.characteristic(last.get("part_number"), characteristic)
        spc = spec.spc if spec is not None else None
        lsl, usl = _float(last.get("lsl")), _float(last.get("usl"))
        target = float(spec.nominal) if spec is not None and spec.nominal is not None else None
        centre = sigma = None
        basis: int | None = None
        if limits is not None:
            centre, sigma, basis = limits["centre"], limits["sigma"], limits["n"]
        elif spc is not None and spc.centre is not None and spc.sigma is not None:
            centre, sigma = float(spc.centre), float(spc.sigma)
        values = [float(p["value"]) for p in points]
        try:
            rules = RuleSet.parse(spc.rules, run_length=spc.run_length) if spc is not None else None
        except ValueError:
            rules = None
        return characteristic_figures(
            values,
            lsl=lsl,
            usl=usl,
            target=target,
            subgroup_size=spc.subgroup_size if spc is not None else None,
            method=spc.subgroup_chart if spc is not None else "r",
            # subgroup charts take their limits from the first subgroups: the gateway's limits are for individuals
            baseline=spc.baseline if spc is not None and (centre is None or spc.subgroup_size) else None,
            centre=centre,
            sigma=sigma,
            limits_from=basis,
            rules=rules,
        )

    # -- commands to a station (acknowledgements, dispositions) --------------------------------------------
    def acknowledge(
        self,
        record_id: str,
        by: str,
        comment: str | None,
        cause: str | None = None,
        action: str | None = None,
    ) -> AckResult:
        """Send ``ack_alert`` to the alert's station and wait for the gateway's answer."""
        found = self.state.alert_target(record_id)
        if found is None:
            return AckResult(HTTPStatus.NOT_FOUND, {"ok": False, "error": "no such alert on this dashboard"})
        station, ack = found
        if ack is not None:
            return AckResult(
                HTTPStatus.CONFLICT,
                {"ok": False, "error": f"already acknowledged by {ack.get('by')}", "ack": ack},
            )
        args: Record = {"record_id": record_id, "by": by}
        for key, value in (("comment", comment), ("cause", cause), ("action", action)):
            if value:
                args[key] = value
        result, reply = self._send(station.site, station.line, station.station, "ack_alert", args, record_id)
        if reply is None:
            return result
        records = reply.get("records") or []
        ack = {
            "by": by,
            "comment": comment,
            "at": iso_us(int(self.state.clock() * 1_000_000)),
            "record": records[0] if records else None,
        }
        if cause:
            ack.update(cause=cause, action=action)
        self.state.on_ack(record_id, ack)
        log.info("dashboard: %s acknowledged the alert about %s at %s", by, record_id, station.key)
        return AckResult(HTTPStatus.OK, {"ok": True, "message": reply.get("message"), "ack": ack})

    def dispose(self, nc: Record, by: str, decision: str, concession: str | None, comment: str | None) -> AckResult:
        """Send ``dispose`` (signed by the dashboard's user) to the nonconformance's station."""
        args: Record = {"nonconformance_id": nc["id"], "decision": decision, "by": by}
        for key, value in (("concession", concession), ("comment", comment)):
            if value:
                args[key] = value
        where = (str(nc["site"]), str(nc["line"]), str(nc["station"]))
        result, reply = self._send(*where, "dispose", args, str(nc["id"]))
        if reply is None:
            return result
        log.info("dashboard: %s decided %s on nonconformance %s", by, decision, nc["id"])
        return AckResult(HTTPStatus.OK, {"ok": True, "message": reply.get("message"), "records": reply.get("records")})

    def _send(
        self, site: str, line: str, station: str, command: str, args: Record, subject: str
    ) -> tuple[AckResult, Record | None]:
        """Publish ``command`` on the station's acknowledgement topic; the gateway's reply when it agreed."""
        if not self.connected:
            return AckResult(
                HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "the broker is not reachable"}
            ), None
        with self._pending_lock:
            if subject in self._acking:
                return AckResult(HTTPStatus.CONFLICT, {"ok": False, "error": "being sent already"}), None
            self._acking.add(subject)
            request_id = uuid.uuid4().hex
            pending = self._pending[request_id] = _Pending()
        try:
            timeout = self.settings.reply_timeout
            # the dashboard's account may publish on the acknowledgement topic only (the ACL)
            topic = topics.station_topic(self.prefix, site, line, station, "ack")
            body = {"command": command, "args": args, "request_id": request_id}
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            # a gateway that is away must not act on a stale command hours later
            props.MessageExpiryInterval = max(1, math.ceil(timeout))
            info = self.client.publish(topic, json.dumps(body).encode(), qos=1, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return AckResult(
                    HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "the broker is not reachable"}
                ), None
            if not pending.done.wait(timeout) or pending.reply is None:
                if self.stopping.is_set():
                    return AckResult(
                        HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": "the dashboard stops"}
                    ), None
                log.warning("dashboard: no answer from station %s/%s/%s to %s", site, line, station, command)
                error = f"station {station} did not answer within {timeout:g} s (its gateway may be offline); not done"
                return AckResult(HTTPStatus.GATEWAY_TIMEOUT, {"ok": False, "error": error}), None
            reply = pending.reply
            if not reply.get("ok"):
                error = str(reply.get("error") or "refused by the gateway")
                return AckResult(HTTPStatus.BAD_GATEWAY, {"ok": False, "error": error}), None
            return AckResult(HTTPStatus.OK, {"ok": True}), reply
        finally:
            with self._pending_lock:
                self._pending.pop(request_id, None)
                self._acking.discard(subject)


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(str(value))
    except ValueError:
        return None


def _json_object(raw: bytes) -> Record | None:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None
