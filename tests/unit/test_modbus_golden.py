"""Golden cases for Modbus: the bytes a master must send, the bytes it gets back, the readings.

Every ``*.yaml`` under ``tests/golden/modbus/`` is one case; adding one needs no code. A
script plays the slave on a real pty (RTU, ASCII) or TCP socket: it checks each request the
driver sends byte for byte, then answers with the case's bytes. The driver runs as in a
gateway (its own thread, its link, its retries); what it delivers until it sends the request
after the last exchange is compared with ``expect``. Format::

    description: why this case exists                      # required
    spec: the sections of the specification it follows    # required
    config: {transport: rtu, slaves: [...]}                 # driver settings (id, driver, port filled in)
    exchanges:                                              # in order
      - request: "11 03 00 6B 00 03 76 87"                  # hex, what the driver must send
        response: "11 03 06 02 2B 00 00 00 64 ..."          # hex; "" = silence; a list = separate writes
        delay: 0.3                                          # optional: seconds before answering
    expect:                                                 # in order; nothing else may be delivered
      - reading: {channel: r107, value: "555", raw: "02 2B"}
      - bad_frame: {detail: "CRC error", raw: "..."}        # detail: a substring
      - timeout: {detail: "no response"}
    counters: {crc_errors: 1}                               # optional: the driver's counters after the run

ASCII frames are written as text (``response_text``/``request_text``) instead of hex.
``connected`` events and overruns (timing, not protocol) are not compared.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import tty
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers import registry
from drivers.base import DeviceEvent, EventKind, Item, Reading

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "modbus"
CASE_KEYS = {"description", "spec", "config", "exchanges", "expect", "counters"}
EXCHANGE_KEYS = {"request", "response", "request_text", "response_text", "delay"}
READING_KEYS = {"channel", "value", "unit", "raw", "status", "error", "text"}
EVENT_KINDS = {"bad_frame": EventKind.BAD_FRAME, "timeout": EventKind.TIMEOUT}


def _cases() -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in sorted(GOLDEN.glob("*.yaml"))]


def _bytes(exchange: dict[str, Any], key: str) -> list[bytes]:
    """The exchange's request or response as the chunks to write (hex, or text for ASCII)."""
    if f"{key}_text" in exchange:
        value = exchange[f"{key}_text"]
        texts = value if isinstance(value, list) else [value]
        return [t.encode("ascii") for t in texts]
    value = exchange.get(key, "")
    hexes = value if isinstance(value, list) else [value]
    return [bytes.fromhex(x) for x in hexes]


