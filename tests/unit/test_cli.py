"""The ``collector`` command line: the same flags everywhere, help on every option, and a
mistake answered in one line on stderr with exit 2 (never a traceback).

The mistakes are made against a configuration whose InfluxDB nobody listens on: each one
must be caught before the store is asked anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector import cli

NOBODY = "influxdb: {kind: v1, url: 'http://127.0.0.1:9', database: qc}\n"  # port 9: discard, nothing answers


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(NOBODY)
    return str(path)


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command; it must exit 2 with exactly one line on stderr and nothing on stdout."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert out == ""
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_trace_from_yesterday_is_one_clear_line(capsys: pytest.CaptureFixture[str], config: str) -> None:
    line = one_line_error(capsys, ["trace", "--config", config, "--from", "yesterday"])
    assert line.startswith("collector trace: argument --from: 'yesterday' is not a date or an RFC 3339 time")


def test_report_into_a_missing_folder_is_refused_before_anything_is_read(
    capsys: pytest.CaptureFixture[str], config: str, tmp_path: Path
) -> None:
    out = tmp_path / "missing" / "dir" / "x.html"
    line = one_line_error(capsys, ["report", "--config", config, "--serial", "SN-1", "--out", str(out)])
    assert line == f"collector report: --out: the folder of {out} does not exist"


def test_trace_out_is_for_dfq_only_and_says_so(capsys: pytest.CaptureFixture[str], config: str, tmp_path: Path) -> None:
    for fmt in ("csv", "json"):
        line = one_line_error(
            capsys, ["trace", "--config", config, "--serial", "SN-1", "--format", fmt, "--out", str(tmp_path)]
        )
        assert line == f"collector trace: --out: is a directory for --format dfq; {fmt} goes to standard output"
    assert list(tmp_path.iterdir()) == [Path(config)]  # nothing written


def test_trace_without_a_filter_and_impact_without_a_start(capsys: pytest.CaptureFixture[str], config: str) -> None:
    assert one_line_error(capsys, ["trace", "--config", config]).startswith("collector trace: filter: give at least")
    line = one_line_error(capsys, ["impact", "--config", config, "--gauge", "G-1"])
    assert line == "collector impact: --from: give the date the gauge is suspect from"


def test_an_unknown_time_zone_is_refused(capsys: pytest.CaptureFixture[str], config: str) -> None:
    line = one_line_error(
        capsys, ["trace", "--config", config, "--serial", "x", "--format", "dfq", "--time-zone", "Mars/Base"]
    )
    assert "unknown time zone 'Mars/Base'" in line


def test_hash_password_with_empty_input_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert one_line_error(capsys, ["hash-password", "--stdin"]) == "an empty password cannot be used"


def test_hash_password_without_a_terminal_and_no_input_is_a_clean_error(tmp_path: Path) -> None:
    # no controlling terminal (a new session) and stdin at its end: getpass meets EOF at once
    exe = Path(sys.executable).with_name("collector")
    done = subprocess.run(
        [str(exe), "hash-password"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "no password given (the input ended)"
    assert done.stdout == ""


def parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def help_of(command: str) -> str:
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = sub.choices[command]
    return parser.format_help()


def test_from_and_to_are_the_same_in_every_command_with_the_old_names_kept_hidden() -> None:
    for command in (["trace", "--serial", "x"], ["verify"], ["impact", "--gauge", "G"]):
        args = parse([command[0], "--config", "c.yaml", *command[1:], "--from", "2026-11-01", "--to", "2026-11-02"])
        assert (args.start, args.end) == ("2026-11-01", "2026-11-02"), command
    old = parse(["impact", "--config", "c.yaml", "--gauge", "G", "--since", "2026-11-01", "--until", "2026-11-02"])
    assert (old.start, old.end) == ("2026-11-01", "2026-11-02")
    helptext = help_of("impact")
    assert "--from" in helptext and "--since" not in helptext and "--until" not in helptext


def test_verify_has_one_station_option_repeatable_and_the_old_name_hidden() -> None:
    args = parse(["verify", "--config", "c.yaml", "--station", "st-10", "--station", "st-20", "--stations", "st-30"])
    assert args.station == ["st-10", "st-20", "st-30"]
    helptext = help_of("verify")
    assert "--station STATION" in helptext and "--stations" not in helptext
    with pytest.raises(SystemExit) as exc:  # verify's scope is a period and gateways, not a serial
        parse(["verify", "--config", "c.yaml", "--serial", "SN-1"])
    assert exc.value.code == 2


def test_dfq_time_zone_defaults_to_this_machines_and_takes_a_name() -> None:
    args = parse(["trace", "--config", "c.yaml", "--serial", "x", "--time-zone", "Europe/Berlin"])
    assert args.time_zone == ZoneInfo("Europe/Berlin")
    local = parse(["trace", "--config", "c.yaml", "--serial", "x"]).time_zone
    now = dt.datetime.now(dt.UTC)
    assert now.astimezone(local).utcoffset() == now.astimezone().utcoffset()


def test_every_option_of_every_command_has_help_text() -> None:
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    assert action.choices, name
                    walk(subparser, sub)
            elif action.help is None:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(cli.build_parser(), "collector")
    assert missing == []
