"""Station behaviours the shop floor relies on: who may measure, what is plausible, an empty
balance, and a new part starting blank on the screen."""

from __future__ import annotations

from decimal import Decimal

import pytest

from collector import config as config_mod
from collector.errors import ConfigError
from collector.inspection.station import Station
from drivers.base import Reading
from tests.unit.test_station import LENIENT, TODAY, reading, record, refusal

D = Decimal

CONFIG = r"""
gauges:
  - {id: CAL-0042, type: caliper, calibration_due: 2027-06-30}
  - {id: BAL-0007, type: balance, calibration_due: 2027-06-30}
plans:
  - part_number: HX-4711
    revision: C
    characteristics:
      - {id: D1, name: Bore, nominal: 12.000, lower_tol: -0.020, upper_tol: 0.020, unit: mm, decimals: 3,
         plausible_min: 10.0, plausible_max: 14.0}
      - {id: W1, name: Mass, nominal: 245.0, lower_tol: -1.5, upper_tol: 1.5, unit: g, decimals: 1}
stations:
  - id: st-10
    plan: HX-4711
    part: null
    scan_pattern: 'B:(?P<operator>op-\d+)|(?P<part_number>HX-\d{4})\|(?P<serial>HX\d{6})'
    devices:
      - {id: caliper-1, driver: mitutoyo, gauge: CAL-0042, characteristics: [D1], port: /dev/null}
      - {id: scale-1, driver: mt-sics, gauge: BAL-0007, characteristics: [W1], ask_when_next: true,
         min_load: 5.0, port: /dev/null, mode: request, command: S, poll_interval: null}
"""


def station(text: str = CONFIG) -> Station:
    cfg = config_mod.parse(text, "floor.yaml")
    return Station(
        cfg.stations[0],
        {p.part_number: p for p in cfg.plans},
        {g.id: g for g in cfg.gauges},
        site="plant-1",
        line="line-a",
        calibration=LENIENT,
        today=lambda: TODAY,
    )


def ready(s: Station, serial: str = "HX000123") -> None:
    s.scan("B:op-42")
    s.scan(f"HX-4711|{serial}")


def weight(value: str) -> Reading:
    return reading(value, device="scale-1", unit="g")


def test_require_operator_is_the_default_and_a_reading_without_one_is_refused_and_recorded() -> None:
    s = station()
    assert s.settings.require_operator is True
    s.scan("HX-4711|HX000123")  # a trusted scanner at the station; nobody signed in
    out = s.handle(reading("12.001"))
    assert refusal(out).reason_code == "no_operator"
    assert [d["kind"] for d in out.drafts] == ["refusal"]  # recorded, not judged


def test_sign_out_ends_the_part_and_the_next_reading_is_refused() -> None:
    s = station()
    ready(s)
    record(s.handle(reading("12.001")))
    out = s.sign_out(by="op-42")
    (part,) = [d for d in out.drafts if d["kind"] == "part"]
    assert (part["verdict"], part["serial"], part["missing"]) == ("incomplete", "HX000123", ["W1"])
    assert refusal(s.handle(weight("245.0"))).reason_code == "no_operator"


def test_a_value_outside_the_plausible_range_is_refused_as_implausible_not_judged() -> None:
    s = station()
    ready(s)
    out = s.handle(reading("1.204"))  # a dropped digit: far below anything a bore of 12 mm can be
    r = refusal(out)
    assert r.reason_code == "implausible"
    assert "outside 10.0 … 14.0" in r.reason
    assert [d["kind"] for d in out.drafts] == ["refusal"]  # no measurement, no nonconformance
    assert s.next_characteristic == "D1"  # still to be measured
    assert record(s.handle(reading("11.970")))["verdict"] == "fail"  # implausible is not out of tolerance


def test_plausible_range_must_contain_the_tolerance() -> None:
    with pytest.raises(ConfigError, match="plausible range must contain the tolerance"):
        station(CONFIG.replace("plausible_min: 10.0", "plausible_min: 11.99"))


def test_an_empty_balance_is_no_load_neither_judged_nor_recorded_and_a_loaded_one_is_judged() -> None:
    s = station()
    ready(s)
    record(s.handle(reading("12.001")))
    assert s.next_characteristic == "W1"
    out = s.handle(weight("0.02"))  # asked before the part was on the pan
    assert refusal(out).reason_code == "no_load"
    assert out.drafts == []  # the gateway's poll of an empty pan is no reading of the part
    assert s.next_characteristic == "W1"
    m = record(s.handle(weight("245.3")))
    assert (m["characteristic"], m["verdict"]) == ("W1", "pass")


def test_a_new_part_label_starts_a_blank_plan_on_the_screen() -> None:
    s = station()
    ready(s)
    record(s.handle(reading("12.030")))
    s.handle(weight("245.0"))
    finished = s.view()  # the finished part stays on the screen while the next label is awaited
    assert finished["awaiting_label"] is True
    assert {c["characteristic"]: c["verdict"] for c in finished["plan"]} == {"D1": "fail", "W1": "pass"}
    s.scan("HX-4711|HX000124")
    fresh = s.view()
    assert fresh["serial"] == "HX000124"
    assert [c["verdict"] for c in fresh["plan"]] == [None, None]