class _Peer:
    """Both ends of the script's line: ``read_exactly`` what the driver sent, ``write`` answers."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.settings: dict[str, Any]
        self._conn: socket.socket | None = None
        if transport == "tcp":
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.settings = {"host": "127.0.0.1", "port": self._listener.getsockname()[1]}
        else:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            # Linux ptys refuse parity settings: the cases run 8N1 like every pty test
            self.settings = {"serial_port": os.ttyname(self._slave), "parity": "N"}

    def _fd(self, deadline: float) -> int:
        if self.transport != "tcp":
            return self._master
        if self._conn is None:
            self._listener.settimeout(max(deadline - time.monotonic(), 0.01))
            self._conn, _ = self._listener.accept()
        return self._conn.fileno()

    def read_exactly(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        fd = self._fd(deadline)
        got = b""
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, n - len(got))
            if not chunk:
                break
            got += chunk
        return got

    def write(self, data: bytes) -> None:
        fd = self._fd(time.monotonic() + 1)
        os.write(fd, data)

    def close(self) -> None:
        if self.transport == "tcp":
            if self._conn is not None:
                self._conn.close()
            self._listener.close()
        else:
            os.close(self._master)
            os.close(self._slave)


def _play(peer: _Peer, exchanges: list[dict[str, Any]], problems: list[str], done: threading.Event) -> None:
    try:
        for i, exchange in enumerate(exchanges):
            assert not set(exchange) - EXCHANGE_KEYS, f"exchanges[{i}]: unknown keys {set(exchange) - EXCHANGE_KEYS}"
            want = b"".join(_bytes(exchange, "request"))
            got = peer.read_exactly(len(want), 5.0)
            if got != want:
                problems.append(f"exchanges[{i}]: the driver sent {got.hex(' ')}, expected {want.hex(' ')}")
                return
            if exchange.get("delay"):
                time.sleep(float(exchange["delay"]))
            for chunk in _bytes(exchange, "response"):
                peer.write(chunk)
                time.sleep(0.002)
        # the driver has handled the last answer once it sends its next request
        if not peer.read_exactly(1, 5.0):
            problems.append("the driver sent nothing after the last exchange")
    except Exception as exc:
        problems.append(f"script failed: {exc!r}")
    finally:
        done.set()


def _describe(item: Reading | DeviceEvent) -> str:
    if isinstance(item, Reading):
        return f"reading {item.channel}={item.value} text={item.text!r} raw={item.raw.hex(' ')}"
    return f"{item.kind} {item.detail!r} raw={item.raw.hex(' ')}"


@pytest.fixture
def peers() -> Iterator[list[_Peer]]:
    made: list[_Peer] = []
    yield made
    for peer in made:
        peer.close()


@pytest.mark.parametrize("path", _cases())
def test_golden(path: Path, peers: list[_Peer]) -> None:
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict) and not set(case) - CASE_KEYS, f"{path}: keys {sorted(case)}"
    assert case.get("description") and case.get("spec"), f"{path}: say why the case exists and what it follows"
    config = dict(case.get("config") or {})
    transport = config.setdefault("transport", "rtu")
    peer = _Peer(transport)
    peers.append(peer)
    settings = {
        "id": "golden",
        "driver": "modbus",
        "timeout": 0.2,
        "backoff_min": 30,
        "backoff_max": 60,
        **peer.settings,
        **config,
    }
    driver = registry.create(registry.parse_config(settings))
    items: list[Reading | DeviceEvent] = []
    lock = threading.Lock()

    def sink(item: Item) -> None:
        with lock:
            items.extend(item if isinstance(item, tuple) else (item,))

    problems: list[str] = []
    done = threading.Event()
    script = threading.Thread(target=_play, args=(peer, case["exchanges"], problems, done), name="golden-script")
    script.start()
    driver.start(sink)
    try:
        assert done.wait(15), f"{path}: the script did not finish"
        counters = driver.counters()  # the driver now waits for the answer to the request after the script
        with lock:
            delivered = [
                i
                for i in items
                if isinstance(i, Reading) or (i.kind is not EventKind.CONNECTED and not i.detail.startswith("overrun:"))
            ]
    finally:
        driver.stop()
        script.join(10)
    assert not problems, f"{path}: {problems}"
    expected = case.get("expect") or []
    got = [_describe(i) for i in delivered]
    assert len(delivered) == len(expected), f"{path}: expected {len(expected)} items, got {got}"
    for n, (want, item) in enumerate(zip(expected, delivered, strict=True)):
        where = f"{path}: expect[{n}] ({_describe(item)})"
        ((kind, fields),) = want.items()
        fields = fields or {}
        if kind == "reading":
            assert not set(fields) - READING_KEYS, f"{where}: unknown keys"
            assert isinstance(item, Reading), where
            for key in ("channel", "unit", "error", "text"):
                if key in fields:
                    assert getattr(item, key) == fields[key], f"{where}: {key}"
            if "value" in fields:
                want_value = None if fields["value"] is None else str(fields["value"])
                assert (None if item.value is None else str(item.value)) == want_value, f"{where}: value"
                if want_value is not None:
                    assert item.value == Decimal(want_value)
            assert str(item.status) == fields.get("status", "ok"), f"{where}: status"
            if "raw" in fields:
                assert item.raw == bytes.fromhex(fields["raw"]), f"{where}: raw"
        else:
            assert kind in EVENT_KINDS, f"{where}: unknown expectation {kind!r}"
            assert isinstance(item, DeviceEvent) and item.kind is EVENT_KINDS[kind], where
            if "detail" in fields:
                assert str(fields["detail"]) in item.detail, f"{where}: detail"
            if "raw" in fields:
                assert item.raw == bytes.fromhex(fields["raw"]), f"{where}: raw"
    for name, value in (case.get("counters") or {}).items():
        assert counters[name] == value, f"{path}: counter {name} is {counters[name]}, expected {value}"


def test_golden_cases_exist() -> None:
    assert len(_cases()) >= 8
