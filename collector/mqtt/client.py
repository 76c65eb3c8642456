"""The paho client every process builds the same way: MQTT 5, persistent session, TLS, jittered reconnect.

:class:`BrokerLink` is what a daemon says about its broker connection: one line when it
cannot reach the broker (with the reason), a reminder at a bounded interval while that
lasts, one line when it is back. paho's own retry loop says nothing.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.config import MqttSettings

#: how long the broker keeps a disconnected client's session (and queues its messages)
SESSION_EXPIRY_S = 7 * 24 * 3600


class JitterClient(mqtt.Client):
    """paho's client with jittered reconnect back-off.

    paho doubles its reconnect delay but adds no jitter, so after a broker restart every
    gateway of a plant reconnects in the same instant. We keep paho's doubling and wait a
    random 50-100 % of it. The doubling is capped by ``reconnect_max_delay`` (a few seconds
    by default), so a gateway is back within seconds of its broker. The reason of the last
    failed connection attempt is kept in :attr:`last_error` for :class:`BrokerLink`.
    """

    last_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:  # paho retries and tells on_connect_fail, without the reason
            self.last_error = exc
            raise

    def _reconnect_wait(self) -> None:
        with self._reconnect_delay_mutex:
            if self._reconnect_delay is None:
                self._reconnect_delay = self._reconnect_min_delay
            else:
                self._reconnect_delay = min(self._reconnect_delay * 2, self._reconnect_max_delay)
            delay = self._reconnect_delay * random.uniform(0.5, 1.0)
        target = time.monotonic() + delay
        while (
            self._state not in (_ConnectionState.MQTT_CS_DISCONNECTING, _ConnectionState.MQTT_CS_DISCONNECTED)
            and not self._thread_terminate
            and (remaining := target - time.monotonic()) > 0
        ):
            time.sleep(min(remaining, 0.2))


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    receive_maximum: int | None = None,
) -> tuple[mqtt.Client, Properties]:
    """A configured MQTT 5 client with a persistent session; returns it with its CONNECT properties."""
    client = JitterClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password is not None else None
        client.username_pw_set(settings.username, password)
    if settings.tls is not None:
        tls = settings.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)
    client.reconnect_delay_set(settings.reconnect_min_delay, settings.reconnect_max_delay)  # type: ignore[arg-type]
    client.max_inflight_messages_set(settings.max_inflight)
    client.max_queued_messages_set(0)  # our own window bounds what we hand paho
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return client, props


def connect_async(client: mqtt.Client, settings: MqttSettings, props: Properties) -> None:
    """Start connecting in paho's network thread; it retries with back-off until stopped."""
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive,
        clean_start=False,
        properties=props,
    )
    client.loop_start()


def reason_failed(reason_code: Any) -> bool:
    """True for an MQTT 5 reason code that reports a failure (0x80 and above)."""
    is_failure = getattr(reason_code, "is_failure", None)
    if isinstance(is_failure, bool):
        return is_failure
    try:
        return int(reason_code) >= 0x80
    except (TypeError, ValueError):
        return False


def error_text(exc: BaseException | None) -> str:
    """A connection error as people read it ("Connection refused", "timed out")."""
    if exc is None:
        return "connection failed"
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


class BrokerLink:
    """The state of one broker connection, logged once per change and reminded at an interval.

    ``down(reason)`` for every failed attempt or lost connection, ``up()`` on every
    successful connection. The first failure of an outage logs ``cannot reach broker
    HOST:PORT: REASON``; while the outage lasts, a reminder at most every
    ``reminder_interval`` seconds; ``up()`` after an outage logs how long it lasted.
    """

    def __init__(
        self, address: str, logger: logging.Logger, reminder_interval: float = 60.0, clock: Any = time.monotonic
    ) -> None:
        self.address = address
        self.log = logger
        self.reminder_interval = reminder_interval
        self._clock = clock
        self._since: float | None = None
        self._next_reminder = 0.0
        self._failures = 0
        self._said_unreachable = False
        self.outages = 0

    @property
    def connected_since_outage(self) -> bool:
        return self._since is None

    def lost(self, reason: str) -> None:
        """An established connection went away."""
        if self._since is None:
            self._begin()
            self.log.warning("lost the connection to broker %s (%s)", self.address, reason)

    def down(self, reason: str) -> None:
        """A connection attempt failed (refused, unreachable, not authorised)."""
        now = self._clock()
        if self._since is None:
            self._begin()
        self._failures += 1
        if not self._said_unreachable:
            self._said_unreachable = True
            self._next_reminder = now + self.reminder_interval
            self.log.warning("cannot reach broker %s: %s", self.address, reason)
        elif now >= self._next_reminder:
            self._next_reminder = now + self.reminder_interval
            self.log.warning(
                "still cannot reach broker %s after %.0f s (%d attempts): %s",
                self.address,
                now - (self._since or now),
                self._failures,
                reason,
            )

    def up(self, detail: str = "") -> None:
        if self._since is None:
            self.log.info("connected to broker %s%s", self.address, detail)
        else:
            self.log.info(
                "connected to broker %s again after %.1f s%s", self.address, self._clock() - self._since, detail
            )
        self._since = None

    def _begin(self) -> None:
        self._since = self._clock()
        self._failures = 0
        self._said_unreachable = False
        self.outages += 1
