"""Golden invalid configurations: every folder of ``tests/golden/invalid-config/`` is one case.

``collector check-config config.yaml``, run in the case's folder, must exit 2 and print
exactly ``expected-error.txt`` on stderr (file, line, field path, reason), nothing on stdout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import cli
from collector import config as config_mod
from collector.cli import EXIT_CONFIG

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "invalid-config"
CASES = sorted(p for p in GOLDEN.iterdir() if p.is_dir())


def test_the_cases_are_there_and_change_a_valid_base() -> None:
    assert len(CASES) >= 13
    assert config_mod.load(GOLDEN / "base.yaml").stations  # valid: what each case breaks is its change
    for case in CASES:
        assert {p.name for p in case.iterdir()} == {"config.yaml", "expected-error.txt"}, case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_configuration_is_refused_with_file_line_field_and_reason(
    case: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(case)
    code = cli.main(["check-config", "config.yaml"])
    out, err = capsys.readouterr()
    assert (code, out) == (EXIT_CONFIG, "")
    assert err == (case / "expected-error.txt").read_text(encoding="utf-8")
