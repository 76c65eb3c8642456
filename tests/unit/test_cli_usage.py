"""The command line as people meet it: help on every option, one set of flag names, clean errors."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pytest

from collector import cli
from collector.testing.services import free_port


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_of_every_command_says_what_it_does() -> None:
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in subcommands().items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, missing


def test_time_ranges_are_from_and_to_everywhere() -> None:
    for name in ("trace", "verify", "impact"):
        flags = {s for a in subcommands()[name]._actions for s in a.option_strings}
        assert {"--from", "--to"} <= flags, name
    # the older spellings still work
    args = cli.build_parser().parse_args(["impact", "--config", "c", "--gauge", "G", "--since", "2026-01-01"])
    assert args.since == "2026-01-01"
    args = cli.build_parser().parse_args(["verify", "--config", "c", "--station", "a", "--stations", "b"])
    assert args.station_set == ["a", "b"]


def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"influxdb: {{kind: v1, url: 'http://127.0.0.1:{free_port()}', timeout: 1}}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trace", "--serial", "S", "--from", "yesterday"], "--from/--to: not a date or an RFC 3339 time"),
        (["trace", "--serial", "S", "--format", "csv", "--out", "/nonexistent/dir/x.csv"], "--out: directory"),
        (["report", "--serial", "S", "--out", "/nonexistent/dir/x.html"], "--out: directory /nonexistent/dir"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = cli.main([argv[0], "--config", str(config(tmp_path)), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_hash_password_with_no_input_is_a_clean_refusal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main(["hash-password", "--stdin"]) == 2
    assert "empty password" in capsys.readouterr().err

    def closed(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", closed)
    assert cli.main(["hash-password"]) == 2
    assert "no password given" in capsys.readouterr().err
