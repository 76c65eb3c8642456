"""What keeps the gateway bounded and loud: the inbox counts readings, the broker link speaks
once per outage with reminders, repeated faults are throttled."""

from __future__ import annotations

import logging
import queue
import threading
from decimal import Decimal

import pytest

from collector.alarms import Throttle
from collector.gateway.inbox import Inbox, readings_in
from collector.mqtt.client import BrokerLink
from drivers.base import DeviceEvent, EventKind, Reading

R = Reading("d", "0", Decimal("1"), "mm", b"1\r", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_inbox_is_bounded_in_readings_not_items() -> None:
    inbox = Inbox(500)
    inbox.put(tuple([R] * 300))
    inbox.put(tuple([R] * 200))
    assert len(inbox) == 500
    with pytest.raises(queue.Full):
        inbox.put(R, timeout=0.01)
    assert inbox.take(250) == [tuple([R] * 300)]  # at least one item, even a heavy one
    inbox.put(R, timeout=0)
    assert [readings_in(i) for i in inbox.take(10_000)] == [200, 1]
    assert inbox.empty()


def test_an_item_larger_than_the_inbox_gets_in_alone() -> None:
    inbox = Inbox(10)
    inbox.put(tuple([R] * 50), timeout=0)  # an empty inbox never refuses
    with pytest.raises(queue.Full):
        inbox.put(DeviceEvent("d", EventKind.CONNECTED, ""), timeout=0)


def test_a_waiting_put_gets_in_when_room_is_made() -> None:
    inbox = Inbox(2)
    inbox.put(R)
    inbox.put(R)
    done = threading.Event()

    def put_then_done() -> None:
        inbox.put(R, timeout=5)
        done.set()

    t = threading.Thread(target=put_then_done)
    t.start()
    assert not done.wait(0.05)
    assert inbox.get(timeout=1) is R
    assert done.wait(5)
    t.join()
    with pytest.raises(queue.Empty):
        Inbox(1).get(timeout=0.01)


def test_the_broker_link_speaks_once_per_outage_and_reminds(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    link = BrokerLink("broker:8883", logging.getLogger("t"), reminder_interval=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        link.up()
        link.lost("keepalive timeout")
        for _ in range(100):  # a failed attempt every ~0.5 s for 50 s
            clock.now += 0.5
            link.down("Connection refused")
        clock.now += 11
        link.down("Connection refused")  # 61 s after the first: a reminder
        clock.now += 5
        link.up()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "connected to broker broker:8883",
        "lost the connection to broker broker:8883 (keepalive timeout)",
        "cannot reach broker broker:8883: Connection refused",
        "still cannot reach broker broker:8883 after 61 s (101 attempts): Connection refused",
        "connected to broker broker:8883 again after 66.0 s",
    ]
    assert link.outages == 1


def test_the_throttle_holds_back_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttle = Throttle(10, clock=clock)
    log = logging.getLogger("t")
    with caplog.at_level(logging.ERROR, logger="t"):
        assert throttle.log(log, logging.ERROR, "k", "lost {n} reading(s)")
        for _ in range(5):
            assert not throttle.log(log, logging.ERROR, "k", "lost {n} reading(s)")
        assert throttle.log(log, logging.ERROR, "other", "other {n}")
        clock.now += 10
        assert throttle.log(log, logging.ERROR, "k", "lost {n} reading(s)")
    assert [r.getMessage() for r in caplog.records] == ["lost 1 reading(s)", "other 1", "lost 6 reading(s)"]
