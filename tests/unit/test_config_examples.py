"""Every shipped example configuration loads: the demo, and each driver's device example."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collector import config as config_mod
from drivers import registry

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
#: shared examples, and those kept beside their driver (drivers/modbus/example.yaml)
DEVICE_EXAMPLES = sorted((CONFIG / "devices").glob("*.yaml")) + sorted((ROOT / "drivers").glob("*/example.yaml"))

SITE = """
gateway: {id: gw-example, site: plant-1, line: line-a}
gauges:
  - {id: GAUGE, type: gauge, calibration_due: 2099-12-31}
plans:
  - part_number: P-1
    revision: A
    characteristics:
      - {id: C1, name: First, nominal: 1.000, lower_tol: -0.1, upper_tol: 0.1, unit: mm, decimals: 3}
"""


def test_demo_configuration_is_valid() -> None:
    cfg = config_mod.load(CONFIG / "demo.yaml")
    assert cfg.gateway is not None and cfg.stations


@pytest.mark.parametrize("path", DEVICE_EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in DEVICE_EXAMPLES])
def test_device_example_is_a_valid_station_device(path: Path) -> None:
    devices = yaml.safe_load(path.read_text(encoding="utf-8"))["devices"]
    assert devices, f"{path.name} has no device entry"
    data = yaml.safe_load(SITE)
    for dev in devices:
        dev = dict(dev)
        dev.pop("gauge", None)  # the example's gauge id is not in this test's register
        dev.pop("characteristics", None)
        dev.pop("channels", None)
        data.setdefault("stations", []).append({"id": f"st-{dev['id']}", "plan": "P-1", "devices": [dev]})
    cfg = config_mod.parse(yaml.safe_dump(data), str(path))
    assert {d.driver_config.driver for st in cfg.stations for d in st.devices} <= set(registry.names())


def test_every_driver_has_an_example() -> None:
    covered = set()
    for path in DEVICE_EXAMPLES:
        covered |= {d["driver"] for d in yaml.safe_load(path.read_text(encoding="utf-8"))["devices"]}
    assert set(registry.names()) <= covered, f"drivers without an example: {set(registry.names()) - covered}"
