"""Configuration loading and ``collector check-config``: every error names file, field, line and reason."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector import cli
from collector import config as config_mod
from collector.errors import ConfigError
from drivers import registry

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.yaml"
KNOWN_DRIVERS = ", ".join(registry.names())

BASE = """\
gateway:
  id: gw-test-01
  site: plant-1
  line: line-a
  journal: JOURNAL
mqtt:
  host: 127.0.0.1
  port: 1883
influxdb:
  kind: v1
  url: http://127.0.0.1:8086
  database: quality
recorder:
  group: recorders
  keys: keys
gauges:
  - id: CAL-0042
    type: caliper
    calibration_due: 2027-06-30
  - id: MIC-0007
    type: micrometer
    calibration_due: 2026-12-31
plans:
  - part_number: HX-4711
    revision: C
    characteristics:
      - {id: D1, name: Bore, nominal: 12.000, lower_tol: -0.020, upper_tol: 0.020, unit: mm, decimals: 3}
      - {id: L1, name: Length, nominal: 45.00, lower_tol: -0.05, upper_tol: 0.05, unit: mm, decimals: 2}
stations:
  - id: st-10
    plan: HX-4711
    devices:
      - id: caliper-1
        driver: mitutoyo
        gauge: CAL-0042
        port: /dev/null
        baudrate: 9600
  - id: st-20
    plan: HX-4711
    devices:
      - id: mic-1
        driver: mitutoyo
        gauge: MIC-0007
        port: /dev/null
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth - 1]


