"""Shared helpers for driver tests: a sink that can be waited on, drivers built as the gateway does.

Test modules get these through fixtures; they import names from here only under
TYPE_CHECKING, because several conftest.py files share the module name at run time.
The driver cases of the contract suite are in ``cases.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from drivers import registry
from drivers.base import DeviceEvent, Driver, EventKind, Item, Reading
from simulators.base import PtySimulator

WAIT = 5.0  # generous: a loaded CI box is slow, and a passing wait returns at once


class Collector:
    """A driver sink that records everything and lets a test wait for a condition."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[Reading | DeviceEvent] = []

    def __call__(self, item: Item) -> None:
        with self._cond:
            # one poll cycle's readings arrive as one item: kept one by one, in order
            self.items.extend(item if isinstance(item, tuple) else (item,))
            self._cond.notify_all()

    def snapshot(self) -> list[Reading | DeviceEvent]:
        with self._cond:
            return list(self.items)

    def readings(self) -> list[Reading]:
        return [i for i in self.snapshot() if isinstance(i, Reading)]

    def events(self, kind: EventKind | None = None) -> list[DeviceEvent]:
        return [i for i in self.snapshot() if isinstance(i, DeviceEvent) and (kind is None or i.kind is kind)]

    def wait_for(self, condition: Callable[[Collector], bool], timeout: float = WAIT, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                # the condition calls back into this object; Condition's RLock allows that
                if condition(self):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what or condition}; got {self.items!r}"
                    )
                self._cond.wait(left)

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
        """Poll a condition that has no notification of its own (a thread ending)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
            time.sleep(0.005)

    def wait_readings(self, n: int, timeout: float = WAIT) -> list[Reading]:
        self.wait_for(lambda c: len(c.readings()) >= n, timeout, f"{n} readings")
        return self.readings()

    def wait_events(self, kind: EventKind, n: int = 1, timeout: float = WAIT) -> list[DeviceEvent]:
        self.wait_for(lambda c: len(c.events(kind)) >= n, timeout, f"{n} {kind} events")
        return self.events(kind)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def link_path(tmp_path: Path) -> Path:
    return tmp_path / "dev" / "caliper-1"


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    """Fails the test if threads it started are still alive after its teardown code ran."""
    before = set(threading.enumerate())
    yield
    Collector.wait_until(lambda: not (set(threading.enumerate()) - before), 2.0, "threads to end")


MakeDriver = Callable[..., Driver]
BuildDriver = Callable[..., Driver]
SimT = TypeVar("SimT", bound=PtySimulator)


class PlugSim(Protocol):
    def __call__(self, cls: type[SimT], *args: Any, start: bool = False, **kwargs: Any) -> SimT: ...


@pytest.fixture
def plug_sim(link_path: Path) -> Iterator[PlugSim]:
    """``plug(SimulatorClass, *args, start=False, **kwargs)``: a simulator on ``link_path``
    (started if asked); every one is closed at the end."""
    sims: list[PtySimulator] = []

    def plug(cls: type[SimT], *args: Any, start: bool = False, **kwargs: Any) -> SimT:
        sim = cls(link_path, *args, **kwargs)
        sims.append(sim)
        if start:
            sim.start()
        return sim

    yield plug
    for sim in sims:
        sim.close()


@pytest.fixture
def build_driver(collector: Collector) -> Iterator[BuildDriver]:
    """``build(settings, start=True)``: a driver made through the registry from its complete
    settings (as the gateway does), started on ``collector``; every one is stopped at the end."""
    started: list[Driver] = []

    def build(settings: dict[str, Any], start: bool = True) -> Driver:
        drv = registry.create(registry.parse_config(settings))
        if start:
            drv.start(collector)
            started.append(drv)
        return drv

    yield build
    for drv in started:
        drv.stop()


@pytest.fixture
def make_driver(link_path: Path, build_driver: BuildDriver) -> MakeDriver:
    """``make(driver, start=True, **settings)``: a serial driver on ``link_path``, fast to reconnect."""

    def make(driver: str, start: bool = True, **settings: Any) -> Driver:
        base = {"id": "caliper-1", "driver": driver, "port": str(link_path), "reconnect_min": 0.02}
        return build_driver({**base, "reconnect_max": 0.2, **settings}, start)

    return make
