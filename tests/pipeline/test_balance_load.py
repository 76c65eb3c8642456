"""An on-demand balance is weighed only once a part is on it: a real gateway asks the MT-SICS
simulator (on a pty) for the weight when W1 is next; an empty pan answers 0.00 g, which is
no load: neither judged nor recorded, and the gateway asks again until the part is there."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from collector import config as config_mod
from collector.gateway.daemon import Gateway
from collector.testing.services import InfluxD, Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from simulators.mt_sics import MtSicsSimulator
from simulators.mt_sics import Scenario as ScaleScenario
from tests.helpers import wait_for
from tests.pipeline.conftest import build_config, write_config
from tests.pipeline.test_operator_view import measurements
from tests.pipeline.test_stations import stations_config


def test_an_empty_pan_is_asked_again_and_only_the_loaded_weight_is_judged(
    tmp_path: Path, broker: Mosquitto, influxd: InfluxD, database: str, topic_prefix: str
) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    data = stations_config(tmp_path, 1, build_config(tmp_path, broker, influxd, database, topic_prefix))
    station = data["stations"][0]  # the manual station: caliper (D1, L1) and balance (W1)
    station["part"] = {"part_number": "HX-4711", "serial": "SN-{n:03d}", "operator": "op-42"}
    station["devices"] = [d for d in station["devices"] if d["id"] in ("caliper-1", "scale-1")]
    (scale_cfg,) = [d for d in station["devices"] if d["id"] == "scale-1"]
    scale_cfg["min_load"] = 5.0
    data["stations"] = [station]
    cfg = config_mod.load(write_config(tmp_path, data))
    caliper = MitutoyoSimulator(dev / "caliper-1")
    scale = MtSicsSimulator(dev / "scale-1", ScaleScenario(nominal=Decimal("0.00"), capacity=Decimal("620.00")))
    scale.start()
    scale.load(Decimal("0.02"))  # the empty pan's drift, as the issue saw it
    gateway = Gateway(cfg)
    gateway.start()
    try:
        for name in ("caliper-1", "scale-1"):
            event = f"{name}:connected"
            wait_for(lambda: gateway.stats.device_events.get(event), timeout=15, what=f"{name} up")  # noqa: B023 - waited for in this iteration
        caliper.send_value(Decimal("12.004"))
        caliper.send_value(Decimal("45.02"))
        # W1 is next: the gateway asks, the empty pan answers, and it asks again a second later
        wait_for(lambda: len(scale.sent_weights) >= 2, timeout=10, what="the balance asked twice")
        assert all(value == Decimal("0.02") for _, value in scale.sent_weights)
        assert [m["characteristic"] for m in measurements(gateway)] == ["D1", "L1"]  # nothing judged for W1
        refusals = [r for b, _ in gateway.journal.iter_blocks() for r in b.materialise() if r["kind"] == "refusal"]
        assert refusals == []  # an empty pan polled is no reading of the part: not recorded
        scale.load(Decimal("245.30"))  # the part is put on the pan
        wait_for(lambda: len(measurements(gateway)) == 3, timeout=10, what="the loaded weight judged")
        w1 = measurements(gateway)[-1]
    finally:
        gateway.stop()
        for sim in (caliper, scale):
            sim.close()
    assert (w1["characteristic"], w1["judged_value"], w1["verdict"]) == ("W1", "245.3", "pass")
    assert gateway.stats.by_kind["nonconformance"] == 0 and gateway.stats.by_kind["part"] == 1