def drop_section(text: str, name: str) -> str:
    """``text`` without the top-level section ``name`` (its key and its indented lines)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if not line.startswith(" "):
            skipping = line.startswith(f"{name}:")
        if not skipping:
            out.append(line)
    return "".join(out)


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text.replace("JOURNAL", str(tmp_path / "journal.sqlite")), encoding="utf-8")
    return p


def check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = cli.main([*extra, "check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_known_drivers_include_mitutoyo() -> None:
    assert "mitutoyo" in KNOWN_DRIVERS.split(", ")


def test_base_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keys").mkdir()
    code, out, err = check(write(tmp_path, BASE.replace("keys: keys", f"keys: {tmp_path / 'keys'}")), capsys)
    assert code == 0, err
    assert "valid" in out and "2 station(s), 2 device(s), 1 plan(s), 2 gauge(s)" in out


def test_demo_config_is_valid_once_the_demo_made_its_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # its paths are relative: in a fresh directory no demo has run yet
    assert config_mod.load(DEMO).gateway is not None  # the file itself is valid
    # check-config checks what the daemons would: the keys `collector demo` makes are not there yet
    code, _, err = check(DEMO, capsys)
    assert code == 2 and "gateway.signing.key_file: cannot read the signing key" in err
    assert "recorder.keys: key directory var/demo/keys does not exist" in err


def test_check_config_and_the_daemons_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = write(tmp_path, "")
    code, _, err = check(empty, capsys)
    assert code == 2 and "nothing can run with this file" in err
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "keys").mkdir()
    text = BASE.replace("JOURNAL", str(tmp_path / "a-file" / "j.sqlite")).replace(
        "keys: keys", f"keys: {tmp_path}/keys"
    )
    bad = write(tmp_path, text)
    code, _, err = check(bad, capsys)
    assert code == 2 and f"gateway.journal: journal {tmp_path / 'a-file' / 'j.sqlite'}: " in err
    assert "is not a directory" in err and "Traceback" not in err
    assert cli.main(["gateway", "--config", str(bad)]) == 2  # the daemon refuses the same file, the same way
    assert "is not a directory" in capsys.readouterr().err


def test_loaded_values(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, BASE))
    assert cfg.gateway is not None and cfg.gateway.id == "gw-test-01"
    d1 = cfg.plans[0].characteristics[0]
    assert (str(d1.nominal), str(d1.lower_limit), str(d1.upper_limit)) == ("12.000", "11.980", "12.020")
    dev = cfg.stations[0].devices[0]
    assert (dev.id, dev.gauge, dev.driver_config.driver) == ("caliper-1", "CAL-0042", "mitutoyo")
    assert dev.driver_config.baudrate == 9600  # type: ignore[attr-defined]
    assert cfg.plan_for("HX-4711") is cfg.plans[0] and cfg.plan_for("nope") is None
    assert cfg.gauge("MIC-0007") is cfg.gauges[1] and cfg.gauge("nope") is None


# -- errors: file, field path, line, reason ------------------------------------------------
CASES = [
    # (id, old, new, field path, needle for the line, nth occurrence, reason)
    (
        "baudrate",
        "        baudrate: 9600",
        "        baudrate: -5",
        "stations[0].devices[0].baudrate",
        "baudrate: -5",
        1,
        "greater than 0",
    ),
    (
        "unit",
        "unit: mm, decimals: 2}",
        "unit: furlong, decimals: 2}",
        "plans[0].characteristics[1].unit",
        "furlong",
        1,
        "unknown unit 'furlong'",
    ),
    ("port", "  port: 1883", "  port: 70000", "mqtt.port", "port: 70000", 1, "less than or equal to 65535"),
    (
        "typo",
        "  line: line-a",
        "  line: line-a\n  status_intervall: 5",
        "gateway.status_intervall",
        "status_intervall",
        1,
        "unknown field",
    ),
    (
        "driver typo",
        "        port: /dev/null\n        baudrate",
        "        prot: /dev/null\n        baudrate",
        "stations[0].devices[0].prot",
        "prot:",
        1,
        "unknown field",
    ),
    (
        "unknown driver",
        "        driver: mitutoyo\n        gauge: MIC",
        "        driver: mitutoya\n        gauge: MIC",
        "stations[1].devices[0]",
        "- id: mic-1",
        1,
        f"unknown driver 'mitutoya' (known: {KNOWN_DRIVERS})",
    ),
    (
        "no driver",
        "        driver: mitutoyo\n        gauge: MIC",
        "        gauge: MIC",
        "stations[1].devices[0]",
        "- id: mic-1",
        1,
        f"a device needs a driver (one of: {KNOWN_DRIVERS})",
    ),
    (
        "limits",
        "lower_tol: -0.05, upper_tol: 0.05",
        "lower_tol: 0.05, upper_tol: -0.05",
        "plans[0].characteristics[1]",
        "id: L1",
        1,
        "above upper limit",
    ),
    (
        "duplicate characteristic",
        "{id: L1,",
        "{id: D1,",
        "plans[0]",
        "- part_number: HX-4711",
        1,
        "characteristic id 'D1' appears twice",
    ),
    (
        "influx kind",
        "  kind: v1",
        "  kind: v7",
        "influxdb",
        "kind: v7",
        1,
        "does not match any of the expected tags",
    ),
    ("gateway id", "  id: gw-test-01", "  id: gw test 01", "gateway.id", "gw test 01", 1, "should match pattern"),
    (
        "calibration date",
        "calibration_due: 2026-12-31",
        "calibration_due: end of year",
        "gauges[1].calibration_due",
        "end of year",
        1,
        "valid date",
    ),
    (
        "scan pattern",
        "  - id: st-20\n    plan: HX-4711",
        "  - id: st-20\n    plan: HX-4711\n    scan_pattern: '(?P<serial>[A-Z'",
        "stations[1].scan_pattern",
        "scan_pattern",
        1,
        "not a valid regular expression",
    ),
    (
        "serial template",
        "  - id: st-20\n    plan: HX-4711",
        "  - id: st-20\n    plan: HX-4711\n    part: {part_number: HX-4711, serial: 'SN-{m:05d}'}",
        "stations[1].part.serial",
        "SN-{m",
        1,
        "serial template",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "field", "needle", "nth", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_names_file_field_line_and_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    field: str,
    needle: str,
    nth: int,
    reason: str,
) -> None:
    assert BASE.count(old) == 1, old
    text = BASE.replace(old, new)
    path = write(tmp_path, text)
    code, out, err = check(path, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(f"{path}: invalid configuration\n")
    line = line_of(text, needle, nth)
    problem = [ln for ln in err.splitlines() if f": {field}: " in ln]
    assert problem, err
    assert problem[0].startswith(f"{path}: line {line}: {field}: "), err
    assert reason in problem[0], err


def test_every_problem_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.replace("  port: 1883", "  port: 0").replace("        baudrate: 9600", "        baudrate: x")
    code, _, err = check(write(tmp_path, text), capsys)
    assert code == 2
    assert f"line {line_of(text, 'port: 0')}: mqtt.port: " in err
    assert f"line {line_of(text, 'baudrate: x')}: stations[0].devices[0].baudrate: " in err


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.replace("  port: 1883", "  port: [1883")
    path = write(tmp_path, text)
    code, _, err = check(path, capsys)
    assert code == 2
    assert f"{path}: line " in err and ", column " in err and "not valid YAML" in err
    # the parser notices at the next key: never before the broken line
    reported = int(err.split(f"{path}: line ")[1].split(",")[0])
    assert reported >= line_of(text, "port: [1883")


def test_tab_indentation_is_a_yaml_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.replace("  host: 127.0.0.1", "\thost: 127.0.0.1")
    path = write(tmp_path, text)
    code, _, err = check(path, capsys)
    assert code == 2
    assert f"{path}: line {line_of(text, chr(9) + 'host')}, column 1: not valid YAML" in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yaml"
    code, out, err = check(path, capsys)
    assert code == 2
    assert out == ""
    assert f"{path}: (file): No such file or directory" in err


def test_top_level_not_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(write(tmp_path, "- a\n- b\n"), capsys)
    assert code == 2
    assert "expected a mapping of sections" in err


# -- cross references and duplicates (reported at the top level) ---------------------------
@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (
            "    plan: HX-4711\n    devices:\n      - id: mic-1",
            "    plan: HX-9999\n    devices:\n      - id: mic-1",
            "stations[1].plan: no plan for part number 'HX-9999'",
        ),
        (
            "gauge: MIC-0007",
            "gauge: MIC-9999",
            "stations[1].devices[0].gauge: gauge 'MIC-9999' is not in the gauge register",
        ),
        ("  - id: st-20", "  - id: st-10", "station id 'st-10' appears twice"),
        ("  - id: mic-1", "  - id: caliper-1", "device id 'caliper-1' appears twice"),
        ("  - id: MIC-0007", "  - id: CAL-0042", "gauges[1].id: gauge id 'CAL-0042' appears twice"),
    ],
    ids=["missing plan", "missing gauge", "duplicate station", "duplicate device", "duplicate gauge"],
)
def test_reference_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, reason: str) -> None:
    assert BASE.count(old) == 1, old
    text = BASE.replace(old, new)
    if "gauge id" in reason:
        text = text.replace("gauge: MIC-0007", "gauge: CAL-0042")  # no dangling reference besides
    path = write(tmp_path, text)
    code, _, err = check(path, capsys)
    assert code == 2
    assert err.startswith(f"{path}: invalid configuration\n")
    assert reason in err
    assert len(err.strip().splitlines()) == 2  # the heading and exactly this one problem


def test_duplicate_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = BASE.split("plans:\n")[1].split("stations:\n")[0]
    text = BASE.replace("stations:\n", plan + "stations:\n", 1)
    code, _, err = check(write(tmp_path, text), capsys)
    assert code == 2
    assert "plans[1].part_number: part number 'HX-4711' has a plan already" in err


@pytest.mark.parametrize(
    ("old", "new", "field", "needle"),
    [
        (
            "    plan: HX-4711\n    devices:\n      - id: mic-1",
            "    plan: HX-9999\n    devices:\n      - id: mic-1",
            "stations[1].plan",
            "plan: HX-9999",
        ),
        ("gauge: MIC-0007", "gauge: MIC-9999", "stations[1].devices[0].gauge", "gauge: MIC-9999"),
    ],
    ids=["missing plan", "missing gauge"],
)
def test_reference_errors_name_field_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, field: str, needle: str
) -> None:
    text = BASE.replace(old, new)
    path = write(tmp_path, text)
    code, _, err = check(path, capsys)
    assert code == 2
    assert f"{path}: line {line_of(text, needle)}: {field}: " in err, err


# -- secrets ------------------------------------------------------------------------------
SECRET_PW = "pw-Zq8!x-mqtt"
SECRET_TOKEN = "tok-Vv3#y-influx"
SECRET_KEY = "key-Hh5%w-signing"

SECRETS_YAML = """\
gateway:
  id: gw-1
  site: plant-1
  line: line-a
  journal: JOURNAL
  signing_key: {file: KEYFILE}
