"""The ``influxdb`` section read alone (``collector trace``), with the errors the full loader gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collector.config_file import InfluxV1Settings, load_store_section
from collector.errors import ConfigError
from collector.testing.services import free_port


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_section_and_the_register_are_read_and_the_rest_is_not_validated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gateway: {this: is not checked here}\n"
        "influxdb: {kind: v1, url: 'http://db:8086', database: q}\n"
        "recorder: {keys: /k}\n",
    )
    influx, keys = load_store_section(path)
    assert isinstance(influx, InfluxV1Settings) and (influx.url, influx.database) == ("http://db:8086", "q")
    assert keys == Path("/k")


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("mqtt: {}\n", "influxdb", "this command needs the influxdb section"),
        ("influxdb:\n  kind: v1\n  timeout: -1\n", "line 3: influxdb.timeout", "greater than 0"),
        ("influxdb: {kind: v1, password: changeme}\n", "line 1: influxdb.password", "placeholder"),
        ("- a list\n", "(top level)", "expected a mapping of sections"),
    ],
)
def test_errors_name_the_file_the_field_and_the_reason(tmp_path: Path, text: str, where: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_store_section(path)
    assert caught.value.file == str(path)
    ((got_where, got_reason),) = caught.value.problems
    assert got_where == where and reason in got_reason


def test_trace_does_not_import_the_whole_configuration(tmp_path: Path) -> None:
    path = write(tmp_path, f"influxdb: {{kind: v1, url: 'http://127.0.0.1:{free_port()}', timeout: 1}}\n")
    probe = (
        "import sys\nfrom collector import cli\n"
        f"code = cli.main(['trace', '--config', {str(path)!r}, '--serial', 'SN-1'])\n"
        "print(code, 'collector.config' in sys.modules, 'collector.inspection.models' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "False", "False"], (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr


def test_the_roles_the_parser_offers_are_the_configurations() -> None:
    from collector import cli, config

    assert sorted(cli.DAEMON_ROLES) == sorted(config.ROLES)