mqtt:
  username: gw
  password: {env: TEST_COLLECTOR_MQTT_PW}
influxdb:
  kind: v2
  url: http://127.0.0.1:8086
  token: TOKEN
  org: acme
  bucket: quality
"""


def secrets_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_COLLECTOR_MQTT_PW", SECRET_PW)
    keyfile = tmp_path / "signing.key"
    keyfile.write_text(SECRET_KEY + "\n", encoding="utf-8")
    text = SECRETS_YAML.replace("KEYFILE", str(keyfile)).replace("TOKEN", SECRET_TOKEN)
    return write(tmp_path, text)


def assert_no_secret(text: str) -> None:
    for secret in (SECRET_PW, SECRET_TOKEN, SECRET_KEY):
        assert secret not in text


def test_secrets_resolve_from_env_file_and_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_mod.load(secrets_config(tmp_path, monkeypatch))
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == SECRET_PW
    assert cfg.gateway is not None and cfg.gateway.signing_key is not None
    assert cfg.gateway.signing_key.get_secret_value() == SECRET_KEY  # trailing newline stripped
    assert cfg.influxdb is not None and cfg.influxdb.kind == "v2"
    assert cfg.influxdb.token.get_secret_value() == SECRET_TOKEN


def test_secrets_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_mod.load(secrets_config(tmp_path, monkeypatch))
    for text in (str(cfg), repr(cfg), cfg.model_dump_json(), str(cfg.model_dump()), repr(cfg.mqtt), str(cfg.gateway)):
        assert_no_secret(text)
    assert "**********" in cfg.model_dump_json()


def test_secrets_not_in_check_config_output_or_logs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = secrets_config(tmp_path, monkeypatch)
    caplog.set_level(logging.DEBUG)
    code, out, err = check(path, capsys, "-v")
    assert code == 0, err
    assert "valid" in out
    assert_no_secret(out + err + caplog.text)


def test_secrets_not_in_verbose_check_config_process_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through a real process, where logging goes to the real stderr."""
    path = secrets_config(tmp_path, monkeypatch)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "collector.cli", "-v", "check-config", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: valid" in proc.stdout
    assert_no_secret(proc.stdout + proc.stderr)


def test_missing_env_var_names_the_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "TEST_COLLECTOR_SURELY_UNSET_VARIABLE"
    assert name not in os.environ
    text = BASE.replace("  port: 1883", f"  port: 1883\n  password: {{env: {name}}}")
    path = write(tmp_path, text)
    code, _, err = check(path, capsys)
    assert code == 2
    assert f"{path}: line {line_of(text, name)}: mqtt.password: environment variable {name} is not set" in err


def test_missing_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such.key"
    text = BASE.replace("  line: line-a", f"  line: line-a\n  signing_key: {{file: {missing}}}")
    code, _, err = check(write(tmp_path, text), capsys)
    assert code == 2
    assert f"gateway.signing_key: cannot read secret file {missing}" in err


def test_secret_of_unknown_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.replace("  port: 1883", "  port: 1883\n  password: {vault: x}")
    code, _, err = check(write(tmp_path, text), capsys)
    assert code == 2
    assert "mqtt.password: a secret is a string, {env: NAME} or {file: PATH}" in err


def test_config_error_object() -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.parse("mqtt:\n  port: nope\n", "inline.yaml")
    assert info.value.file == "inline.yaml"
    assert info.value.problems[0][0] == "line 2: mqtt.port"


# -- the daemons refuse an invalid configuration before starting anything ------------------
INVALID = BASE.replace("  port: 1883", "  port: 0")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", ["gateway", "recorder"])
def test_daemon_refuses_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    path = write(tmp_path, INVALID)
    code = cli.main([command, "--config", str(path)])
    _out, err = capsys.readouterr()
    assert code == 2
    assert f"{path}: line {line_of(INVALID, 'port: 0')}: mqtt.port: " in err
    assert not (tmp_path / "journal.sqlite").exists()  # nothing was opened


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("command", "drop", "missing"),
    [("gateway", "gateway", "gateway"), ("recorder", "influxdb", "influxdb"), ("recorder", "recorder", "recorder")],
)
def test_daemon_refuses_config_without_its_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, drop: str, missing: str
) -> None:
    text = drop_section(BASE, drop)
    assert f"\n{drop}:" not in "\n" + text and "stations:" in text
    path = write(tmp_path, text)
    code = cli.main([command, "--config", str(path)])
    _, err = capsys.readouterr()
    assert code == 2
    assert f"{path}: {missing}: section is required" in err
    assert not (tmp_path / "journal.sqlite").exists()
